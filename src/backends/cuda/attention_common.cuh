// What the attention kernels (attention_decode.cu, attention_prefill*.cu) and their dispatcher
// (attention.cu) share: launch parameters, and the per-token rules both kernels must apply the
// same way: which tokens the tiled prefill kernel takes, and how many cache rows a token reads.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/dtype.h"
#include "ops/backend.h"

namespace lamina::cuda {

// The prefill kernel works on tiles of this many consecutive tokens.
inline constexpr int kPrefillTileTokens = 64;
// Split-K splits of one token's sequence at most (the reduce keeps one weight per split in shared).
inline constexpr int kMaxSplits = 256;

struct AttnParams {
  int T = 0;          // tokens this step
  int Hq = 0, Hkv = 0, G = 1;  // q heads, kv heads, q heads per kv head
  int head_dim = 0;
  int max_seq = 0, num_slots = 0;
  float scale_log2 = 0;  // log2(e) / sqrt(head_dim): scores live in the exp2 domain
  // When true, tokens of "uniform" tiles (all tokens of the tile in one slot) belong to the
  // prefill kernel and the decode kernel (and its reduce) skip them.
  bool prefill_takes_uniform_tiles = false;
};

// Cache rows token t attends to: positions[t] + 1, clamped to the cache; 0 when the token's
// position or slot is invalid (its output is then written as zeros).
__device__ __forceinline__ int token_kv_len(int pos, int slot, const AttnParams& p) {
  if (pos < 0 || slot < 0 || slot >= p.num_slots) return 0;
  return pos + 1 < p.max_seq ? pos + 1 : p.max_seq;
}

// The cache row (Hkv * head_dim elements) that holds position `pos` of the sequence in `slot`:
// the caches are [num_slots, max_seq, Hkv, head_dim]. The prefill kernels address K/V rows only
// through this function, so a different cache layout (paged blocks) changes this one place.
__device__ __forceinline__ long long kv_cache_row(int slot, int pos, const AttnParams& p) {
  return static_cast<long long>(slot) * p.max_seq + pos;
}

// Whether the tile holding token t has all its tokens in one slot. Every thread of the block
// must call it (it synchronizes the block); blockDim.x >= kPrefillTileTokens.
__device__ __forceinline__ bool tile_is_uniform(const int32_t* slots, int t, int T) {
  const int base = t / kPrefillTileTokens * kPrefillTileTokens;
  const int n = T - base < kPrefillTileTokens ? T - base : kPrefillTileTokens;
  const int i = threadIdx.x;
  const bool same = i >= n || slots[base + i] == slots[base];
  return __syncthreads_and(same) != 0;
}

// Lets `kernel` use `smem_bytes` (> 48 KB) of dynamic shared memory on the current device. The
// opt-in is made once per (kernel, device), so later calls, e.g. under graph capture, only launch.
void allow_dynamic_smem(const void* kernel, size_t smem_bytes);

void launch_attention_decode(DType dt, void* out, const void* qkv, const int32_t* positions, const int32_t* slots,
                             KVCacheLayer cache, const AttnParams& p, int split_len, int num_splits, float* partials,
                             cudaStream_t stream);
void launch_attention_prefill(DType dt, void* out, const void* qkv, const int32_t* positions, const int32_t* slots,
                              KVCacheLayer cache, const AttnParams& p, cudaStream_t stream);
// Tensor-core kernel for float16 / bfloat16 (attention_prefill_mma.cu: mma.sync, cp.async
// pipeline); launch_attention_prefill forwards to it for those dtypes.
void launch_attention_prefill_mma(DType dt, void* out, const void* qkv, const int32_t* positions,
                                  const int32_t* slots, KVCacheLayer cache, const AttnParams& p, cudaStream_t stream);
// The previous WMMA kernel (attention_prefill_tc.cu), same contract. No op uses it: it is kept
// only as the baseline bench/bench_kernels measures the mma.sync kernel against.
void launch_attention_prefill_tc(DType dt, void* out, const void* qkv, const int32_t* positions, const int32_t* slots,
                                 KVCacheLayer cache, const AttnParams& p, cudaStream_t stream);
bool attention_prefill_supports(int head_dim);
bool attention_decode_supports(int head_dim);

}  // namespace lamina::cuda
