// How one next token is chosen from a row of logits, on whichever device holds them. Only the
// chosen ids then cross to the host: a batch of 256 rows of 128k logits is 64 MB a step.
//
// Definition (the CPU reference choose_token() and the CUDA kernels of
// src/backends/cuda/sampling.cu implement the same):
//   s_v = logits[v] / temperature (NaN counts as -inf)
//   top-k (0 < top_k < V): keep v with s_v >= the top_k-th largest s (ties at the cut are kept)
//   p_v = exp(s_v - max s) over the kept tokens
//   top-p (top_p < 1): keep the smallest set of most probable kept tokens whose mass reaches
//     top_p * (kept mass), plus any token tied with the least probable of them
//   draw: the first v, in vocabulary order, where the running sum of kept p_v exceeds
//     uniform * (kept mass)
//   temperature <= 0: greedy, the argmax (the lowest index wins ties; NaN never wins).
// The random number comes from the caller (the request's seeded generator), so the choice itself
// is deterministic.
#pragma once
#include <cstdint>

namespace lamina {

struct TokenChoice {
  float temperature = 1.0f;  // <= 0: greedy
  int top_k = 0;             // <= 0 or >= V: off
  float top_p = 1.0f;        // >= 1: off
  float uniform = 0.0f;      // this row's random number in [0, 1)
};

// The CPU reference of the definition above over logits[V] (src/backends/cpu/token_choice.cpp).
int32_t choose_token(const float* logits, int V, const TokenChoice& c);

// Greedy over a vocabulary split into tp consecutive slices of vocab_per_rank tokens (the
// tensor-parallel lm_head): each rank reports its slice's argmax, and only these cross.
struct SliceArgmax {
  float value = 0;    // the slice's largest logit (NaN only when every logit of the slice is NaN)
  int32_t index = 0;  // its index inside the slice, the lowest on ties
};
// The global greedy token of one row from the tp slices' argmaxes (slices[r] is rank r's), equal
// to choose_token's greedy over the whole row: the largest value wins, ties go to the lowest
// global index (r * vocab_per_rank + index), NaN never wins, and 0 when every logit is NaN.
int32_t combine_slice_argmax(const SliceArgmax* slices, int tp, int64_t vocab_per_rank);

}  // namespace lamina
