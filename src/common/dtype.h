// Element types of tensors on disk and in memory, and scalar conversions between them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace lamina {

enum class DType { F32, F16, BF16, F8_E4M3, I8, U8, I32, I64 };

size_t dtype_size(DType t);
// safetensors spelling: "F32", "F16", "BF16", "F8_E4M3", "I8", "U8", "I32", "I64".
std::string dtype_safetensors_name(DType t);
DType dtype_from_safetensors_name(const std::string& name);  // throws lamina::Error on unknown
// User-facing spelling (TensorRT-LLM flags): "float32", "float16", "bfloat16".
std::string dtype_user_name(DType t);
DType dtype_from_user_name(const std::string& name);  // accepts float32/fp32/float16/fp16/half/bfloat16/bf16
bool dtype_is_float(DType t);

inline float bf16_to_float(uint16_t b) {
  uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint16_t float_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return static_cast<uint16_t>(u >> 16);
}

float f16_to_float(uint16_t h);
uint16_t float_to_f16(float f);
float f8e4m3_to_float(uint8_t v);

// Converts n elements of `src` (type `from`) to float32 into dst.
void convert_to_f32(const void* src, DType from, float* dst, size_t n);
// Converts n float32 values into `to` (a float type).
void convert_from_f32(const float* src, void* dst, DType to, size_t n);
// Converts between any two float types (through f32 unless they are equal).
void convert_dtype(const void* src, DType from, void* dst, DType to, size_t n);

}  // namespace lamina
