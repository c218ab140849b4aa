// GPU token selection over logits [B, V] (row b = one sequence's next-token logits), so only B
// int32 ids cross to the host each step. The definition is lamina::TokenChoice's
// (src/ops/token_choice.h); penalties (repetition, presence, frequency) need the token history and
// are applied on the host, so rows with penalties do not come here.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/dtype.h"
#include "ops/token_choice.h"

namespace lamina::cuda {

using SampleParams = lamina::TokenChoice;

// out_ids[b] = argmax_v logits[b, v]; the lowest index wins ties; NaN never wins.
void launch_argmax(const float* logits, int B, int V, int32_t* out_ids, cudaStream_t stream);

// out[b] = {logits[b * row_stride + i], i} for i the argmax of the row's first V logits (as
// launch_argmax; logits in `dt`): Backend::slice_argmax_rows.
void launch_slice_argmax(DType dt, const void* logits, int B, int V, int64_t row_stride, lamina::SliceArgmax* out,
                         cudaStream_t stream);

// Backend::spread_slice_argmax and join_slice_argmax (gathered: [B, tp, 2] float32).
void launch_spread_slice_argmax(float* gathered, const lamina::SliceArgmax* mine, int B, int rank, int tp,
                                cudaStream_t stream);
void launch_join_slice_argmax(int32_t* ids, const float* gathered, int B, int tp, int64_t vocab_per_rank,
                              cudaStream_t stream);
// Loads those two kernels now (a rank must not load a kernel while a peer waits on it).
void preload_slice_argmax_join();

// out_ids[b] = the token TokenChoice params[b] picks; params: device array [B].
void launch_sample(const float* logits, int B, int V, const SampleParams* params, int32_t* out_ids,
                   cudaStream_t stream);
// The same over logits in `dt` (float32, float16 or bfloat16), read without a float32 copy.
void launch_sample(DType dt, const void* logits, int B, int V, const SampleParams* params, int32_t* out_ids,
                   cudaStream_t stream);
// The same with each greedy row's argmax split over `split` blocks (a kernel before the sampling
// one; partials: device workspace of B * split entries): for a few rows, where one block a row
// leaves the GPU nearly idle. split 0 (or no workspace): launch_sample.
void launch_sample_split(DType dt, const void* logits, int B, int V, const SampleParams* params, int32_t* out_ids,
                         lamina::SliceArgmax* partials, int split, cudaStream_t stream);

}  // namespace lamina::cuda
