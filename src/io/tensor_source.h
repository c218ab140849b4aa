// All tensors of a checkpoint directory, whether in one model.safetensors, in shards listed by
// model.safetensors.index.json, or in rank{r}.safetensors (Lamina/TensorRT-LLM checkpoints).
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace lamina {

class TensorSource {
 public:
  // HF layout: index json if present, else model.safetensors, else every *.safetensors file.
  static TensorSource open_hf_dir(const std::string& dir);
  // One file.
  static TensorSource open_file(const std::string& path);

  bool has(const std::string& name) const { return where_.count(name) != 0; }
  const TensorView& get(const std::string& name) const;
  std::vector<std::string> names() const;

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const SafetensorsFile*> where_;
  std::string description_;
};

}  // namespace lamina
