// What the attention kernels (attention_decode.cu, attention_prefill*.cu), their dispatcher
// (attention.cu) and the cache write (rope_kv_write.cu) share: launch parameters, the paged-KV
// lookup (kv_cache_row: the only place a kernel turns (sequence, position) into a cache address),
// and the per-token rules every kernel must apply the same way: which tokens the tiled prefill
// kernel takes, and how many positions a token reads.
#pragma once
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "common/dtype.h"
#include "cuda_check.h"
#include "cuda_types.cuh"
#include "ops/backend.h"
#include "quant_decode.cuh"

namespace lamina::cuda {

// The prefill kernel works on tiles of this many consecutive tokens.
inline constexpr int kPrefillTileTokens = 64;
static_assert(kPrefillTileTokens == kAttentionTileTokens, "AttentionShape's prompt tiles are the prefill kernel's");
// Split-K splits of one token's sequence at most.
inline constexpr int kMaxSplits = 256;
// The decode kernel's splits hold at least this many cache rows (it rounds up to its key tile).
inline constexpr int kDecodeMinSplitLen = 64;

struct AttnParams {
  int T = 0;          // tokens this step
  int Hq = 0, Hkv = 0, G = 1;  // q heads, kv heads, q heads per kv head
  int head_dim = 0;
  // Paged KV: pools [num_blocks, tokens_per_block, Hkv, head_dim]; block tables
  // [num_seq_rows, max_blocks_per_seq]; max_seq = max_blocks_per_seq * tokens_per_block.
  int tokens_per_block = 0, max_blocks_per_seq = 0, num_blocks = 0, num_seq_rows = 0;
  int block_shift = 0;  // log2(tokens_per_block): a power of two, so the lookup shifts and masks
  int max_seq = 0;
  float scale_log2 = 0;  // log2(e) / sqrt(head_dim): scores live in the exp2 domain
  // When true, tokens of "uniform" tiles (all tokens of the tile in one slot) belong to the
  // prefill kernel and the decode kernel (and its reduce) skip them.
  bool prefill_takes_uniform_tiles = false;
  // Where the prefill kernel takes them, the tiles it looks at (0 .. prefill_tiles - 1: every
  // uniform tile lies below) and the first token the decode kernel looks at (every token before
  // decode_t0 lies in a uniform tile): AttentionShape's prompt tiles, where the caller knew them.
  int prefill_tiles = 0;
  int decode_t0 = 0;
  // FP8 KV cache (KVCacheLayer::fp8_e4m3): pools of e4m3, value = e4m3 * scale.
  bool kv_fp8 = false;
  float k_scale = 1.0f, v_scale = 1.0f;
  // AttentionShape::inputs_ready_before_step: the latency decode kernel reads the step's inputs
  // and earlier steps' cache rows before pdl_wait().
  bool read_before_wait = false;
};

inline AttnParams make_attn_params(const AttentionShape& s, int T) {
  AttnParams p;
  p.T = T;
  p.Hq = s.num_q_heads;
  p.Hkv = s.num_kv_heads;
  p.G = s.num_kv_heads > 0 ? s.num_q_heads / s.num_kv_heads : 1;
  p.head_dim = s.head_dim;
  p.tokens_per_block = s.tokens_per_block;
  while ((1 << p.block_shift) < s.tokens_per_block) ++p.block_shift;
  p.max_blocks_per_seq = s.max_blocks_per_seq;
  p.num_blocks = s.num_blocks;
  p.num_seq_rows = s.num_seq_rows;
  p.max_seq = s.max_seq_len();
  p.read_before_wait = s.inputs_ready_before_step;
  return p;
}

// The same with the layer's cache element type and scales.
inline AttnParams make_attn_params(const AttentionShape& s, int T, const KVCacheLayer& cache) {
  AttnParams p = make_attn_params(s, T);
  p.kv_fp8 = cache.fp8_e4m3;
  p.k_scale = cache.k_scale;
  p.v_scale = cache.v_scale;
  return p;
}

// The pool row (index over num_blocks * tokens_per_block rows; multiply by Hkv * head_dim for
// elements) holding position `pos` of the sequence in block-table row `seq`:
//   block_tables[seq * max_blocks_per_seq + pos / tokens_per_block] * tokens_per_block
//   + pos % tokens_per_block
// -1 when seq, pos or the block id is out of range (the host checks tables before a step; this
// keeps a bad entry from becoming a wild address). Every kernel addresses the KV cache through it.
// kL2Only: the table entry is read through L2 only, for lookups before pdl_wait() (pdl.cuh).
template <bool kL2Only = false>
__device__ __forceinline__ long long kv_cache_row(const int32_t* __restrict__ block_tables, int seq, int pos,
                                                  const AttnParams& p) {
  if (seq < 0 || seq >= p.num_seq_rows || pos < 0 || pos >= p.max_seq) return -1;
  const int32_t* entry = block_tables + static_cast<long long>(seq) * p.max_blocks_per_seq + (pos >> p.block_shift);
  const int block = kL2Only ? __ldcg(entry) : __ldg(entry);
  if (block < 0 || block >= p.num_blocks) return -1;
  return (static_cast<long long>(block) << p.block_shift) + (pos & (p.tokens_per_block - 1));
}

// Positions token t attends to: positions[t] + 1, clamped to the cache; 0 when the token's
// position or sequence row is invalid (its output is then written as zeros).
__device__ __forceinline__ int token_kv_len(int pos, int seq, const AttnParams& p) {
  if (pos < 0 || seq < 0 || seq >= p.num_seq_rows) return 0;
  return pos + 1 < p.max_seq ? pos + 1 : p.max_seq;
}

// Whether the tile holding token t has all its tokens in one slot. Every thread of the block
// must call it (it synchronizes the block); any block size.
__device__ __forceinline__ bool tile_is_uniform(const int32_t* slots, int t, int T) {
  const int base = t / kPrefillTileTokens * kPrefillTileTokens;
  const int n = T - base < kPrefillTileTokens ? T - base : kPrefillTileTokens;
  // Every token of the tile is checked whatever the block size (a block of 32 threads checking
  // only the first 32 once took a mixed tile for a uniform one: the decode kernel skipped it and
  // the prefill kernel, which checks all, did too).
  bool same = true;
  for (int i = threadIdx.x; i < n; i += blockDim.x) same = same && slots[base + i] == slots[base];
  return __syncthreads_and(same) != 0;
}

// The work of one block of a decode kernel's grid (T - decode_t0, Hkv * head_chunks, splits), or
// (Hkv * head_chunks, T - decode_t0, splits) where decode_block is told heads_fastest: token t
// (decode_t0 + the grid's token index), kv head kvh, its q
// heads h0 .. h0 + ng - 1 (chunk g0 of the group), split `split`; the token's position,
// block-table row and number of cache rows to read, and its output rows out[t, h0 .. h0 + ng).
template <typename T>
struct DecodeBlock {
  int t, kvh, g0, ng, split;
  int pos, slot, len;
  int h0;
  T* out_t;
};

// Fills b for the calling block. False when the block has nothing to do: its token belongs to the
// prefill kernel (a uniform tile; b.len = -1), or is invalid (b.len == 0), whose output rows split
// 0 writes as zeros (write_decode_zeros; here unless write_zeros is false). Every thread of the
// block must call it (tile_is_uniform synchronizes); `threads` is the block size. It reads only
// the step's inputs (positions and sequence rows, through L2: pdl.cuh), so a kernel may call it
// before pdl_wait() with write_zeros false when those are complete before the step
// (AttnParams::read_before_wait) and the prefill kernel takes no tiles.
template <typename T, int D>
__device__ __forceinline__ void write_decode_zeros(const DecodeBlock<T>& b, int threads) {
  if (b.split == 0)
    for (int i = threadIdx.x; i < b.ng * D; i += threads) b.out_t[i] = from_float<T>(0.0f);
}

template <typename T, int D, int MAXG>
__device__ __forceinline__ bool decode_block(DecodeBlock<T>& b, T* out, const int32_t* positions,
                                             const int32_t* slots, const AttnParams& p, int head_chunks,
                                             int threads, bool write_zeros = true, bool heads_fastest = false) {
  b.t = p.decode_t0 + (heads_fastest ? blockIdx.y : blockIdx.x);
  const int head_block = heads_fastest ? blockIdx.x : blockIdx.y;
  b.kvh = head_block / head_chunks;
  b.g0 = (head_block % head_chunks) * MAXG;
  b.ng = min(MAXG, p.G - b.g0);
  b.split = blockIdx.z;
  b.len = -1;
  if (p.prefill_takes_uniform_tiles && tile_is_uniform(slots, b.t, p.T)) return false;
  b.pos = __ldcg(positions + b.t);
  b.slot = __ldcg(slots + b.t);
  b.len = token_kv_len(b.pos, b.slot, p);
  b.h0 = b.kvh * p.G + b.g0;
  b.out_t = out + (static_cast<size_t>(b.t) * p.Hq + b.h0) * D;
  if (b.len == 0) {
    if (write_zeros) write_decode_zeros<T, D>(b, threads);
    return false;
  }
  return true;
}

// A decode-kernel lane's share of a q, K or V row: 8 consecutive elements as floats (one 16-byte
// load for 16-bit types, two for float32).
template <typename T>
__device__ __forceinline__ void load8(const T* p, float (&o)[8]) {
  if constexpr (kVec<T> == 8) {
    load_vec(p, o);
  } else {
    float a[4], b[4];
    load_vec(p, a);
    load_vec(p + 4, b);
#pragma unroll
    for (int i = 0; i < 4; ++i) o[i] = a[i], o[4 + i] = b[i];
  }
}

// The same through L2 only (ld.global.cg), for data the kernel before wrote: a load the compiler
// sees as read-only (ld.global.nc, as for a const __restrict__ pointer) may be scheduled above
// pdl_wait() (pdl.cuh); a coherent one stays below it.
template <typename T>
__device__ __forceinline__ void load8_l2(const T* p, float (&o)[8]) {
  constexpr int kLoads = 8 / kVec<T>;  // 16-byte loads: 1 for 16-bit types, 2 for float32
  uint4 raw[kLoads];
#pragma unroll
  for (int i = 0; i < kLoads; ++i) raw[i] = __ldcg(reinterpret_cast<const uint4*>(p + i * kVec<T>));
  const T* e = reinterpret_cast<const T*>(raw);
#pragma unroll
  for (int i = 0; i < 8; ++i) o[i] = to_float(e[i]);
}

// The KV cache's element type C: the activation type T, or e4m3 (an FP8 cache, KvFp8) whose
// values are e4m3 * the layer's scale.
using KvFp8 = __nv_fp8_e4m3;
template <typename C>
inline constexpr bool kIsFp8Kv = std::is_same_v<C, KvFp8>;

// Host: calls f(TypeTag<C>{}) with C the cache element type of a layer whose activations are T:
// T, or KvFp8 when kv_fp8 (an FP8 cache runs with 16-bit activations only; float32 is refused).
template <typename T, typename F>
void dispatch_kv_element(bool kv_fp8, F&& f) {
  if (!kv_fp8) return f(TypeTag<T>{});
  if constexpr (sizeof(T) == 2) {
    f(TypeTag<KvFp8>{});
  } else {
    fail("an FP8 KV cache needs float16 or bfloat16 activations, not float32");
  }
}

// 8 consecutive cache elements at p (global or shared memory, aligned to their size) as floats.
// kL2Only: from global memory through L2 only (ld.global.cg), for a kernel that reads cache rows
// before pdl_wait() (pdl.cuh): L1 may hold lines of old contents, and a line read early may also
// hold a row the kernel before it is still writing (rows are Hkv * head_dim elements apart, less
// than a 128-byte line for small heads). L2 is coherent.
template <bool kL2Only = false, typename C>
__device__ __forceinline__ void load8_kv(const C* p, float scale, float (&o)[8]) {
  if constexpr (kIsFp8Kv<C>) {
    const uint2* raw_p = reinterpret_cast<const uint2*>(p);
    const uint2 raw = kL2Only ? __ldcg(raw_p) : *raw_p;
    float lo[4], hi[4];
    Decode<WeightFormat::Fp8PerTensor>::word(raw.x, lo);
    Decode<WeightFormat::Fp8PerTensor>::word(raw.y, hi);
#pragma unroll
    for (int i = 0; i < 4; ++i) o[i] = lo[i] * scale, o[4 + i] = hi[i] * scale;
  } else if constexpr (kL2Only) {
    (void)scale;
    load8_l2(p, o);
  } else {
    (void)scale;
    load8(p, o);
  }
}

// Stores N floats as cache elements at p: e4m3(x / scale) (saturating), or the activation type
// (16-byte vector store when N is its vector width).
template <typename C, int N>
__device__ __forceinline__ void store_kv(C* p, const float (&x)[N], float scale) {
  if constexpr (kIsFp8Kv<C>) {
    const float inv = 1.0f / scale;
#pragma unroll
    for (int i = 0; i < N; ++i) p[i] = KvFp8(x[i] * inv);
  } else if constexpr (N == kVec<C>) {
    (void)scale;
    store_vec(p, x);
  } else {
    (void)scale;
#pragma unroll
    for (int i = 0; i < N; ++i) p[i] = from_float<C>(x[i]);
  }
}

// The decode kernels' shared steps. A block takes token t and q heads h0 .. h0 + ng - 1 (at most
// MAXG) of one kv head; its lanes form STREAMS groups (stream_id), each lane holding head dims
// d0 .. d0 + 7 of an online softmax per q head: running max m, sum l, unnormalised output acc.

// q[g] = q head h0 + g of token t (dims d0 .. d0 + 7) pre-scaled by scale_log2; zeros past ng.
template <typename T, int D, int MAXG>
__device__ __forceinline__ void load_q_scaled(const T* qkv, const AttnParams& p, int t, int h0, int ng, int d0,
                                              float (&q)[MAXG][8]) {
  const T* q_row = qkv + static_cast<size_t>(t) * (p.Hq + 2 * p.Hkv) * D + static_cast<size_t>(h0) * D + d0;
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    if (g < ng) {
      load8_l2(q_row + static_cast<size_t>(g) * D, q[g]);
#pragma unroll
      for (int e = 0; e < 8; ++e) q[g][e] *= p.scale_log2;
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) q[g][e] = 0.0f;
    }
  }
}

