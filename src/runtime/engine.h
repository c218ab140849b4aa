// A loaded engine: its config, limits, tokenizer files and one LlamaForward per rank.
// Engine::step runs every rank (a thread each when tp_size > 1) and returns full-vocab logits.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/json.h"
#include "io/engine_file.h"
#include "model/llama_forward.h"
#include "model/model_config.h"
#include "ops/backend.h"

namespace lamina {

enum class Device { Auto, CPU, CUDA };
Device parse_device(const std::string& s);  // "cuda", "cpu", "auto"
bool cuda_available();

struct EngineLimits {
  int max_batch_size = 1, max_input_len = 0, max_seq_len = 0, max_num_tokens = 0;
};

struct EngineOptions {
  Device device = Device::Auto;
  bool verify_checksums = true;
  int num_slots = 1;  // sequences resident at once (≤ max_batch_size)
};

class Engine {
 public:
  static std::unique_ptr<Engine> load(const std::string& engine_dir, const EngineOptions& opts = {});
  ~Engine();

  const ModelConfig& config() const { return cfg_; }
  const EngineLimits& limits() const { return lim_; }
  const std::string& dir() const { return dir_; }
  std::string device_name() const;
  int num_slots() const { return num_slots_; }

  // One forward step over T tokens; returns float32 logits [logit_rows.size(), vocab_size].
  std::vector<float> step(const std::vector<int32_t>& ids, const std::vector<int32_t>& positions,
                          const std::vector<int32_t>& slots, const std::vector<int32_t>& logit_rows);

 private:
  Engine() = default;
  struct Rank;
  std::string dir_;
  ModelConfig cfg_;
  EngineLimits lim_;
  int num_slots_ = 1;
  std::vector<std::unique_ptr<Rank>> ranks_;
  std::shared_ptr<void> comm_group_;
};

}  // namespace lamina
