// Decode attention on the tensor cores, for steps of many tokens (serving batches): the q heads
// of a kv head (GQA) are the 8 columns of one mma.sync m16n8k16, keys are its 16 rows, so each
// K/V row is read from memory once for all of its q heads and the dot products cost 2 mma a key
// instead of ~60 CUDA-core instructions in the pipelined kernel (attention_decode.cu), which keeps
// steps of fewer than 2 blocks an SM (attention.cu: it is ahead there), float32, one q head a kv
// head and head_dim 16/32/256.
//
//   grid (T, Hkv * head_chunks, Z), W warps (2 by default, LAMINA_ATTN_MMA_WARPS); a block takes
//   one token t, one kv head, up to 8 of its q heads (chunk g0) and one split of the token's cache
//   rows, with the same split plan, partials and last-block merge as the pipelined kernel
//   (attention_common.cuh). The split's keys go in groups of 16; warp w takes groups w, w + W, ... with its own online softmax and
//   the block merges the W warps' states at the end.
//   Per group (g = lane / 4, q = lane % 4; mma_layout.h):
//     S^T[16 keys, 8 heads] = K[16, D] · Q^T[D, 8]   KD = D/16 mma; A = K rows straight from
//                       memory into registers, B = Q^T loaded once
//     softmax           per head (column): max over the group's keys (lanes of equal q), running
//                       max m, sum l in the exp2 domain, fp32
//     O^T[D, 8] += V^T[D, 16 keys] · P^T[16 keys, 8]  KD mma; P^T from the S^T accumulators by
//                       one movmatrix.trans per 8 keys, V^T assembled from V rows with byte_perm
//   No shared memory in the loop: the order of the head dims inside an mma's k (and the rows of
//   O^T) is free as long as both operands use it, so each lane's part of a K or V row is
//   contiguous: K dims KW*q .. KW*q + KW - 1 (KW = D/4) of keys g, g + 8; V dims VW*g .. VW*g + VW - 1
//   (VW = D/8) of keys 2q, 2q+1, 2q+8, 2q+9. k-step kk takes K dims KW*q + 4kk + {0,1} (k 2q, 2q+1)
//   and + {2,3} (k 2q+8, 2q+9); O^T m-tile mt row g is dim VW*g + 2mt, row g + 8 is dim VW*g + 2mt + 1
//   (mma_layout.h's decode_* maps, which tests/ops/test_mma_layout.cpp checks on the host).
//   A warp's next group loads while it computes the current one (two register sets).
// An FP8 cache (e4m3) runs the mma in float16: e4m3 converts to f16x2 in one instruction, q is
// rounded to float16 (clamped to its range) and the cache scales are applied to S and O in fp32.
// The per-group math is attention_decode_group.cuh's, shared with the bulk-copy kernel.
#include <cuda_runtime.h>

#include <cstdlib>
#include <string>
#include <type_traits>

#include "ab_switch.h"
#include "attention_common.cuh"
#include "attention_decode_group.cuh"
#include "cuda_check.h"
#include "cuda_types.cuh"
#include "mma.cuh"
#include "mma_layout.h"
#include "pdl.cuh"