// The empty online-softmax state: m = -inf, l = 0, acc = 0.
template <int MAXG>
__device__ __forceinline__ void init_softmax_state(float (&m)[MAXG], float (&l)[MAXG], float (&acc)[MAXG][8]) {
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    m[g] = -INFINITY;
    l[g] = 0.0f;
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[g][e] = 0.0f;
  }
}

// Lane group stream_id's state into shared memory (fp32): sm_o [STREAMS][MAXG][D],
// sm_m, sm_l [STREAMS][MAXG]; `leader` is one lane of the group (it writes m and l).
template <int D, int MAXG>
__device__ __forceinline__ void store_lane_state(float* sm_o, float* sm_m, float* sm_l, int stream_id, bool leader,
                                                 int d0, const float (&m)[MAXG], const float (&l)[MAXG],
                                                 const float (&acc)[MAXG][8]) {
#pragma unroll
  for (int g = 0; g < MAXG; ++g) {
    if (leader) {
      sm_m[stream_id * MAXG + g] = m[g];
      sm_l[stream_id * MAXG + g] = l[g];
    }
#pragma unroll
    for (int e = 0; e < 8; ++e) sm_o[(stream_id * MAXG + g) * D + d0 + e] = acc[g][e];
  }
}

// After a barrier: the lane groups' states merged for q head g, dim d (M is finite: the split's
// first key was read by stream 0; streams that read nothing weigh 0).
template <int D, int MAXG, int STREAMS>
__device__ __forceinline__ void merge_lane_states(const float* sm_o, const float* sm_m, const float* sm_l, int g,
                                                  int d, float& M, float& L, float& O) {
  M = -INFINITY;
#pragma unroll
  for (int s = 0; s < STREAMS; ++s) M = fmaxf(M, sm_m[s * MAXG + g]);
  L = 0.0f;
  O = 0.0f;
#pragma unroll
  for (int s = 0; s < STREAMS; ++s) {
    const float w = exp2f(sm_m[s * MAXG + g] - M);
    L = fmaf(sm_l[s * MAXG + g], w, L);
    O = fmaf(sm_o[(s * MAXG + g) * D + d], w, O);
  }
}

