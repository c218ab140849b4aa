// Decode attention: few query tokens, each over its own sequence's cache, split-K over the
// sequence with the split merge fused in (one launch). Key j of a token is read from the pool row
// kv_cache_row(block_tables, seq row, j) (paged KV; attention_common.cuh).
//
//   grid (T - decode_t0, Hkv * head_chunks, Z), 128 threads. A block takes one token t, one kv head and up to
//   MAXG of the q heads that read it (GQA: K/V rows are loaded once for all of them), and one
//   split of the token's cache rows. The split length is chosen here from the token's length
//   (graph-safe: nothing on the host depends on it):
//     split_len = round_up(max(kDecodeMinSplitLen, ceil(len / Z)), NK),  n = ceil(len / split_len)
//   so the n <= Z splits that have work are balanced and blocks z >= n exit at once.
//   K/V tiles: NK keys (16 KB of K and V per tile) are copied to shared memory with cp.async in a
//   3-stage pipeline (two tiles in flight while one is used); the block-table lookups of a tile are
//   issued before the wait for the previous one, so their latency overlaps it.
//   Lanes: a key row of D elements is read by D/8 lanes, 8 elements each, so a warp takes 32/(D/8)
//   keys at once. Each group of lanes keeps an online softmax (running max m, sum l, unnormalised
//   output acc) per q head; the block merges them in shared memory (reusing the tile buffers).
//   n == 1: the block writes the output. Otherwise it writes its partial (acc, m, l) to
//     partials = o [T, Hq, Z, D] then ml [T, Hq, Z, 2]    (fp32)
//   and bumps the arrival counter of (t, blockIdx.y); the last of the n blocks to arrive merges
//   the n partials, writes the output and sets the counter back to 0 for the next launch (CUDA
//   graph replays reuse the same counters).
// Scores are in the exp2 domain (q pre-scaled by log2(e)/sqrt(D)); all softmax math is fp32.
#include <cuda_runtime.h>

#include <algorithm>

#include "attention_common.cuh"
#include "cp_async.cuh"
#include "cuda_check.h"
#include "cuda_types.cuh"
#include "pdl.cuh"

