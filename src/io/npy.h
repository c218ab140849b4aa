// NumPy .npy files (format 1.0, little-endian, C order), as TensorRT-LLM's run.py reads and writes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lamina {

struct NpyArray {
  std::string descr;             // "<f4", "<i4", "<i8"
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;     // raw little-endian elements
  int64_t numel() const;
  std::vector<float> as_f32() const;    // from <f4 (or <f8)
  std::vector<int64_t> as_i64() const;  // from <i4 / <i8
};

NpyArray read_npy(const std::string& path);
void write_npy_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data);
void write_npy_i32(const std::string& path, const std::vector<int64_t>& shape, const int32_t* data);

}  // namespace lamina
