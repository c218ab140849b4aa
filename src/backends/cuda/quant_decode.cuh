// Device decoders of the quantized weight formats (common/quant.h), shared by the GEMV and the
// dequantize kernels. word() turns one 32-bit word of weight data into kPerWord floats (without the
// scale) using integer/bit tricks rather than slow conversion instructions where it can:
//   int8: byte b ^ 0x80 placed in the low mantissa of 2^23 gives 2^23 + q + 128 exactly
//   int4: nibble u placed likewise gives 2^23 + u, q = u - 8
//   fp8:  cvt e4m3x2 → f16x2 (one instruction on sm_89+, emulated before), then f16 → f32
// scalar() decodes element `idx` of the row-major [N, K] matrix (idx = n*K + k).
#pragma once
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "common/quant.h"

namespace lamina::cuda {

template <WeightFormat F>
struct Decode;

template <>
struct Decode<WeightFormat::Int8PerChannel> {
  static constexpr int kPerWord = 4;
  __device__ __forceinline__ static void word(uint32_t w, float (&out)[4]) {
    const uint32_t b = w ^ 0x80808080u;
#pragma unroll
    for (int i = 0; i < 4; ++i) out[i] = __uint_as_float(__byte_perm(b, 0x4B000000u, 0x7650u + i)) - 8388736.0f;
  }
  __device__ __forceinline__ static float scalar(const uint8_t* base, size_t idx) {
    return static_cast<float>(static_cast<int8_t>(base[idx]));
  }
};

template <>
struct Decode<WeightFormat::Fp8PerTensor> {
  static constexpr int kPerWord = 4;
  __device__ __forceinline__ static void word(uint32_t w, float (&out)[4]) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const __half2_raw r =
          __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>((w >> (16 * h)) & 0xffffu), __NV_E4M3);
      const float2 f = __half22float2(__half2(r));
      out[2 * h] = f.x;
      out[2 * h + 1] = f.y;
    }
  }
  __device__ __forceinline__ static float scalar(const uint8_t* base, size_t idx) {
    const __half_raw r = __nv_cvt_fp8_to_halfraw(static_cast<__nv_fp8_storage_t>(base[idx]), __NV_E4M3);
    return __half2float(__half(r));
  }
};

template <>
struct Decode<WeightFormat::Int4Group> {
  static constexpr int kPerWord = 8;
  __device__ __forceinline__ static void word(uint32_t w, float (&out)[8]) {
#pragma unroll
    for (int i = 0; i < 8; ++i) out[i] = __uint_as_float(0x4B000000u | ((w >> (4 * i)) & 0xfu)) - 8388616.0f;
  }
  __device__ __forceinline__ static float scalar(const uint8_t* base, size_t idx) {
    const uint8_t b = base[idx / 2];
    return static_cast<float>(static_cast<int>((idx & 1) ? (b >> 4) : (b & 0xfu)) - 8);
  }
};

}  // namespace lamina::cuda