namespace lamina::cuda {
namespace {

constexpr int kWarps = 4, kThreads = kWarps * 32;
constexpr int kElems = 8;              // head dims per lane
constexpr int kStages = 3;             // K/V tiles in shared memory: two loading, one in use
constexpr int kStageBytes = 16 << 10;  // K and V of one tile

// Shapes of the kernel for cache element type C (the activation type, or e4m3 for an FP8 cache),
// head_dim D and up to MAXG q heads a block.
template <typename C, int D, int MAXG>
struct DecodeShape {
  static constexpr int LPK = D / kElems;                      // lanes per key row
  static constexpr int KPW = 32 / LPK;                        // keys a warp reads at once
  static constexpr int STREAMS = kWarps * KPW;                // lane groups = keys per pass
  static constexpr int NK = kStageBytes / (2 * D * int(sizeof(C)));  // keys per tile
  static constexpr int PASSES = NK / STREAMS;                 // passes over a tile
  static constexpr int U = std::min(PASSES, MAXG >= 8 ? 2 : 4);  // keys per online-softmax update
  static constexpr int CH = D * int(sizeof(C)) / 16;          // 16-byte chunks per key row
  static constexpr int ROWS_PER_ROUND = kThreads / CH;        // rows one round of copies covers
  static constexpr int ROUNDS = NK / ROWS_PER_ROUND;          // copies of K (and of V) per thread per tile
  // Shared memory: tiles [kStages][K: NK x D, V: NK x D] C, then valid [kStages][NK] uint8;
  // after the loop the front is reused for the lane-group merge: o [STREAMS][MAXG][D], m, l
  // [STREAMS][MAXG] fp32.
  static constexpr size_t valid_off = size_t(kStages) * kStageBytes;
  static constexpr size_t merge_bytes = size_t(STREAMS) * MAXG * (D + 2) * 4;
  static constexpr size_t bytes = (std::max(valid_off + kStages * NK, merge_bytes) + 15) / 16 * 16;
  static_assert(PASSES >= 1 && PASSES % U == 0 && ROUNDS >= 1 && NK % ROWS_PER_ROUND == 0, "tile shape");
  static_assert(NK * kElems * LPK * 2 * int(sizeof(C)) == kStageBytes, "a tile is one stage");
};

template <typename T, typename C, int D, int MAXG>
__global__ void __launch_bounds__(kThreads)
    attn_decode_kernel(T* __restrict__ out, float* __restrict__ partials, int* __restrict__ counters,
                       const T* __restrict__ qkv, const int32_t* __restrict__ positions,
                       const int32_t* __restrict__ slots, const C* __restrict__ k_cache,
                       const C* __restrict__ v_cache, const int32_t* __restrict__ block_tables, AttnParams p,
                       int head_chunks) {
  using S = DecodeShape<C, D, MAXG>;
  constexpr int LPK = S::LPK, KPW = S::KPW, STREAMS = S::STREAMS, NK = S::NK, U = S::U;
  extern __shared__ __align__(16) unsigned char smem[];
  pdl_launch_dependents();  // the next projection may launch and wait
  pdl_wait();               // q and the cache rows come from rope_kv_write

  const int num_splits = gridDim.z;
  DecodeBlock<T> b;
  if (!decode_block<T, D, MAXG>(b, out, positions, slots, p, head_chunks, kThreads)) return;
  const int t = b.t, kvh = b.kvh, g0 = b.g0, ng = b.ng, split = b.split;
  const int pos = b.pos, slot = b.slot, len = b.len, h0 = b.h0;
  T* out_t = b.out_t;
  // This token's split plan (every block of (t, blockIdx.y) computes the same one).
  int split_len = max(kDecodeMinSplitLen, (len + num_splits - 1) / num_splits);
  split_len = (split_len + NK - 1) / NK * NK;
  const int n_splits = (len + split_len - 1) / split_len;
  if (split >= n_splits) return;  // no rows for this split; it never touches the counter
  const int start = split * split_len;
  const int end = min(len, start + split_len);
  const int n_tiles = (end - start + NK - 1) / NK;

  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int sub = lane / LPK, d0 = (lane % LPK) * kElems;
  const int stream_id = warp * KPW + sub;

  float q[MAXG][kElems];
  load_q_scaled<T, D, MAXG>(qkv, p, t, h0, ng, d0, q);

  // ---- K/V tile copies: this thread copies 16-byte chunk cp_col of rows cp_row0 + r * ROWS_PER_ROUND.
  const size_t pos_stride = static_cast<size_t>(p.Hkv) * D;  // elements between pool rows
  const size_t head_off = static_cast<size_t>(kvh) * D;
  const int cp_row0 = tid / S::CH, cp_col = (tid % S::CH) * (16 / int(sizeof(C)));
  long long rows[S::ROUNDS];
  // The pool rows of tile `tile`'s keys (-1 past `end` or without a pool row): loads only.
  auto lookup = [&](int tile) {
    const int j0 = start + tile * NK + cp_row0;
#pragma unroll
    for (int r = 0; r < S::ROUNDS; ++r) {
      const int j = j0 + r * S::ROWS_PER_ROUND;
      rows[r] = j < end ? kv_cache_row(block_tables, slot, j, p) : -1;
    }
  };
  // Copies of those rows into `stage`; missing rows become zeros and are flagged invalid.
  auto issue = [&](int stage) {
    C* ks = reinterpret_cast<C*>(smem + static_cast<size_t>(stage) * kStageBytes);
    C* vs = ks + NK * D;
    unsigned char* valid = smem + S::valid_off + stage * NK;
#pragma unroll
    for (int r = 0; r < S::ROUNDS; ++r) {
      const int kk = cp_row0 + r * S::ROWS_PER_ROUND;
      const bool ok = rows[r] >= 0;
      const size_t off = static_cast<size_t>(ok ? rows[r] : 0) * pos_stride + head_off + cp_col;
      cp_async16(smem_u32(ks + kk * D + cp_col), k_cache + off, ok);
      cp_async16(smem_u32(vs + kk * D + cp_col), v_cache + off, ok);
      if (cp_col == 0) valid[kk] = ok;
    }
  };

  float m[MAXG], l[MAXG], acc[MAXG][kElems];
  init_softmax_state<MAXG>(m, l, acc);

  // Pipeline: one commit group per tile; tiles 0 .. kStages-2 before the loop.
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < n_tiles) {
      lookup(s);
      issue(s);
    }
    cp_async_commit();
  }
  for (int it = 0; it < n_tiles; ++it) {
    const int next = it + kStages - 1;  // goes to stage (it - 1) % kStages, last read in iteration it - 1
    if (next < n_tiles) lookup(next);   // its loads overlap the wait below
    cp_async_wait<kStages - 2>();       // this thread's copies of tile `it` have landed
    __syncthreads();                    // everyone's; and iteration it - 1 is done with its stage
    if (next < n_tiles) issue(next % kStages);
    cp_async_commit();  // possibly empty: keeps one group per tile

    const int stage = it % kStages;
    const C* ks = reinterpret_cast<const C*>(smem + static_cast<size_t>(stage) * kStageBytes);
    const C* vs = ks + NK * D;
    const unsigned char* valid = smem + S::valid_off + stage * NK;
    // Key kk of the tile = pass * STREAMS + stream_id; U keys per online-softmax update.
#pragma unroll
    for (int u0 = 0; u0 < S::PASSES; u0 += U) {
      float s[MAXG][U];  // scores, then probabilities
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int kk = (u0 + u) * STREAMS + stream_id;
        float kf[kElems];
        load8_kv(ks + kk * D + d0, p.k_scale, kf);
        const bool ok = valid[kk] != 0;
#pragma unroll
        for (int g = 0; g < MAXG; ++g) {
          float d = 0.0f;
#pragma unroll
          for (int e = 0; e < kElems; ++e) d = fmaf(q[g][e], kf[e], d);
#pragma unroll
          for (int o = LPK / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);  // all lanes: uniform loop
          s[g][u] = ok ? d : -INFINITY;
        }
      }
#pragma unroll
      for (int g = 0; g < MAXG; ++g) {
        float m_new = m[g];
#pragma unroll
        for (int u = 0; u < U; ++u) m_new = fmaxf(m_new, s[g][u]);
        if (g >= ng || m_new == -INFINITY) {  // unused head, or no valid key yet: nothing to add
#pragma unroll
          for (int u = 0; u < U; ++u) s[g][u] = 0.0f;
          continue;
        }
        const float alpha = exp2f(m[g] - m_new);
        float psum = 0.0f;
#pragma unroll
        for (int u = 0; u < U; ++u) psum += (s[g][u] = exp2f(s[g][u] - m_new));
        l[g] = fmaf(l[g], alpha, psum);
#pragma unroll
        for (int e = 0; e < kElems; ++e) acc[g][e] *= alpha;
        m[g] = m_new;
      }
#pragma unroll
      for (int u = 0; u < U; ++u) {
        const int kk = (u0 + u) * STREAMS + stream_id;
        float vf[kElems];
        load8_kv(vs + kk * D + d0, p.v_scale, vf);
#pragma unroll
        for (int g = 0; g < MAXG; ++g)
#pragma unroll
          for (int e = 0; e < kElems; ++e) acc[g][e] = fmaf(s[g][u], vf[e], acc[g][e]);
      }
    }
  }
  cp_async_wait<0>();  // only empty groups can be left; the tile buffers become the merge buffers
  __syncthreads();     // every thread is done reading the last tile

  // Merge the lane groups' states: sm_o [STREAMS][MAXG][D], sm_m, sm_l [STREAMS][MAXG].
  float* sm_o = reinterpret_cast<float*>(smem);
  float* sm_m = sm_o + STREAMS * MAXG * D;
  float* sm_l = sm_m + STREAMS * MAXG;
  store_lane_state<D, MAXG>(sm_o, sm_m, sm_l, stream_id, lane % LPK == 0, d0, m, l, acc);
  __syncthreads();
  const size_t pi_h0 = (static_cast<size_t>(t) * p.Hq + h0) * num_splits;  // partial index of (t, h0, split 0)
  float* ml = partials + static_cast<size_t>(p.T) * p.Hq * num_splits * D;  // [T, Hq, Z, 2]
  write_block_outputs<T, D, MAXG, STREAMS>(out_t, partials, ml, sm_o, sm_m, sm_l, ng, n_splits == 1, pi_h0,
                                           num_splits, split, kThreads);
  if (n_splits == 1) return;

  merge_splits_if_last<T, D>(out_t, partials, ml, pi_h0, num_splits, n_splits, ng,
                             counters + static_cast<size_t>(t) * gridDim.y + blockIdx.y);
}

