// GPU token selection over fp32 logits [B, V] (row b = one sequence's next-token logits), so only
// B int32 ids cross to the host each step. Penalties (repetition, presence, frequency) are applied
// to the logits before these run; the random draw comes from the caller (one uniform number per
// row, from the request's seeded generator), which keeps these kernels deterministic.
//
// Definition (the CPU reference in tests/ops/test_sampling.cpp implements the same):
//   s_v = logits[b, v] / temperature (NaN counts as -inf)
//   top-k (0 < top_k < V): keep v with s_v >= the top_k-th largest s (ties at the cut are kept)
//   p_v = exp(s_v - max s) over the kept tokens
//   top-p (top_p < 1): keep the smallest set of most probable kept tokens whose mass reaches
//     top_p * (kept mass), plus any token tied with the least probable of them
//   draw: the first v, in vocabulary order, where the running sum of kept p_v exceeds
//     uniform * (kept mass)
//   temperature <= 0: greedy, the argmax.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace lamina::cuda {

struct SampleParams {
  float temperature = 1.0f;  // <= 0: greedy
  int top_k = 0;             // <= 0 or >= V: off
  float top_p = 1.0f;        // >= 1: off
  float uniform = 0.0f;      // this row's random number in [0, 1)
};

// out_ids[b] = argmax_v logits[b, v]; the lowest index wins ties; NaN never wins.
void launch_argmax(const float* logits, int B, int V, int32_t* out_ids, cudaStream_t stream);

// out_ids[b] = token drawn as defined above; params: device array [B].
void launch_sample(const float* logits, int B, int V, const SampleParams* params, int32_t* out_ids,
                   cudaStream_t stream);

}  // namespace lamina::cuda
