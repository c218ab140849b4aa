// The sum that every tensor-parallel all-reduce kernel makes of one 16-byte unit: the ranks'
// values in rank order 0..W-1, in float32, from +0.0. Every rank adds the same values in the same
// order, so the ranks agree bit for bit, and so do the plain all-reduce (peer_all_reduce.cu) and
// the one fused with the norm (peer_all_reduce_norm.cu).
#pragma once
#include <cuda_runtime.h>

#include "cuda_types.cuh"

namespace lamina::cuda {

// acc[i] = Σ_q element i of raw[q], q = 0..W-1 in order.
template <typename T, int W>
__device__ __forceinline__ void sum_in_rank_order(const uint4 (&raw)[W], float (&acc)[kVec<T>]) {
#pragma unroll
  for (int i = 0; i < kVec<T>; ++i) acc[i] = 0.0f;
#pragma unroll
  for (int q = 0; q < W; ++q) {
    const T* e = reinterpret_cast<const T*>(&raw[q]);
#pragma unroll
    for (int i = 0; i < kVec<T>; ++i) acc[i] += to_float(e[i]);
  }
}

}  // namespace lamina::cuda