template <typename T, typename C, int D, int MAXG>
void launch_decode_cache(T* out, const T* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                         const AttnParams& p, int num_splits, float* partials, int* counters, cudaStream_t stream) {
  using S = DecodeShape<C, D, MAXG>;
  const int head_chunks = (p.G + MAXG - 1) / MAXG;
  const dim3 grid(p.T - p.decode_t0, p.Hkv * head_chunks, num_splits);
  auto* kernel = attn_decode_kernel<T, C, D, MAXG>;
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), S::bytes);
  launch_pdl(kernel, grid, dim3(kThreads), S::bytes, stream, out, partials, counters, qkv, positions, slots,
             static_cast<const C*>(cache.k), static_cast<const C*>(cache.v), cache.block_tables, p, head_chunks);
  CUDA_CHECK_LAUNCH();
}

template <typename T, int D, int MAXG>
void launch_decode_typed(T* out, const T* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                         const AttnParams& p, int num_splits, float* partials, int* counters, cudaStream_t stream) {
  dispatch_kv_element<T>(p.kv_fp8, [&](auto tag) {
    using C = typename decltype(tag)::type;
    launch_decode_cache<T, C, D, MAXG>(out, qkv, positions, slots, cache, p, num_splits, partials, counters, stream);
  });
}

template <typename T, int D>
void launch_decode_d(T* out, const T* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                     const AttnParams& p, int num_splits, float* partials, int* counters, cudaStream_t stream) {
  if (p.G == 1) {
    launch_decode_typed<T, D, 1>(out, qkv, positions, slots, cache, p, num_splits, partials, counters, stream);
  } else if (p.G <= 4) {
    launch_decode_typed<T, D, 4>(out, qkv, positions, slots, cache, p, num_splits, partials, counters, stream);
  } else {  // G > 8 runs as several chunks of 8 q heads
    launch_decode_typed<T, D, 8>(out, qkv, positions, slots, cache, p, num_splits, partials, counters, stream);
  }
}

}  // namespace

