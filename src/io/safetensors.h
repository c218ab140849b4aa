// safetensors files: a u64 little-endian header length, a JSON header naming each tensor's
// dtype, shape and [begin, end) byte range relative to the data section, then the data.
// Reading maps the file and hands out zero-copy views; writing streams tensors in a declared order.
#pragma once
#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/mapped_file.h"

namespace lamina {

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into a mapped file
  size_t bytes = 0;

  int64_t numel() const;
  std::string shape_str() const;  // "[4096, 128]"
};

class SafetensorsFile {
 public:
  // Maps and validates the whole header: sizes, offsets inside the file, no overlaps.
  explicit SafetensorsFile(const std::string& path);
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorView& get(const std::string& name) const;  // error naming the file if absent
  std::vector<std::string> names() const;                // in data-offset order
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& path() const { return file_.path(); }

 private:
  MappedFile file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

struct TensorDecl {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  size_t bytes() const;
};

// Writes a safetensors file whose tensors are declared up front (so the header is written first)
// and then streamed one by one in declaration order: peak memory is one tensor.
class SafetensorsWriter {
 public:
  SafetensorsWriter(const std::string& path, std::vector<TensorDecl> decls,
                    const std::map<std::string, std::string>& metadata = {});
  void write(const std::string& name, const void* data, size_t bytes);  // next declared tensor
  void close();  // checks that every declared tensor was written
  ~SafetensorsWriter();

 private:
  std::string path_;
  std::ofstream out_;
  std::vector<TensorDecl> decls_;
  size_t next_ = 0;
};

}  // namespace lamina
