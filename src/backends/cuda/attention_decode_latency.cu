// Decode attention for a handful of tokens (batch-1 latency): split-K over the sequence with
// per-split lengths fixed at launch, then a separate reduce kernel. Measured on an H100 (bench_kernels,
// Llama-3-8B heads, paged bf16): 10.9 us at one token of 512 rows against 13.9 us for the
// pipelined kernel of attention_decode.cu, which wins from 16 tokens up (24 us against 57 us at
// 16 x 512); launch_attention picks between them by token count (kAttentionLatencyMaxTokens).
// Key j of a token is read from the pool row kv_cache_row(block_tables, seq row, j) (paged KV;
// attention_common.cuh).
//
//   grid (T, Hkv * head_chunks, num_splits), 128 threads. A block takes one token t, one kv head
//   and up to MAXG = 2 or 4 of the q heads that read it (heads_per_block; GQA: K/V rows are loaded
//   once for all of them; a group of 8, as Llama-3-70B's at any tp, runs as two chunks of 4: 6.6 us
//   at 512 rows against 11.0 for one block of 8, which also unrolled half as far; 10.4 against
//   17.6 at 2048; H200, 16 q / 2 kv heads, bench_kernels),
//   and one split of the token's rows, of latency_split_len(len, num_splits) rows (chosen here
//   from the token's own length, so graphs replay it); blocks past the token's rows exit at once.
//   Lanes: a key row of D elements is read by D/8 lanes, 8 elements (16 bytes for 16-bit types)
//   each, so a warp reads 32/(D/8) keys at once. Each group of lanes keeps an online softmax
//   (running max m, sum l, unnormalised output acc) per q head; the block merges them in shared
//   memory. With one split the block writes the output; otherwise it writes (acc, m, l) partials:
//   partials = o [T, Hq, num_splits, D] then ml [T, Hq, num_splits, 2], merged by the reduce kernel.
//   (Merging in the last block to finish, as the pipelined kernel does, measured slower here:
//   16.0 against 12.5 us at 512 rows.)
// Scores are in the exp2 domain (q pre-scaled by log2(e)/sqrt(D)); all softmax math is fp32.
#include <cuda_runtime.h>

#include "ab_switch.h"
#include "attention_common.cuh"
#include "cuda_check.h"
#include "cuda_types.cuh"
#include "l2_prefetch.cuh"
#include "pdl.cuh"

namespace lamina::cuda {
namespace {

constexpr int kWarps = 4, kThreads = kWarps * 32;
constexpr int kElems = 8;  // head dims per lane
// Keys per lane group loaded before any is used.
constexpr int kUnroll = 4;

template <typename T, typename C, int D, int MAXG>
__global__ void __launch_bounds__(kThreads)
    attn_decode_kernel(T* __restrict__ out, float* __restrict__ partials, const T* __restrict__ qkv,
                       const int32_t* __restrict__ positions, const int32_t* __restrict__ slots,
                       const C* __restrict__ k_cache, const C* __restrict__ v_cache,
                       const int32_t* __restrict__ block_tables, AttnParams p, int num_splits,
                       int head_chunks) {
  constexpr int LPK = D / kElems;        // lanes per key row
  constexpr int KPW = 32 / LPK;          // keys a warp reads at once
  constexpr int STREAMS = kWarps * KPW;  // lane groups, each with its own online softmax
  constexpr int U = kUnroll;
  __shared__ float sm_m[STREAMS * MAXG], sm_l[STREAMS * MAXG];  // [STREAMS][MAXG]
  __shared__ float sm_o[STREAMS * MAXG * D];                       // [STREAMS][MAXG][D]
  pdl_launch_dependents();  // the reduce (or the next projection) may launch and wait

  // With p.read_before_wait, what does not come from this step's kernels is read before the wait:
  // the step's positions, sequence rows and block tables, and the first U cache rows of this lane
  // group that predate the step (keys below pos - (T - 1)); they arrive while the qkv projection
  // before this kernel finishes.
  if (!p.read_before_wait) pdl_wait();
  DecodeBlock<T> b;
  if (!decode_block<T, D, MAXG>(b, out, positions, slots, p, head_chunks, kThreads, /*write_zeros=*/false)) {
    if (b.len == 0) {  // an invalid token: zeros, written once the output's earlier readers are done
      pdl_wait();
      write_decode_zeros<T, D>(b, kThreads);
    }
    return;
  }
  const int t = b.t, kvh = b.kvh, g0 = b.g0, ng = b.ng, split = b.split;
  const int pos = b.pos, slot = b.slot, len = b.len, h0 = b.h0;
  T* out_t = b.out_t;
  const int split_len = latency_split_len(len, num_splits);
  if (split * split_len >= len) return;  // no rows for this split: the reduce skips it
  const int start = split * split_len;
  const int end = min(len, start + split_len);
  const int old_end = min(end, pos - (p.T - 1));  // keys [start, old_end) predate this step

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int sub = lane / LPK, d0 = (lane % LPK) * kElems;
  const int stream_id = warp * KPW + sub;

  const size_t pos_stride = static_cast<size_t>(p.Hkv) * D;  // elements between pool rows
  const C* k_base = k_cache + static_cast<size_t>(kvh) * D + d0;
  const C* v_base = v_cache + static_cast<size_t>(kvh) * D + d0;
  // Key j = jb + u * (kWarps*KPW) + sub of a group of U; `fetched`: loaded already (valid says
  // whether it is a real row).
  float kf[U][kElems], vf[U][kElems];
  bool valid[U], fetched[U];
  auto load_keys = [&](int jb, int limit) {
    long long rows[U];  // the U lookups first, so their loads overlap
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int j = jb + u * kWarps * KPW + sub;
      rows[u] = !fetched[u] && j < limit ? kv_cache_row<true>(block_tables, slot, j, p) : -1;  // position j's pool row
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      if (fetched[u]) continue;
      const int j = jb + u * kWarps * KPW + sub;
      const long long row = rows[u];
      valid[u] = row >= 0;
      if (valid[u]) {  // through L2 only: see load8_kv
        load8_kv<true>(k_base + static_cast<size_t>(row) * pos_stride, p.k_scale, kf[u]);
        load8_kv<true>(v_base + static_cast<size_t>(row) * pos_stride, p.v_scale, vf[u]);
      } else {
#pragma unroll
        for (int e = 0; e < kElems; ++e) kf[u][e] = vf[u][e] = 0.0f;
      }
      fetched[u] = j < limit;
    }
  };
#pragma unroll
  for (int u = 0; u < U; ++u) fetched[u] = false;
  if (p.read_before_wait) load_keys(start + warp * KPW, old_end);  // the first group's rows of earlier steps