namespace lamina::cuda {
namespace {

namespace ml = mma_layout;

constexpr int kHeads = 8;                 // q heads a block: the mma's n
constexpr int kGroupKeys = 16;            // keys a warp takes at once: the mma's m
// Warps a block (the default of LAMINA_ATTN_MMA_WARPS): 2 measured faster than 4 on an H100 at
// 1024 tokens of 256 rows, 0.234 against 0.270 ms over an FP8 cache and 0.393 against 0.409 over
// a bf16 one (bench_kernels); a block's start-up and merge then serve twice the groups a warp.
constexpr int kDefaultMmaDecodeWarps = 2;

template <typename T, typename C, int D, int kWarps>
__global__ void __launch_bounds__(kWarps * 32)
    attn_decode_mma_kernel(T* __restrict__ out, float* __restrict__ partials, int* __restrict__ counters,
                           const T* __restrict__ qkv, const int32_t* __restrict__ positions,
                           const int32_t* __restrict__ slots, const C* __restrict__ k_cache,
                           const C* __restrict__ v_cache, const int32_t* __restrict__ block_tables, AttnParams p,
                           int head_chunks, bool heads_fastest) {
  using S = MmaDecodeShape<T, C, D>;
  constexpr int KD = S::KD, KWORDS = S::KWORDS, VWORDS = S::VWORDS;
  using Regs = GroupRegs<KWORDS, VWORDS>;
  constexpr int kThreads = kWarps * 32, kRoundKeys = kGroupKeys * kWarps;
  __shared__ float sm_o[kWarps * kHeads * D], sm_m[kWarps * kHeads], sm_l[kWarps * kHeads];
  pdl_launch_dependents();  // the next projection may launch and wait
  pdl_wait();               // q and the cache rows come from rope_kv_write

  const int num_splits = gridDim.z;
  DecodeBlock<T> b;
  if (!decode_block<T, D, kHeads>(b, out, positions, slots, p, head_chunks, kThreads, true, heads_fastest)) return;
  int split_len = max(kDecodeMinSplitLen, (b.len + num_splits - 1) / num_splits);
  split_len = (split_len + kRoundKeys - 1) / kRoundKeys * kRoundKeys;
  const int n_splits = (b.len + split_len - 1) / split_len;
  if (b.split >= n_splits) return;  // no rows for this split; it never touches the counter
  const int start = b.split * split_len;
  const int end = min(b.len, start + split_len);
  const int n_groups = (end - start + kGroupKeys - 1) / kGroupKeys;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, q = lane % 4;

  // Group i's rows: keys start + 16i + r. With tokens_per_block >= 16 a group (16-aligned) lies in
  // one KV block: its rows are consecutive pool rows from the first one's, so a lane's loads sit at
  // fixed offsets (k_off, v_off) from the group's first row, and one table lookup serves the group.
  // The lanes look up 32 of the warp's groups at once (lane j: group warp + 4 (32n + j) of batch
  // n) and a group takes its first row by a shuffle, so no lookup latency sits between a group's
  // turn and its loads.
  const size_t pos_stride = static_cast<size_t>(p.Hkv) * D;  // elements between pool rows
  const size_t head_off = static_cast<size_t>(b.kvh) * D;
  const int k_key[2] = {g, g + 8}, v_key[4] = {2 * q, 2 * q + 1, 2 * q + 8, 2 * q + 9};
  uint32_t k_off[2], v_off[4];
#pragma unroll
  for (int h = 0; h < 2; ++h) k_off[h] = static_cast<uint32_t>(k_key[h] * pos_stride + ml::decode_k_first(D, q));
#pragma unroll
  for (int h = 0; h < 4; ++h) v_off[h] = static_cast<uint32_t>(v_key[h] * pos_stride + ml::decode_v_first(D, g));
  const bool group_in_one_block = p.tokens_per_block >= kGroupKeys;
  long long lane_base = -1;
  int base_batch = -1;
  auto load_group = [&](Regs& r, int i) {  // warp-uniform i
    const int j0 = start + i * kGroupKeys;
    if (group_in_one_block) {
      const int k = (i - warp) / kWarps;  // the warp's k-th group
      if (k / 32 != base_batch) {
        base_batch = k / 32;
        const int gi = warp + kWarps * (32 * base_batch + lane);
        lane_base = gi < n_groups ? kv_cache_row(block_tables, b.slot, start + gi * kGroupKeys, p) : -1;
      }
      const long long base = __shfl_sync(0xffffffffu, lane_base, k % 32);
      // A missing block reads block 0's rows in its place (masked below).
      const size_t first = static_cast<size_t>(base < 0 ? 0 : base) * pos_stride + head_off;
#pragma unroll
      for (int h = 0; h < 2; ++h) load_words<KWORDS>(r.k[h], k_cache + first + k_off[h]);
#pragma unroll
      for (int h = 0; h < 4; ++h) load_words<VWORDS>(r.v[h], v_cache + first + v_off[h]);
      const int n_valid = base < 0 ? 0 : min(kGroupKeys, end - j0);
      r.partial = n_valid < kGroupKeys;
      if (r.partial) {
        r.ok = 0;
#pragma unroll
        for (int h = 0; h < 2; ++h) r.ok |= (k_key[h] < n_valid ? 1u : 0u) << h;
#pragma unroll
        for (int h = 0; h < 4; ++h) r.ok |= (v_key[h] < n_valid ? 1u : 0u) << (2 + h);
      }
    } else {  // blocks of fewer than 16 rows: a lookup per key
      r.partial = true;
      r.ok = 0;
      auto row_of = [&](int key) -> long long {  // pool row of key j0 + key, -1 if none
        return j0 + key < end ? kv_cache_row(block_tables, b.slot, j0 + key, p) : -1;
      };
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const long long row = row_of(k_key[h]);
        r.ok |= (row >= 0 ? 1u : 0u) << h;
        load_words<KWORDS>(r.k[h], k_cache + static_cast<size_t>(row >= 0 ? row : 0) * pos_stride + head_off +
                                       ml::decode_k_first(D, q));
      }
#pragma unroll
      for (int h = 0; h < 4; ++h) {
        const long long row = row_of(v_key[h]);
        r.ok |= (row >= 0 ? 1u : 0u) << (2 + h);
        load_words<VWORDS>(r.v[h], v_cache + static_cast<size_t>(row >= 0 ? row : 0) * pos_stride + head_off +
                                       ml::decode_v_first(D, g));
      }
    }
  };
  // The first group's loads go out before q's, so the two latencies overlap.
  Regs ra, rb;
  if (warp < n_groups) load_group(ra, warp);

