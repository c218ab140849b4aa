#include "common/dtype.h"

#include <cmath>
#include <vector>

#include "common/error.h"
#include "common/parallel.h"

namespace lamina {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F16: return 2;
    case DType::BF16: return 2;
    case DType::F8_E4M3: return 1;
    case DType::I8: return 1;
    case DType::U8: return 1;
    case DType::I32: return 4;
    case DType::I64: return 8;
  }
  return 0;
}

std::string dtype_safetensors_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::F8_E4M3: return "F8_E4M3";
    case DType::I8: return "I8";
    case DType::U8: return "U8";
    case DType::I32: return "I32";
    case DType::I64: return "I64";
  }
  return "?";
}

DType dtype_from_safetensors_name(const std::string& n) {
  if (n == "F32") return DType::F32;
  if (n == "F16") return DType::F16;
  if (n == "BF16") return DType::BF16;
  if (n == "F8_E4M3") return DType::F8_E4M3;
  if (n == "I8") return DType::I8;
  if (n == "U8") return DType::U8;
  if (n == "I32") return DType::I32;
  if (n == "I64") return DType::I64;
  fail("unsupported tensor dtype '", n, "' (supported: F32, F16, BF16, F8_E4M3, I8, U8, I32, I64)");
}

std::string dtype_user_name(DType t) {
  switch (t) {
    case DType::F32: return "float32";
    case DType::F16: return "float16";
    case DType::BF16: return "bfloat16";
    default: return dtype_safetensors_name(t);
  }
}

DType dtype_from_user_name(const std::string& n) {
  if (n == "float32" || n == "fp32" || n == "float") return DType::F32;
  if (n == "float16" || n == "fp16" || n == "half") return DType::F16;
  if (n == "bfloat16" || n == "bf16") return DType::BF16;
  fail("unknown dtype '", n, "': use float32, float16 or bfloat16");
}

bool dtype_is_float(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::F8_E4M3;
}

float f16_to_float(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1u, exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
  float v;
  if (exp == 0) v = std::ldexp(static_cast<float>(mant), -24);
  else if (exp == 31) v = mant ? NAN : INFINITY;
  else v = std::ldexp(static_cast<float>(mant | 0x400u), static_cast<int>(exp) - 25);
  return sign ? -v : v;
}

uint16_t float_to_f16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u);           // NaN
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);          // overflow → inf
  if (abs < 0x38800000u) {                                                        // subnormal or zero
    float a;
    std::memcpy(&a, &abs, 4);
    const float scaled = a * 16777216.0f;  // 2^24: units of the smallest subnormal
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(scaled)));
  }
  uint32_t r = abs - 0x38000000u;  // rebias exponent 127 → 15
  r += 0xfffu + ((r >> 13) & 1u);  // round to nearest even on the 13 dropped bits
  return static_cast<uint16_t>(sign | (r >> 13));
}

float f8e4m3_to_float(uint8_t v) {
  const uint32_t sign = v >> 7, exp = (v >> 3) & 0xfu, mant = v & 0x7u;
  float r;
  if (exp == 0xf && mant == 0x7) r = NAN;
  else if (exp == 0) r = std::ldexp(static_cast<float>(mant), -9);
  else r = std::ldexp(static_cast<float>(mant | 0x8u), static_cast<int>(exp) - 10);
  return sign ? -r : r;
}

// Element-wise conversions split over threads for large arrays (checkpoint conversion moves
// billions of weights; below kParallelMinItems a call stays on the calling thread).
constexpr size_t kParallelMinItems = size_t(1) << 20;

void convert_to_f32(const void* src, DType from, float* dst, size_t n) {
  switch (from) {
    case DType::F32: std::memcpy(dst, src, n * 4); return;
    case DType::F16:
    case DType::BF16:
    case DType::F8_E4M3: break;
    default: fail("cannot convert ", dtype_safetensors_name(from), " tensor to float32");
  }
  parallel_for(n, kParallelMinItems, [&](size_t i0, size_t i1) {
    if (from == DType::F16) {
      auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = i0; i < i1; ++i) dst[i] = f16_to_float(s[i]);
    } else if (from == DType::BF16) {
      auto* s = static_cast<const uint16_t*>(src);
      for (size_t i = i0; i < i1; ++i) dst[i] = bf16_to_float(s[i]);
    } else {
      auto* s = static_cast<const uint8_t*>(src);
      for (size_t i = i0; i < i1; ++i) dst[i] = f8e4m3_to_float(s[i]);
    }
  });
}

void convert_from_f32(const float* src, void* dst, DType to, size_t n) {
  switch (to) {
    case DType::F32: std::memcpy(dst, src, n * 4); return;
    case DType::F16:
    case DType::BF16: break;
    default: fail("cannot convert float32 to ", dtype_safetensors_name(to));
  }
  parallel_for(n, kParallelMinItems, [&](size_t i0, size_t i1) {
    auto* d = static_cast<uint16_t*>(dst);
    if (to == DType::F16) {
      for (size_t i = i0; i < i1; ++i) d[i] = float_to_f16(src[i]);
    } else {
      for (size_t i = i0; i < i1; ++i) d[i] = float_to_bf16(src[i]);
    }
  });
}

void convert_dtype(const void* src, DType from, void* dst, DType to, size_t n) {
  if (from == to) {
    std::memcpy(dst, src, n * dtype_size(from));
    return;
  }
  if (to == DType::F32) return convert_to_f32(src, from, static_cast<float*>(dst), n);
  if (from == DType::F32) return convert_from_f32(static_cast<const float*>(src), dst, to, n);
  std::vector<float> tmp(n);
  convert_to_f32(src, from, tmp.data(), n);
  convert_from_f32(tmp.data(), dst, to, n);
}

}  // namespace lamina