  pdl_wait();  // q and this step's cache rows come from the qkv projection (rope_kv_write)

  float q[MAXG][kElems], m[MAXG], l[MAXG], acc[MAXG][kElems];
  load_q_scaled<T, D, MAXG>(qkv, p, t, h0, ng, d0, q);
  init_softmax_state<MAXG>(m, l, acc);

  // Warp-uniform loop (the shuffles need every lane): key j = jb + u * (kWarps*KPW) + sub.
  for (int jb = start + warp * KPW; jb < end; jb += kWarps * KPW * U) {
    load_keys(jb, end);  // what the prefetch did not take (all of it after the first group)
#pragma unroll
    for (int u = 0; u < U; ++u) fetched[u] = false;
    // Per q head: the U scores, then one online-softmax update for all of them.
#pragma unroll
    for (int g = 0; g < MAXG; ++g) {
      float s[U];
#pragma unroll
      for (int u = 0; u < U; ++u) {
        float d = 0.0f;
#pragma unroll
        for (int e = 0; e < kElems; ++e) d = fmaf(q[g][e], kf[u][e], d);
#pragma unroll
        for (int o = LPK / 2; o > 0; o >>= 1) d += __shfl_xor_sync(0xffffffffu, d, o);
        s[u] = valid[u] ? d : -INFINITY;
      }
      if (g < ng) {
        float m_new = m[g];
#pragma unroll
        for (int u = 0; u < U; ++u) m_new = fmaxf(m_new, s[u]);
        if (m_new != -INFINITY) {  // else no valid key yet: nothing to add
          const float alpha = exp2f(m[g] - m_new);
          float pr[U], psum = 0.0f;
#pragma unroll
          for (int u = 0; u < U; ++u) psum += (pr[u] = exp2f(s[u] - m_new));
          l[g] = fmaf(l[g], alpha, psum);
#pragma unroll
          for (int e = 0; e < kElems; ++e) {
            float a = acc[g][e] * alpha;
#pragma unroll
            for (int u = 0; u < U; ++u) a = fmaf(pr[u], vf[u][e], a);
            acc[g][e] = a;
          }
          m[g] = m_new;
        }
      }
    }
  }