// A split's partial for partial index pi ((t, h) * Z + split), dim d: o [.., D] and, once per
// row, ml [.., 2] = (m, l).
__device__ __forceinline__ void write_split_partial(float* partials, float* ml, size_t pi, int D, int d, float M,
                                                    float L, float O) {
  partials[pi * D + d] = O;
  if (d == 0) {
    ml[pi * 2] = M;
    ml[pi * 2 + 1] = L;
  }
}

// After store_lane_state and a barrier: the block's ng x D outputs, each merged over the lane
// groups by the threads in turn (`threads` of them). A token done in one split (`whole`) writes its
// output rows out_t; otherwise each (g, d) is the split's partial at partial index
// pi_h0 + g * num_splits + split (pi_h0: that of (t, h0, split 0)).
template <typename T, int D, int MAXG, int STREAMS>
__device__ __forceinline__ void write_block_outputs(T* out_t, float* partials, float* ml, const float* sm_o,
                                                    const float* sm_m, const float* sm_l, int ng, bool whole,
                                                    size_t pi_h0, int num_splits, int split, int threads) {
  for (int i = threadIdx.x; i < ng * D; i += threads) {
    const int g = i / D, d = i % D;
    float M, L, O;
    merge_lane_states<D, MAXG, STREAMS>(sm_o, sm_m, sm_l, g, d, M, L, O);
    if (whole) {
      out_t[i] = from_float<T>(O / L);
    } else {
      write_split_partial(partials, ml, pi_h0 + static_cast<size_t>(g) * num_splits + split, D, d, M, L, O);
    }
  }
}