bool attention_decode_supports(int head_dim) {
  return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128 || head_dim == 256;
}

void launch_attention_decode(DType dt, void* out, const void* qkv, const int32_t* positions, const int32_t* slots,
                             KVCacheLayer cache, const AttnParams& p, int num_splits, float* partials, int* counters,
                             cudaStream_t stream) {
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    auto* o = static_cast<E*>(out);
    auto* q = static_cast<const E*>(qkv);
    switch (p.head_dim) {
      case 16: return launch_decode_d<E, 16>(o, q, positions, slots, cache, p, num_splits, partials, counters, stream);
      case 32: return launch_decode_d<E, 32>(o, q, positions, slots, cache, p, num_splits, partials, counters, stream);
      case 64: return launch_decode_d<E, 64>(o, q, positions, slots, cache, p, num_splits, partials, counters, stream);
      case 128:
        return launch_decode_d<E, 128>(o, q, positions, slots, cache, p, num_splits, partials, counters, stream);
      case 256:
        return launch_decode_d<E, 256>(o, q, positions, slots, cache, p, num_splits, partials, counters, stream);
      default: fail("head_dim ", p.head_dim, " is not supported by the CUDA attention kernels (16, 32, 64, 128 or 256)");
    }
  });
}

}  // namespace lamina::cuda