  // Merge the lane groups' states.
  store_lane_state<D, MAXG>(sm_o, sm_m, sm_l, stream_id, lane % LPK == 0, d0, m, l, acc);
  __syncthreads();
  float* ml = partials + static_cast<size_t>(p.T) * p.Hq * num_splits * D;  // [T, Hq, num_splits, 2]
  write_block_outputs<T, D, MAXG, STREAMS>(out_t, partials, ml, sm_o, sm_m, sm_l, ng, num_splits == 1,
                                           (static_cast<size_t>(t) * p.Hq + h0) * num_splits, num_splits, split,
                                           kThreads);
}

// out[t, h, :] = merge of the splits that cover token t's rows. grid (T, Hq), max(D, 32) threads
// (whole warps; threads d >= D idle). Thread d merges dim d on its own, kReduceChunk splits at a
// time: every load of a chunk (each split's (m, l) and its partial output at d) is issued before
// any is used, so a chunk costs one L2 round trip and no barrier; the running (M, L, O) is
// rescaled from chunk to chunk (one chunk holds up to 1024 rows at one token). This had read the
// (m, l) once for the max and again for the weights, each followed by a block reduction, before
// the outputs: three dependent round trips (H100, one token of Llama-3-8B heads, with the decode
// kernel: 6.5 / 6.8 us at 512 / 768 rows against 7.1 / 7.6; 9.5 against 8.8 at 1024). Reading
// the (m, l) one split a lane and passing the weights by warp shuffles measured slower (6.8 / 7.0).
template <int D>
inline constexpr int kReduceThreads = D < 32 ? 32 : D;
constexpr int kReduceChunk = 32;

template <typename T, int D>
__global__ void __launch_bounds__(kReduceThreads<D>)
    attn_split_reduce_kernel(T* __restrict__ out, const float* __restrict__ partials,
                             const int32_t* __restrict__ positions, const int32_t* __restrict__ slots, AttnParams p,
                             int num_splits, const char* __restrict__ prefetch, uint32_t prefetch_share) {
  pdl_launch_dependents();
  if (!p.read_before_wait) pdl_wait();  // else the step's inputs are read first (as the decode kernel)
  const int t = blockIdx.x, h = blockIdx.y, d = threadIdx.x;
  if (d >= D) return;
  if (p.prefill_takes_uniform_tiles && tile_is_uniform(slots, t, p.T)) return;
  const int len = token_kv_len(__ldcg(positions + t), __ldcg(slots + t), p);  // through L2: pdl.cuh
  if (len == 0) return;  // zeros were written by the decode kernel
  pdl_wait();  // the partials come from the decode kernel
  // The decode kernel has ended and this one reads from L2 only: DRAM is idle until the
  // attention-out GEMV after it, whose first weights it asks L2 for meanwhile (l2_prefetch.cuh).
  l2_prefetch_block_share(prefetch, prefetch_share, blockIdx.x * gridDim.y + blockIdx.y);
  const int split_len = latency_split_len(len, num_splits);
  const int n = (len + split_len - 1) / split_len;
  const size_t pi0 = (static_cast<size_t>(t) * p.Hq + h) * num_splits;
  // [n] of (m, l): 8-byte aligned (every offset before it is even)
  const float2* ml = reinterpret_cast<const float2*>(partials + static_cast<size_t>(p.T) * p.Hq * num_splits * D) + pi0;
  const float* part = partials + pi0 * D + d;
  float M = -INFINITY, L = 0.0f, O = 0.0f;
  for (int s0 = 0; s0 < n; s0 += kReduceChunk) {
    float2 mlc[kReduceChunk];
    float oc[kReduceChunk];
#pragma unroll
    for (int i = 0; i < kReduceChunk; ++i) {  // through L2: pdl.cuh
      const bool in = s0 + i < n;
      mlc[i] = in ? __ldcg(ml + s0 + i) : make_float2(-INFINITY, 0.0f);
      oc[i] = in ? __ldcg(part + static_cast<size_t>(s0 + i) * D) : 0.0f;
    }
    float cm = M;  // every split has rows, so the first chunk makes it finite
#pragma unroll
    for (int i = 0; i < kReduceChunk; ++i) cm = fmaxf(cm, mlc[i].x);
    const float rescale = exp2f(M - cm);  // 0 for the first chunk
    L *= rescale;
    O *= rescale;
#pragma unroll
    for (int i = 0; i < kReduceChunk; ++i) {
      const float w = exp2f(mlc[i].x - cm);
      L = fmaf(mlc[i].y, w, L);
      O = fmaf(oc[i], w, O);
    }
    M = cm;
  }
  out[(static_cast<size_t>(t) * p.Hq + h) * D + d] = from_float<T>(O / L);
}
template <typename T, int D, int MAXG>
void launch_decode_typed(T* out, const T* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                         const AttnParams& p, int num_splits, float* partials, L2Prefetch next, cudaStream_t stream) {
  const int head_chunks = (p.G + MAXG - 1) / MAXG;
  const dim3 grid(p.T, p.Hkv * head_chunks, num_splits);
  dispatch_kv_element<T>(p.kv_fp8, [&](auto tag) {
    using C = typename decltype(tag)::type;
    launch_pdl(attn_decode_kernel<T, C, D, MAXG>, grid, dim3(kThreads), 0, stream, out, partials, qkv, positions, slots,
               static_cast<const C*>(cache.k), static_cast<const C*>(cache.v), cache.block_tables, p, num_splits,
               head_chunks);
  });
  CUDA_CHECK_LAUNCH();
  if (num_splits > 1) {
    const uint32_t share = l2_prefetch_share(next.p, next.bytes, static_cast<long long>(p.T) * p.Hq,
                                             attention_l2_prefetch_cap());
    launch_pdl(attn_split_reduce_kernel<T, D>, dim3(p.T, p.Hq), dim3(kReduceThreads<D>), 0, stream, out, partials,
               positions, slots, p, num_splits, static_cast<const char*>(next.p), share);
    CUDA_CHECK_LAUNCH();
  }
}

// The most q heads of a kv head a block takes (MAXG). Fewer make more blocks, each a shorter chain
// of dependent loads (the kernel is latency-bound at one token), but every block re-reads its K/V
// rows (from L2). bench_kernels, one H200, one token, µs at 512 / 768 / 1024 rows:
//   16 q / 4 kv heads (8B at tp 2): 2 heads a block 4.8 / 5.1 / 5.3, 4 heads 5.9 / 6.1 / 6.3, 1 head 5.3 / 7.1 / 9.0;
//   32 q / 8 kv heads (8B at tp 1): 4 heads 6.4 / 6.7 / 9.3, 2 heads 5.4 / 8.3 / 10.2 (13.1 against 17.3 at 2048).
// So 2 heads a block where the step then has at most 8 blocks a split (T × Hkv × head chunks),
// else 4. LAMINA_ATTN_HEADS_PER_BLOCK=1|2|4 sets it (A/B).
int heads_per_block(const AttnParams& p) {
  static const int forced = env_choice("LAMINA_ATTN_HEADS_PER_BLOCK", {1, 2, 4}, 0);
  if (p.G == 1) return 1;
  if (forced != 0) return forced;
  const long long blocks_with_two = static_cast<long long>(p.T) * p.Hkv * ((p.G + 1) / 2);
  return blocks_with_two <= 8 ? 2 : 4;
}

template <typename T, int D>
void launch_decode_d(T* out, const T* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                     const AttnParams& p, int num_splits, float* partials, L2Prefetch next, cudaStream_t stream) {
  switch (heads_per_block(p)) {
    case 1: return launch_decode_typed<T, D, 1>(out, qkv, positions, slots, cache, p, num_splits, partials, next, stream);
    case 2: return launch_decode_typed<T, D, 2>(out, qkv, positions, slots, cache, p, num_splits, partials, next, stream);
    default:  // G > 4 runs as several chunks of 4 q heads
      return launch_decode_typed<T, D, 4>(out, qkv, positions, slots, cache, p, num_splits, partials, next, stream);
  }
}

}  // namespace


void launch_attention_decode_latency(DType dt, void* out, const void* qkv, const int32_t* positions, const int32_t* slots,
                             KVCacheLayer cache, const AttnParams& p, int num_splits, float* partials,
                             L2Prefetch next, cudaStream_t stream) {
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    auto* o = static_cast<E*>(out);
    auto* q = static_cast<const E*>(qkv);
    switch (p.head_dim) {
      case 16: return launch_decode_d<E, 16>(o, q, positions, slots, cache, p, num_splits, partials, next, stream);
      case 32: return launch_decode_d<E, 32>(o, q, positions, slots, cache, p, num_splits, partials, next, stream);
      case 64: return launch_decode_d<E, 64>(o, q, positions, slots, cache, p, num_splits, partials, next, stream);
      case 128: return launch_decode_d<E, 128>(o, q, positions, slots, cache, p, num_splits, partials, next, stream);
      case 256: return launch_decode_d<E, 256>(o, q, positions, slots, cache, p, num_splits, partials, next, stream);
      default: fail("head_dim ", p.head_dim, " is not supported by the CUDA attention kernels (16, 32, 64, 128 or 256)");
    }
  });
}

}  // namespace lamina::cuda