// Rows per split of the latency decode kernel for a token of len rows over num_splits slots (the
// kernel and its reduce compute it alike; nothing on the host depends on len, so graphs replay it).
// Measured on the H100 at one token (Llama-3-8B heads): splits of 32 rows at 512 rows take 10.1 us
// against 12.5 for 64, but at 2048 rows 18.7 against 15.6: short sequences split finer.
inline constexpr int kLatencyShortSplitLen = 32, kLatencyLongSplitLen = 64, kLatencyShortSeqLen = 1024;
__device__ __forceinline__ int latency_split_len(int len, int num_splits) {
  const int min_len = len <= kLatencyShortSeqLen ? kLatencyShortSplitLen : kLatencyLongSplitLen;
  return max(min_len, (len + num_splits - 1) / num_splits);
}

// The fused split-K merge of the pipelined decode kernel ("threadFenceReduction" pattern). A block that has
// written its split's partial for token t and q heads h0..h0+ng-1 counts its arrival on *counter
// (one per (t, blockIdx.y), zero on entry); the last of the n_splits blocks merges the n_splits
// partials into out_t and sets the counter back to 0 for the next launch (graph replays reuse it).
//   partials: o [T, Hq, Z, D] fp32, then ml [T, Hq, Z, 2] (running max m, sum l), Z = num_splits;
//   pi_h0: the partial index of (t, h0, split 0).
template <typename T, int D>
__device__ __forceinline__ void merge_splits_if_last(T* out_t, const float* partials, const float* ml, size_t pi_h0,
                                                     int num_splits, int n_splits, int ng, int* counter) {
  __shared__ int is_last;
  __threadfence();  // this thread's partial writes are visible device-wide before the count
  __syncthreads();
  if (threadIdx.x == 0) is_last = atomicAdd(counter, 1) == n_splits - 1;
  __syncthreads();
  if (!is_last) return;
  __threadfence();  // the other blocks' partials are visible; read them through L2 (__ldcg)
  for (int i = threadIdx.x; i < ng * D; i += blockDim.x) {
    const int g = i / D, d = i % D;
    const size_t pg = pi_h0 + static_cast<size_t>(g) * num_splits;  // partial index of (t, h0 + g, 0)
    float M = -INFINITY;
    for (int s = 0; s < n_splits; ++s) M = fmaxf(M, __ldcg(ml + (pg + s) * 2));
    float L = 0.0f, O = 0.0f;
#pragma unroll 4
    for (int s = 0; s < n_splits; ++s) {
      const float w = exp2f(__ldcg(ml + (pg + s) * 2) - M);
      L = fmaf(__ldcg(ml + (pg + s) * 2 + 1), w, L);
      O = fmaf(__ldcg(partials + (pg + s) * D + d), w, O);
    }
    out_t[i] = from_float<T>(O / L);
  }
  if (threadIdx.x == 0) *counter = 0;  // every block of this (t, blockIdx.y) has arrived
}

