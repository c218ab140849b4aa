// Warp and block reductions in fp32.
#pragma once
#include <cuda_runtime.h>

namespace lamina::cuda {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
// `scratch` is __shared__ float[32]. Contains __syncthreads: call from all threads.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous call
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

// The GEMVs' epilogue: each thread holds partial dot products acc[M][R]; sums each of the M*R
// over the whole block (kWarps warps). Thread i < M*R gets the sum of (i / R, i % R) in `sum` and
// true; the others get false. Contains __syncthreads: call from all threads.
template <int kWarps, int M, int R>
__device__ __forceinline__ bool block_sum_each(const float (&acc)[M][R], float& sum) {
  __shared__ float partial[kWarps][M * R];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float s = warp_sum(acc[m][r]);
      if (lane == 0) partial[warp][m * R + r] = s;
    }
  __syncthreads();
  if (threadIdx.x >= M * R) return false;
  sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kWarps; ++i) sum += partial[i][threadIdx.x];
  return true;
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : -INFINITY;
  return warp_max(v);
}

}  // namespace lamina::cuda
