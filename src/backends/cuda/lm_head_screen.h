// The screened greedy lm_head (Backend::screened_argmax): the argmax of x · lm_head^T, exactly as
// the GEMV's logits give it, from an int8 copy of lm_head plus the few rows that could win.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "common/dtype.h"
#include "ops/token_choice.h"

namespace lamina::cuda {

// Rows of x a screened argmax takes (the one-token GEMV's limit).
inline constexpr int kScreenMaxRows = 8;

// Whether a [V, H] lm_head of activation type dt can have a screen: 16-bit activations (the bounds
// assume the GEMV's bf16/f16 rounding), H a multiple of 8 (the GEMV's 16-byte chunks) up to 16384
// (x staged in shared memory), V up to 262144.
bool lm_head_screen_fits(DType dt, int V, int H);
// Device bytes of the screen of a [V, H] lm_head.
size_t lm_head_screen_bytes(int V, int H);
// Fills screen (lm_head_screen_bytes of them) from lm_head [V, H] (activation type dt).
void launch_make_lm_head_screen(DType dt, void* screen, const void* lm_head, int V, int H, cudaStream_t stream);
// out[r] (and ids[r] = out[r].index where ids is not null) for x [R, H], R <= kScreenMaxRows:
// the greedy argmax (lowest index on ties, NaN never; index 0 and a NaN value when every logit is
// NaN) of the logits that the one-token GEMV over lm_head writes. scratch: [R, V] activations.
void launch_screened_argmax(DType dt, SliceArgmax* out, int32_t* ids, const void* x, const void* lm_head,
                            const void* screen, void* scratch, int R, int V, int H, cudaStream_t stream);

}  // namespace lamina::cuda