// Decode kernel for T <= kAttentionLatencyMaxTokens: on the H100 (bench_kernels, Llama-3-8B heads,
// 512 rows) 11.0 us at one token against 13.8 for the pipelined kernel, but 29.9 against 14.3 at 4.
inline constexpr int kAttentionLatencyMaxTokens = 1;
// Its splits: num_splits (Z) slots per token, latency_split_len rows each; with Z > 1 it needs
// `partials` ([T, Hq, Z, head_dim + 2] fp32), merged by a reduce kernel, which asks L2 for the
// first bytes of `next` (AttentionShape::next) once the decode kernel has ended.
void launch_attention_decode_latency(DType dt, void* out, const void* qkv, const int32_t* positions,
                                     const int32_t* slots, KVCacheLayer cache, const AttnParams& p, int num_splits,
                                     float* partials, L2Prefetch next, cudaStream_t stream);
// Decode kernel over num_splits (Z) split slots per token. With Z > 1 it needs `partials`
// ([T, Hq, Z, head_dim + 2] fp32) and `counters` (T * Hq ints, zero on entry; left zero).
void launch_attention_decode(DType dt, void* out, const void* qkv, const int32_t* positions, const int32_t* slots,
                             KVCacheLayer cache, const AttnParams& p, int num_splits, float* partials, int* counters,
                             cudaStream_t stream);