  // Q^T as B fragments (zeros past ng).
  uint32_t qb[KD][2];
  load_q_fragments<T, C, D>(
      qb, g < b.ng ? qkv + static_cast<size_t>(b.t) * (p.Hq + 2 * p.Hkv) * D + static_cast<size_t>(b.h0 + g) * D : nullptr,
      q);
  const float score_scale = p.scale_log2 * (kIsFp8Kv<C> ? p.k_scale : 1.0f);

  // Online softmax of heads 2q, 2q+1 (this lane's columns): running max m (the same in every lane
  // of a column), this lane's part of the sum l, and O^T [KD m-tiles] in accumulator layout.
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
  float o[KD][4];
#pragma unroll
  for (int mt = 0; mt < KD; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[mt][e] = 0.0f;

  auto compute_group = [&](Regs& r) { mma_decode_group<T, C, D>(r, qb, score_scale, m, l, o); };

  // Groups warp, warp + W, ...: the next one loads while this one computes.
  int i = warp;
#pragma unroll 1
  for (; i < n_groups; i += 2 * kWarps) {
    if (i + kWarps < n_groups) load_group(rb, i + kWarps);
    compute_group(ra);
    if (i + kWarps >= n_groups) break;
    if (i + 2 * kWarps < n_groups) load_group(ra, i + 2 * kWarps);
    compute_group(rb);
  }

  // The warps' states into shared memory as [warp][head][D] (the lane-group layout the merge
  // helpers take, with the warps as the streams); V's scale goes on O here.
#pragma unroll
  for (int h = 0; h < 2; ++h)
#pragma unroll
    for (int x = 4; x < 32; x <<= 1) l[h] += __shfl_xor_sync(0xffffffffu, l[h], x);
  const float v_scale = kIsFp8Kv<C> ? p.v_scale : 1.0f;
#pragma unroll
  for (int mt = 0; mt < KD; ++mt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int head = 2 * q + (e & 1), dim = ml::decode_v_first(D, g) + ml::decode_v_elem(mt, e >> 1);
      sm_o[(warp * kHeads + head) * D + dim] = o[mt][e] * v_scale;
    }
  if (g == 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      sm_m[warp * kHeads + 2 * q + h] = m[h];
      sm_l[warp * kHeads + 2 * q + h] = l[h];
    }
  }
  __syncthreads();
  const size_t pi_h0 = (static_cast<size_t>(b.t) * p.Hq + b.h0) * num_splits;  // partial index of (t, h0, split 0)
  float* ml = partials + static_cast<size_t>(p.T) * p.Hq * num_splits * D;    // [T, Hq, Z, 2]
  write_block_outputs<T, D, kHeads, kWarps>(b.out_t, partials, ml, sm_o, sm_m, sm_l, b.ng, n_splits == 1, pi_h0,
                                            num_splits, b.split, kThreads);
  if (n_splits == 1) return;
  const int head_blocks = p.Hkv * head_chunks;
  merge_splits_if_last<T, D>(b.out_t, partials, ml, pi_h0, num_splits, n_splits, b.ng,
                             counters + static_cast<size_t>(b.t) * head_blocks + b.kvh * head_chunks + b.g0 / kHeads);
}

template <typename T, typename C, int D, int W>
void launch_warps(void* out, const void* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                  const AttnParams& p, int num_splits, float* partials, int* counters, cudaStream_t stream) {
  const int head_chunks = (p.G + kHeads - 1) / kHeads;
  // A token's kv heads in consecutive blocks (LAMINA_ATTN_HEADS_FASTEST=0: tokens first, as before),
  // so the blocks running at once read whole pool rows ([Hkv, D] a position) rather than one head's
  // slice of many tokens' rows.
  static const bool heads_first = ab_switch_on("LAMINA_ATTN_HEADS_FASTEST");
  const int tokens = p.T - p.decode_t0;
  const bool heads_fastest = heads_first && tokens <= 65535;  // tokens in gridDim.y
  const dim3 grid = heads_fastest ? dim3(p.Hkv * head_chunks, tokens, num_splits)
                                  : dim3(tokens, p.Hkv * head_chunks, num_splits);
  launch_pdl(attn_decode_mma_kernel<T, C, D, W>, grid, dim3(W * 32), 0, stream, static_cast<T*>(out), partials,
             counters, static_cast<const T*>(qkv), positions, slots, static_cast<const C*>(cache.k),
             static_cast<const C*>(cache.v), cache.block_tables, p, head_chunks, heads_fastest);
  CUDA_CHECK_LAUNCH();
}

// Warps a block: each warp takes every W-th 16-key group of the block's rows, so fewer warps give
// each a longer run of groups (its loads in flight for longer) against the same start-up (step
// inputs, block table, q) and end (the warps' merge) a block. LAMINA_ATTN_MMA_WARPS=2 or 4 (A/B);
// 1 warp measured the same as 2 at 1024 tokens and, at 256, 3 % faster over bf16, 4 % slower over FP8.
int mma_decode_warps() {
  static const int warps = env_choice("LAMINA_ATTN_MMA_WARPS", {2, 4}, kDefaultMmaDecodeWarps);
  return warps;
}

template <typename T, typename C, int D>
void launch_cache(void* out, const void* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                  const AttnParams& p, int num_splits, float* partials, int* counters, cudaStream_t stream) {
  switch (mma_decode_warps()) {
    case 2: return launch_warps<T, C, D, 2>(out, qkv, positions, slots, cache, p, num_splits, partials, counters, stream);
    default: return launch_warps<T, C, D, 4>(out, qkv, positions, slots, cache, p, num_splits, partials, counters, stream);
  }
}

template <typename T, int D>
void launch_d(void* out, const void* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
              const AttnParams& p, int num_splits, float* partials, int* counters, cudaStream_t stream) {
  dispatch_kv_element<T>(p.kv_fp8, [&](auto tag) {
    launch_cache<T, typename decltype(tag)::type, D>(out, qkv, positions, slots, cache, p, num_splits, partials,
                                                     counters, stream);
  });
}

template <typename T>
void launch_t(void* out, const void* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
              const AttnParams& p, int num_splits, float* partials, int* counters, cudaStream_t stream) {
  if (p.head_dim == 64) return launch_d<T, 64>(out, qkv, positions, slots, cache, p, num_splits, partials, counters, stream);
  launch_d<T, 128>(out, qkv, positions, slots, cache, p, num_splits, partials, counters, stream);
}

}  // namespace

bool attention_decode_mma_supports(DType dt, const AttnParams& p) {
  return (dt == DType::F16 || dt == DType::BF16) && (p.head_dim == 64 || p.head_dim == 128) && p.G >= 2;
}

void launch_attention_decode_mma(DType dt, void* out, const void* qkv, const int32_t* positions,
                                 const int32_t* slots, KVCacheLayer cache, const AttnParams& p, int num_splits,
                                 float* partials, int* counters, cudaStream_t stream) {
  LAMINA_CHECK(attention_decode_mma_supports(dt, p), "the mma.sync decode attention takes float16/bfloat16, "
               "head_dim 64 or 128 and at least 2 q heads a kv head, not ", dtype_user_name(dt), ", head_dim ",
               p.head_dim, ", ", p.G, " q heads a kv head");
  if (dt == DType::F16) return launch_t<__half>(out, qkv, positions, slots, cache, p, num_splits, partials, counters, stream);
  launch_t<__nv_bfloat16>(out, qkv, positions, slots, cache, p, num_splits, partials, counters, stream);
}

}  // namespace lamina::cuda
