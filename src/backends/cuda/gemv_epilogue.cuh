// What the GEMVs (gemv.cu over float weights, gemv_quant.cu over quantized ones) do with a block's
// M x R dot products once they are reduced: write them, or the gate_up SwiGLU, or the qkv rope +
// KV-cache write. For the last, a block owns rows j, j + 1, j + D/2, j + D/2 + 1 of one head of
// the qkv projection [(Hq + 2 Hkv) D, K] (R = 4, two rotate-half pairs); thread (m, r) rotates q
// and k rows by positions[m] * inv_freq (angles in double precision, as rope_kv_write.cu), writes
// its output and, for k and v rows, the token's KV-cache element. The int4 tile GEMV
// (gemv_int4_tiles.cu), whose blocks own whole tiles, calls the row-based rope_kv_*_row.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "activation.cuh"
#include "attention_common.cuh"
#include "cuda_types.cuh"
#include "kernels.h"
#include "l2_prefetch.cuh"

namespace lamina::cuda {

// The epilogue's inputs: per token m < M its position and block-table row, the
// rotary frequencies [D/2] and the layer's KV pools (elements of the GEMV's type, or e4m3 when
// p.kv_fp8).
struct RopeKvArgs {
  const int32_t* positions = nullptr;
  const int32_t* slots = nullptr;
  const float* inv_freq = nullptr;
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  const int32_t* block_tables = nullptr;
  AttnParams p;
  bool prepare_late = false;  // rope_kv_prepare after the block's reduction (LAMINA_ROPE_PREPARE_LATE=1, A/B)
  // rope_kv_prepare before pdl_wait(): the positions, sequence rows and block tables it reads are
  // a step's inputs, complete before the step's first kernel (AttentionShape::
  // inputs_ready_before_step, as the decode attention reads them), so the sincos and the two
  // dependent loads overlap the kernel before instead of delaying the first wave's sums.
  // LAMINA_ROPE_PREPARE_BEFORE_WAIT=0 turns it off (A/B).
  bool prepare_before_wait = false;
  // Ask L2 for the tokens' earlier cache rows (kv_rows_l2_prefetch) where their K and V rows take
  // at most this many bytes in all; 0: never. Set by the launcher: kv_l2_prefetch_budget() (kernels.h).
  uint32_t kv_prefetch_bytes = 0;
};

// LAMINA_ROPE_PREPARE_LATE=1 in the environment: the kernels prepare the epilogue after their
// reduction, as they did before (A/B).
bool rope_prepare_late();
bool rope_prepare_before_wait_allowed();

// Host: the epilogue's arguments for a step of M tokens over this cache, or false where the fused
// qkv GEMV does not apply (M outside 1..kGemvMaxM, head_dim not a multiple of 4, no block tables).
inline bool make_rope_kv_args(RopeKvArgs& a, int M, const int32_t* positions, const int32_t* slots,
                              const float* inv_freq, const KVCacheLayer& cache, const AttentionShape& s) {
  if (M < 1 || M > kGemvMaxM || s.head_dim % 4 != 0 || cache.block_tables == nullptr || s.tokens_per_block <= 0 ||
      s.max_blocks_per_seq <= 0)
    return false;
  a = RopeKvArgs{positions, slots, inv_freq, cache.k, cache.v, cache.block_tables, make_attn_params(s, M, cache),
                 rope_prepare_late()};
  a.prepare_before_wait = s.inputs_ready_before_step && !a.prepare_late && rope_prepare_before_wait_allowed();
  return true;
}

// The qkv row that row r (0..3) of block b reads and writes: head b / (D/4), pair
// dims j = 2 (b % (D/4)), rows j, j + 1, j + D/2, j + D/2 + 1 of the head.
__device__ __forceinline__ int rope_row(int b, int r, int D) {
  const int pairs_blocks = D / 4, head = b / pairs_blocks, j = 2 * (b % pairs_blocks);
  return head * D + j + (r & 1) + (r >= 2 ? D / 2 : 0);
}

// What thread (m, r)'s epilogue needs besides the sums: its row's rotation at the token's position
// (q and k rows) and the token's cache row (k and v rows). The kernels compute it before their K
// loop (before pdl_wait() where RopeKvArgs::prepare_before_wait), so its dependent loads (the
// position, then the block table) and the double-precision sincos overlap the weight stream
// instead of trailing the block's reduction.
struct RopeKvPrep {
  float c = 1.0f, s = 0.0f;   // cos and sin of pos * inv_freq[dim % (D/2)]
  long long cache_row = -1;  // kv_cache_row of (slot, position); -1: none
};

// Row `row` of the qkv projection for token m.
__device__ __forceinline__ RopeKvPrep rope_kv_prepare_row(int m, int row, const RopeKvArgs& a) {
  const int D = a.p.head_dim, half = D / 2, Hq = a.p.Hq, Hkv = a.p.Hkv;
  const int head = row / D, dim = row % D;
  // The step's inputs through L2 only: this may run before pdl_wait() (pdl.cuh's rules).
  const int pos = __ldcg(a.positions + m);
  RopeKvPrep prep;
  if (head < Hq + Hkv) {  // q or k: rotate (x_i, x_{i+D/2}) by pos * inv_freq[i]
    double sn, cs;
    sincos(static_cast<double>(pos) * static_cast<double>(a.inv_freq[dim % half]), &sn, &cs);
    prep.c = static_cast<float>(cs);
    prep.s = static_cast<float>(sn);
  }
  if (head >= Hq) prep.cache_row = kv_cache_row<true>(a.block_tables, __ldcg(a.slots + m), pos, a.p);
  return prep;
}

__device__ __forceinline__ RopeKvPrep rope_kv_prepare(int m, int r, const RopeKvArgs& a) {
  return rope_kv_prepare_row(m, rope_row(blockIdx.x, r, a.p.head_dim), a);
}

// The epilogue of qkv row `row` for token m, holding its sum s; `partner` is the sum of the other
// row of its rotate-half pair (dim +- D/2).
template <typename T>
__device__ __forceinline__ void rope_kv_store_row(T* out, int N, int m, int row, float s, float partner,
                                                  const RopeKvArgs& a, const RopeKvPrep& prep) {
  const int D = a.p.head_dim, Hq = a.p.Hq, Hkv = a.p.Hkv;
  const int head = row / D, dim = row % D;
  float v = s;
  if (head < Hq + Hkv) v = dim < D / 2 ? s * prep.c - partner * prep.s : s * prep.c + partner * prep.s;
  out[static_cast<size_t>(m) * N + row] = from_float<T>(v);
  if (head >= Hq) {  // k or v: the cache row of (slot, position); none when out of range
    const long long cache_row = prep.cache_row;
    if (cache_row >= 0) {
      const bool is_k = head < Hq + Hkv;
      const int kv_head = head - Hq - (is_k ? 0 : Hkv);
      const size_t at = (static_cast<size_t>(cache_row) * Hkv + kv_head) * D + dim;
      if (a.p.kv_fp8) {  // an FP8 cache: e4m3(v / scale)
        const float x[1] = {v};
        store_kv<KvFp8, 1>(static_cast<KvFp8*>(is_k ? a.k_cache : a.v_cache) + at, x,
                           is_k ? a.p.k_scale : a.p.v_scale);
      } else {
        static_cast<T*>(is_k ? a.k_cache : a.v_cache)[at] = from_float<T>(v);
      }
    }
  }
}

// The same for row r of the block's four (thread (m, r)); `partner` is the sum of row r ^ 2.
template <typename T>
__device__ __forceinline__ void rope_kv_store(T* out, int N, int m, int r, float s, float partner,
                                              const RopeKvArgs& a, const RopeKvPrep& prep) {
  rope_kv_store_row(out, N, m, rope_row(blockIdx.x, r, a.p.head_dim), s, partner, a, prep);
}

// Whether a kernel prepares the epilogue at this point of its start: before pdl_wait()
// (waited = false) where RopeKvArgs::prepare_before_wait, else right after it (waited = true).
__device__ __forceinline__ bool rope_prepares_now(const RopeKvArgs& rope, bool waited) {
  return !rope.prepare_late && rope.prepare_before_wait != waited;
}

// A kernel's early calls, one before pdl_wait() (waited = false) and one after it (waited = true),
// both before its K loop: thread i < M * R prepares (i / R, i % R) in the one rope_prepares_now says.
template <int M, int R, bool kRopeKv>
__device__ __forceinline__ void rope_kv_prepare_early(const RopeKvArgs& rope, bool waited, RopeKvPrep& prep) {
  if constexpr (kRopeKv) {
    if (rope_prepares_now(rope, waited) && threadIdx.x < M * R)
      prep = rope_kv_prepare(threadIdx.x / R, threadIdx.x % R, rope);
  }
}

// Before pdl_wait(): the K and V cache rows that the token's attention will read from earlier
// steps (positions 0 .. pos - 1), asked of L2 while the kernel before this one (the norm or the
// all-reduce) leaves DRAM idle, so the attention after this GEMV finds them in L2 rather than
// queued behind the GEMV's weight stream. Thread 0 of blocks 0, 1, ... each asks for one piece
// (a KV block's K or V rows, at most 64 KB). A token whose rows exceed its share of
// kv_prefetch_bytes asks for none: they would not stay in L2 until read, and would be read twice.
// The step's inputs are read through L2 (pdl.cuh).
template <typename T>
__device__ __forceinline__ void kv_rows_l2_prefetch(const RopeKvArgs& a, int M) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (a.kv_prefetch_bytes == 0 || !a.prepare_before_wait || threadIdx.x != 0) return;
  const AttnParams& p = a.p;
  const uint32_t row_bytes = uint32_t(p.Hkv) * p.head_dim * (p.kv_fp8 ? 1u : uint32_t(sizeof(T)));
  const uint32_t rows_a_piece = max(1u, min(uint32_t(p.tokens_per_block), kL2PrefetchPiece / row_bytes));
  const int pieces_a_block = (p.tokens_per_block + int(rows_a_piece) - 1) / int(rows_a_piece);
  for (int m = 0; m < M; ++m) {
    const int pos = __ldcg(a.positions + m), seq = __ldcg(a.slots + m);
    if (pos <= 0 || seq < 0 || seq >= p.num_seq_rows) continue;
    const int old = min(pos, p.max_seq);  // rows written by earlier steps
    if (2ull * old * row_bytes > a.kv_prefetch_bytes / unsigned(M)) continue;
    const int blocks = (old + p.tokens_per_block - 1) >> p.block_shift;
    const int items = blocks * pieces_a_block * 2;  // (KV block, piece, K or V)
    for (int i = blockIdx.x; i < items; i += gridDim.x) {
      const int kb = i / (2 * pieces_a_block), piece = (i / 2) % pieces_a_block;
      const int first = kb * p.tokens_per_block + piece * int(rows_a_piece);
      const int rows = min(int(rows_a_piece), min(old, (kb + 1) * p.tokens_per_block) - first);
      if (rows <= 0) continue;
      const long long row = kv_cache_row<true>(a.block_tables, seq, first, p);
      if (row < 0) continue;
      const char* base = static_cast<const char*>(i % 2 == 0 ? a.k_cache : a.v_cache) + size_t(row) * row_bytes;
      l2_prefetch_bulk(base, uint32_t(rows) * row_bytes);
    }
  }
#else
  (void)a;
  (void)M;
#endif
}