// Tensor-core decode kernel (attention_decode_mma.cu) for steps of more than
// kAttentionLatencyMaxTokens tokens where it applies (16-bit activations, head_dim 64 or 128, at
// least 2 q heads a kv head); same split plan, workspace and merge as launch_attention_decode.
bool attention_decode_mma_supports(DType dt, const AttnParams& p);
void launch_attention_decode_mma(DType dt, void* out, const void* qkv, const int32_t* positions,
                                 const int32_t* slots, KVCacheLayer cache, const AttnParams& p, int num_splits,
                                 float* partials, int* counters, cudaStream_t stream);
// Decode kernel over an FP8 cache with its rows staged in shared memory by bulk copies
// (attention_decode_bulk.cu): a token a block at a time, no splits, for steps of at least 2 tokens
// an SM (num_sms: the GPU's, which sizes its grid).
bool attention_decode_bulk_supports(DType dt, const AttnParams& p, int cc_major);
void launch_attention_decode_bulk(DType dt, void* out, const void* qkv, const int32_t* positions,
                                  const int32_t* slots, KVCacheLayer cache, const AttnParams& p, int num_sms,
                                  cudaStream_t stream);
// The SMs the bulk kernel's persistent grid takes at most from now on (0, the default: num_sms),
// for an attention sharing the GPU with a GEMM on another stream (bench_kernels --only split).
void set_attention_decode_bulk_max_sms(int sms);
void launch_attention_prefill(DType dt, void* out, const void* qkv, const int32_t* positions, const int32_t* slots,
                              KVCacheLayer cache, const AttnParams& p, cudaStream_t stream);
// Tensor-core kernel for float16 / bfloat16 (attention_prefill_mma.cu: mma.sync, cp.async
// pipeline); launch_attention_prefill forwards to it for those dtypes.
void launch_attention_prefill_mma(DType dt, void* out, const void* qkv, const int32_t* positions,
                                  const int32_t* slots, KVCacheLayer cache, const AttnParams& p, cudaStream_t stream);
bool attention_prefill_supports(int head_dim);
bool attention_decode_supports(int head_dim);

}  // namespace lamina::cuda
