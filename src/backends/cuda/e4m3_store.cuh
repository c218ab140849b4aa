// Eight values times `scale` as e4m3 in one 8-byte store (dst 8-byte aligned); the conversion
// saturates to +-448. Shared by the FP8 activation quantizer (matmul_fp8.cu) and the norm that
// quantizes its own output (rms_norm.cu), which must write the same bits.
#pragma once
#include <cuda_fp8.h>

#include <cstdint>

namespace lamina::cuda {

__device__ __forceinline__ void store_e4m3x8(__nv_fp8_e4m3* dst, const float (&v)[8], float scale) {
  alignas(8) __nv_fp8_e4m3 q[8];
#pragma unroll
  for (int i = 0; i < 8; ++i) q[i] = __nv_fp8_e4m3(v[i] * scale);
  *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(q);
}

}  // namespace lamina::cuda