// Writes a block's reduced sums: thread i = m * R + r holds `s`, row r's sum for token m (valid
// where has_sum). Every thread of warp 0 must call it (the gate/up and rope pairs meet by
// shuffles). kGateUp: rows r < R/2 are gate rows n0 + r, rows R/2 + r their up rows, and
// out[m, n0 + r] = silu(gate) * up. kRopeKv: rope_kv_store with row r ^ 2 as the partner.
// Otherwise out[m, n0 + r] = s. Rows past N are not written. `prep`: rope_kv_prepare's result
// for thread (m, r) (kRopeKv; computed here when rope.prepare_late).
template <typename T, int R, bool kGateUp, bool kRopeKv>
__device__ __forceinline__ void write_block_sums(T* out, int N, int n0, float s, bool has_sum, const RopeKvArgs& rope,
                                                 RopeKvPrep prep = {}) {
  constexpr int kOuts = kGateUp ? R / 2 : R;
  const int m = threadIdx.x / R, r = threadIdx.x % R;
  if constexpr (kGateUp) {
    if (threadIdx.x < 32) {  // all of warp 0 shuffles: the up sum of pair r sits R/2 lanes up
      const float up = __shfl_down_sync(0xffffffffu, s, kOuts);
      if (has_sum && r < kOuts && n0 + r < N) out[static_cast<size_t>(m) * N + n0 + r] = from_float<T>(silu(s) * up);
    }
  } else if constexpr (kRopeKv) {
    if (threadIdx.x < 32) {  // all of warp 0 shuffles: row r's rotate-half partner is row r ^ 2
      const float partner = __shfl_xor_sync(0xffffffffu, s, 2);
      if (has_sum && rope.prepare_late) prep = rope_kv_prepare(m, r, rope);
      if (has_sum) rope_kv_store(out, N, m, r, s, partner, rope, prep);
    }
  } else if (has_sum && n0 + r < N) {
    out[static_cast<size_t>(m) * N + n0 + r] = from_float<T>(s);
  }
}

}  // namespace lamina::cuda
