// combine_slice_argmax's rule (ops/token_choice.h) on the device, one slice at a time in rank
// order: the largest value wins, NaN never, and of equal values the first taken stays, which in
// rank order is the lowest global index; 0 when no slice has a candidate. Shared by the join
// after the gathering all-reduce (sampling.cu) and the fused gather (peer_all_reduce_norm.cu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace lamina::cuda {

struct SliceArgmaxJoin {
  int64_t best = -1;
  float best_value = -INFINITY;
  // Rank k's pair: its value and its index inside the slice, which starts at k * vocab_per_rank.
  __device__ __forceinline__ void take(float value, int64_t global_index) {
    if (isnan(value)) return;
    if (best < 0 || value > best_value) best = global_index, best_value = value;
  }
  __device__ __forceinline__ int32_t id() const { return best < 0 ? 0 : int32_t(best); }
};

}  // namespace lamina::cuda
