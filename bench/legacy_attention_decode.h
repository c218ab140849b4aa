// bench_kernels only: the decode attention path before the fused split merge, for A/B timings
// (see legacy_attention_decode.cu). Same arguments as cuda::launch_attention.
#pragma once
#include <cuda_runtime.h>

#include "backends/cuda/kernels.h"
#include "ops/backend.h"

namespace lamina::bench {

void legacy_attention(DType dt, void* out, const void* qkv, const int32_t* positions, const int32_t* slots,
                      KVCacheLayer cache, const AttentionShape& s, int T, const cuda::AttentionLaunch& how,
                      cudaStream_t stream);

}  // namespace lamina::bench
