// Decode attention over an FP8 (e4m3) KV cache for serving batches, its K and V rows staged in
// shared memory by the copy engine (cp.async.bulk) rather than held in registers: the tensor-core
// kernel (attention_decode_mma.cu) keeps a warp's next group in flight in registers (166 of them
// a thread), so few warps fit an SM and its FP8 case reads at ~60-70 % of the copy bandwidth in a
// serving run. Here the bytes in flight cost no registers.
//
//   Hkv warps a block: warp w takes kv head w of the block's token and its G q heads, over all
//   of the token's cache rows. Keys go in groups of 16 (one KV block holds a group:
//   tokens_per_block >= 16), a ring of kStages slots:
//     producer  (warp 0, besides its consumer's work) looks up 32 groups' first pool rows at once
//               (a lane each); fills the ring's slots first, then refills slot i % kStages with
//               group i + kStages once every consumer has read group i: its lanes copy the
//               group's 16 K rows and 16 V rows ([Hkv, D] bytes each, contiguous in the pool)
//               into the slot, one bulk copy a lane, completing on the slot's `full` barrier
//     consumer  waits on `full`, reads its head's slices of the 16 rows into the mma fragment
//               registers (mma_layout.h's decode_* maps), frees the slot (`empty` barrier) and
//               computes the group as the tensor-core kernel does (attention_decode_group.cuh)
//   Shared rows are Hkv * D + 16 bytes apart, so the 8 lanes of a quarter warp read 8 distinct
//   bank groups for K (rows g, g + 1 at dims 32q..) and V (rows 2q.. at dims 16g..).
//   A warp ends with its heads' whole softmax and writes o / l: no split, no merge.
//   The grid is as many blocks as fit at once, each taking every gridDim.x-th token in turn: the
//   producer runs on into the next token's groups while the consumers finish this one.
//   Why warp 0 copies rather than a warp of its own (LAMINA_ATTN_BULK_CONSUMER_COPIES=0): an SM's
//   4 schedulers hold 16 K registers each, and a block of 9 warps puts 3 on one of them, so at 112
//   registers a thread one such block fit an SM (Nsight Compute: 9 warps an SM, each issuing every
//   7.5 cycles; the kernel's rate grew with the SMs it had, ~18-21 GB/s each). Blocks of 8 warps
//   fit two an SM at 128 registers, their ~100 KB of shared memory each in the largest carve-out.
// Used where each SM gets at least 2 tokens (attention.cu); LAMINA_ATTN_BULK=0 turns it off.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <string>

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

constexpr int kD = 128;          // head_dim
constexpr int kHeads = 8;        // q heads a kv head at most: the mma's n
constexpr int kGroupKeys = 16;   // keys a group: the mma's m
constexpr int kMaxKvHeads = 8;   // consumer warps a block at most
constexpr int kRowPad = 16;      // bytes after each shared row: consecutive rows start 4 banks apart

// ---- mbarrier and bulk copy (sm_90) ----
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count));
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "wait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
}
// bytes (a multiple of 16) from global src to shared dst (both 16-byte aligned), completing on bar.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
          smem_addr(dst)),
      "l"(src), "r"(bytes), "r"(smem_addr(bar))
      : "memory");
}

// Shared memory of a block: kStages slots of [K rows 16][V rows 16], rows row_stride bytes apart,
// then the barriers and each slot's count of valid rows.
struct BulkLayout {
  int row_stride;   // Hkv * D + kRowPad
  int slot_bytes;   // 2 * 16 * row_stride
  int stages;
  __host__ __device__ int barriers_offset() const { return stages * slot_bytes; }
  __host__ __device__ int bytes() const { return barriers_offset() + stages * (2 * 8 + 8); }
};

// Whether the 64-token prefill tile holding token t has all its tokens in one sequence row (the
// prefill kernel then takes it): tile_is_uniform for one warp, without a block barrier.
__device__ __forceinline__ bool tile_is_uniform_warp(const int32_t* slots, int t, int T) {
  const int base = t / kPrefillTileTokens * kPrefillTileTokens;
  const int n = min(T - base, kPrefillTileTokens);
  const int first = __ldcg(slots + base);
  bool same = true;
  for (int i = threadIdx.x % 32; i < n; i += 32) same = same && __ldcg(slots + base + i) == first;
  return __all_sync(0xffffffffu, same);
}

// A token of the step as each warp of a block sees it: its position, sequence row and rows to
// read; skip: the prefill kernel's (a uniform tile).
struct BulkToken {
  int t, pos, seq, len;
  bool skip;
};
__device__ __forceinline__ BulkToken bulk_token(const int32_t* positions, const int32_t* slots, int t,
                                                const AttnParams& p) {
  BulkToken k{t, 0, 0, 0, p.prefill_takes_uniform_tiles && tile_is_uniform_warp(slots, t, p.T)};
  if (k.skip) return k;
  k.pos = __ldcg(positions + t);
  k.seq = __ldcg(slots + t);
  k.len = token_kv_len(k.pos, k.seq, p);
  return k;
}

// The producer's walk over the block's (token, group) sequence: tokens blockIdx.x, + gridDim.x, ...
// and each token's groups in turn, one group a call of issue_next. Every warp of the block walks
// the same sequence, so the ring's slot and phase (from the count of groups so far) agree.
struct GroupCursor {
  int tk, i = 0, n_groups = -1, seq = 0, len = 0;  // n_groups -1: before the first token
  long long lane_base = -1;  // lane j: the first pool row of group (i / 32) * 32 + j
};

// Copies the cursor's next group into slot s (free: its last group was read) and advances; false
// (nothing issued) past the block's last token. Called by one whole warp.
template <int kStages>
__device__ __forceinline__ bool issue_next(GroupCursor& c, int s, int tokens, uint8_t* smem, const BulkLayout& lay,
                                           uint64_t* full, int* valid_rows, const int32_t* positions,
                                           const int32_t* slots, const uint8_t* k_cache, const uint8_t* v_cache,
                                           const int32_t* block_tables, const AttnParams& p) {
  const int lane = threadIdx.x % 32;
  while (c.i >= c.n_groups) {  // on to the next token with groups
    if (c.n_groups >= 0) c.tk += gridDim.x;
    if (c.tk >= tokens) return false;
    const BulkToken k = bulk_token(positions, slots, p.decode_t0 + c.tk, p);
    c.i = 0, c.seq = k.seq, c.len = k.len;
    c.n_groups = k.skip ? 0 : (k.len + kGroupKeys - 1) / kGroupKeys;
  }
  if (c.i % 32 == 0) {  // the next 32 groups' first pool rows, a lane each
    const int gi = c.i + lane;
    c.lane_base = gi < c.n_groups ? kv_cache_row(block_tables, c.seq, gi * kGroupKeys, p) : -1;
  }
  const long long base = __shfl_sync(0xffffffffu, c.lane_base, c.i % 32);
  const int row_bytes = p.Hkv * kD;
  const int n_valid = base < 0 ? 0 : min(kGroupKeys, c.len - c.i * kGroupKeys);
  if (lane == 0) {
    valid_rows[s] = n_valid;
    mbar_arrive_expect_tx(&full[s], static_cast<uint32_t>(2 * n_valid * row_bytes));
  }
  __syncwarp();
  const int r = lane % kGroupKeys;  // lanes 0-15: K rows, 16-31: V rows
  if (r < n_valid) {
    const uint8_t* src = (lane < kGroupKeys ? k_cache : v_cache) + static_cast<size_t>(base + r) * row_bytes;
    uint8_t* dst = smem + s * lay.slot_bytes + (lane / kGroupKeys) * kGroupKeys * lay.row_stride + r * lay.row_stride;
    bulk_copy(dst, src, static_cast<uint32_t>(row_bytes), &full[s]);
  }
  ++c.i;
  return true;
}

// kProducerWarp: warp Hkv only copies (the ring's producer, (Hkv + 1) warps a block); otherwise
// consumer warp 0 also copies: after every consumer has read group n from slot s it refills s
// with group n + kStages (Hkv warps a block, so two blocks of 8 warps fit an SM's register file
// where two of 9 do not: an SM's 4 schedulers hold 16 K registers each and a 9-warp block puts 3
// warps on one of them).
template <typename T, int kStages, bool kProducerWarp>
__device__ __forceinline__ void attn_decode_bulk(T* __restrict__ out, const T* __restrict__ qkv,
                                                 const int32_t* __restrict__ positions,
                                                 const int32_t* __restrict__ slots, const uint8_t* __restrict__ k_cache,
                                                 const uint8_t* __restrict__ v_cache,
                                                 const int32_t* __restrict__ block_tables, const AttnParams& p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
  __trap();  // never launched there (attention_decode_bulk_supports asks for compute capability 9)
#else
  extern __shared__ __align__(128) uint8_t smem[];
  const int row_bytes = p.Hkv * kD;
  const BulkLayout lay{row_bytes + kRowPad, 2 * kGroupKeys * (row_bytes + kRowPad), kStages};
  auto* full = reinterpret_cast<uint64_t*>(smem + lay.barriers_offset());
  uint64_t* empty = full + kStages;
  auto* valid_rows = reinterpret_cast<int*>(empty + kStages);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int consumers = p.Hkv;
  const int tokens = p.T - p.decode_t0;

  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);
      mbar_init(&empty[s], consumers);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  pdl_launch_dependents();  // the next projection may launch and wait
  pdl_wait();               // q and the cache rows come from rope_kv_write

  // Tokens blockIdx.x, + gridDim.x, ...: the producer streams one token's groups after the last
  // one's, so a token's start-up (its inputs, block table) hides behind the tokens before it.
  GroupCursor cursor{static_cast<int>(blockIdx.x)};
  if constexpr (kProducerWarp) {
    if (warp == consumers) {  // ---- producer ----
      for (int n = 0;; ++n) {
        const int s = n % kStages;
        mbar_wait(&empty[s], ((n / kStages) & 1) ^ 1);  // the slot's last group was read (free at first)
        if (!issue_next<kStages>(cursor, s, tokens, smem, lay, full, valid_rows, positions, slots, k_cache, v_cache,
                                 block_tables, p))
          break;
      }
      return;
    }
  } else if (warp == 0) {  // the ring starts full
    for (int s = 0; s < kStages; ++s)
      if (!issue_next<kStages>(cursor, s, tokens, smem, lay, full, valid_rows, positions, slots, k_cache, v_cache,
                               block_tables, p))
        break;
  }

  // ---- consumer: kv head `warp`, q heads h0 .. h0 + G - 1 ----
  using Shape = MmaDecodeShape<T, KvFp8, kD>;
  using Group = GroupRegs<Shape::KWORDS, Shape::VWORDS>;
  const int g = lane / 4, q = lane % 4;
  const int kvh = warp, h0 = kvh * p.G, ng = min(p.G, kHeads);
  const float score_scale = p.scale_log2 * p.k_scale;
  const int k_col = kvh * kD + ml::decode_k_first(kD, q);  // byte of the lane's K slice in a row
  const int v_col = kvh * kD + ml::decode_v_first(kD, g);
  const int k_key[2] = {g, g + 8}, v_key[4] = {2 * q, 2 * q + 1, 2 * q + 8, 2 * q + 9};
  int n = 0;
#pragma unroll 1
  for (int tk = blockIdx.x; tk < tokens; tk += gridDim.x) {
    const BulkToken k = bulk_token(positions, slots, p.decode_t0 + tk, p);
    if (k.skip) continue;
    if (k.len == 0) {  // an invalid token: zeros
      T* out_h0 = out + (static_cast<size_t>(k.t) * p.Hq + h0) * kD;  // out[t, h0 .. h0 + G)
      for (int i = lane; i < ng * kD; i += 32) out_h0[i] = from_float<T>(0.0f);
      continue;
    }
    // Q^T as B fragments (float16, clamped to its range): head h0 + g at the lane's K dims.
    uint32_t qb[kD / 16][2];
    load_q_fragments<T, KvFp8, kD>(
        qb, g < ng ? qkv + static_cast<size_t>(k.t) * (p.Hq + 2 * p.Hkv) * kD + static_cast<size_t>(h0 + g) * kD : nullptr,
        q);

    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    float o[kD / 16][4];
#pragma unroll
    for (int mt = 0; mt < kD / 16; ++mt)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[mt][e] = 0.0f;

    const int n_groups = (k.len + kGroupKeys - 1) / kGroupKeys;
#pragma unroll 1
    for (int i = 0; i < n_groups; ++i, ++n) {
      const int s = n % kStages;
      mbar_wait(&full[s], (n / kStages) & 1);
      const uint8_t* slot = smem + s * lay.slot_bytes;
      Group r;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const uint4* src = reinterpret_cast<const uint4*>(slot + k_key[h] * lay.row_stride + k_col);
#pragma unroll
        for (int c = 0; c < Shape::KWORDS / 4; ++c) {
          const uint4 x = src[c];
          r.k[h][4 * c] = x.x, r.k[h][4 * c + 1] = x.y, r.k[h][4 * c + 2] = x.z, r.k[h][4 * c + 3] = x.w;
        }
      }
#pragma unroll
      for (int h = 0; h < 4; ++h) {
        const uint4 x = *reinterpret_cast<const uint4*>(slot + (kGroupKeys + v_key[h]) * lay.row_stride + v_col);
        r.v[h][0] = x.x, r.v[h][1] = x.y, r.v[h][2] = x.z, r.v[h][3] = x.w;
      }
      const int n_valid = valid_rows[s];
      __syncwarp();
      if (lane == 0) mbar_arrive(&empty[s]);  // the producer may refill the slot
      if (!kProducerWarp && warp == 0) {  // once every consumer has read the slot: its group n + kStages
        mbar_wait(&empty[s], (n / kStages) & 1);
        issue_next<kStages>(cursor, s, tokens, smem, lay, full, valid_rows, positions, slots, k_cache, v_cache,
                            block_tables, p);
      }
      // Rows past the token's end or without a pool row were not copied: masked.
      r.partial = n_valid < kGroupKeys;
      r.ok = 0;
#pragma unroll
      for (int h = 0; h < 2; ++h) r.ok |= (k_key[h] < n_valid ? 1u : 0u) << h;
#pragma unroll
      for (int h = 0; h < 4; ++h) r.ok |= (v_key[h] < n_valid ? 1u : 0u) << (2 + h);
      mma_decode_group<T, KvFp8, kD>(r, qb, score_scale, m, l, o);
    }

    // out[t, h0 + head, dim] = o * v_scale / l: lane (g, q) holds heads 2q, 2q + 1 at dims
    // decode_v_first(D, g) + 2mt, + 1 (elements e >> 1 of o[mt]), stored as pairs.
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int x = 4; x < 32; x <<= 1) l[h] += __shfl_xor_sync(0xffffffffu, l[h], x);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int head = 2 * q + h;
      if (head >= ng) continue;
      const float f = p.v_scale / l[h];
      T* row = out + (static_cast<size_t>(k.t) * p.Hq + h0 + head) * kD + ml::decode_v_first(kD, g);
#pragma unroll
      for (int mt = 0; mt < kD / 16; ++mt)
        *reinterpret_cast<uint32_t*>(row + ml::decode_v_elem(mt, 0)) = pack2<T>(o[mt][h] * f, o[mt][2 + h] * f);
    }
  }
#endif
}

// Consumer warp 0 also copies: Hkv warps a block, two blocks an SM at 8 kv heads (128 registers).
template <typename T, int kStages>
__global__ void __launch_bounds__(kMaxKvHeads * 32, 2)
    attn_decode_bulk_kernel(T* __restrict__ out, const T* __restrict__ qkv, const int32_t* __restrict__ positions,
                            const int32_t* __restrict__ slots, const uint8_t* __restrict__ k_cache,
                            const uint8_t* __restrict__ v_cache, const int32_t* __restrict__ block_tables,
                            AttnParams p) {
  attn_decode_bulk<T, kStages, false>(out, qkv, positions, slots, k_cache, v_cache, block_tables, p);
}

// A warp of its own for the copies (LAMINA_ATTN_BULK_CONSUMER_COPIES=0): Hkv + 1 warps a block, one
// block an SM at 8 kv heads (measured: 9 warps at 112 registers, 1 block an SM by registers).
template <typename T, int kStages>
__global__ void __maxnreg__(112)
    attn_decode_bulk_producer_warp_kernel(T* __restrict__ out, const T* __restrict__ qkv,
                                          const int32_t* __restrict__ positions, const int32_t* __restrict__ slots,
                                          const uint8_t* __restrict__ k_cache, const uint8_t* __restrict__ v_cache,
                                          const int32_t* __restrict__ block_tables, AttnParams p) {
  attn_decode_bulk<T, kStages, true>(out, qkv, positions, slots, k_cache, v_cache, block_tables, p);
}

// Slots in the ring: LAMINA_ATTN_BULK_STAGES=2, 3 or 4 (tuning); 3 by default.
int bulk_stages() {
  static const int stages = env_choice("LAMINA_ATTN_BULK_STAGES", {2, 3, 4}, 3);
  return stages;
}

std::atomic<int> max_sms_cap{0};  // set_attention_decode_bulk_max_sms

template <typename T, int kStages>
void launch_stages(void* out, const void* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                   const AttnParams& p, int num_sms, cudaStream_t stream) {
  const int row_bytes = p.Hkv * kD;
  const BulkLayout lay{row_bytes + kRowPad, 2 * kGroupKeys * (row_bytes + kRowPad), kStages};
  const size_t smem = static_cast<size_t>(lay.bytes());
  static const bool producer_warp = !ab_switch_on("LAMINA_ATTN_BULK_CONSUMER_COPIES");
  const auto kernel = producer_warp ? attn_decode_bulk_producer_warp_kernel<T, kStages> : attn_decode_bulk_kernel<T, kStages>;
  const int threads = (p.Hkv + (producer_warp ? 1 : 0)) * 32;
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem, /*max_carveout=*/true);  // 2 blocks an SM
  // As many blocks as fit at once (2 an SM at 8 kv heads), each walking every gridDim.x-th token;
  // LAMINA_ATTN_BULK_PERSISTENT=0: a block a token.
  static const bool persistent = ab_switch_on("LAMINA_ATTN_BULK_PERSISTENT");
  const int tokens = p.T - p.decode_t0;
  int blocks = tokens;
  if (persistent) {
    static std::atomic<int> per_sm_by_heads[kMaxKvHeads + 1];  // of `kernel`; 0: not asked yet
    std::atomic<int>& cached = per_sm_by_heads[p.Hkv];
    int per_sm = cached.load(std::memory_order_relaxed);
    if (per_sm == 0) {
      CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
      per_sm = std::max(1, per_sm);
      cached.store(per_sm, std::memory_order_relaxed);
    }
    const int cap = max_sms_cap.load(std::memory_order_relaxed);
    blocks = std::min(tokens, per_sm * (cap > 0 ? std::min(cap, num_sms) : num_sms));
  }
  launch_pdl(kernel, dim3(blocks), dim3(threads), smem, stream, static_cast<T*>(out), static_cast<const T*>(qkv),
             positions, slots, static_cast<const uint8_t*>(cache.k), static_cast<const uint8_t*>(cache.v),
             cache.block_tables, p);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_t(void* out, const void* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
              const AttnParams& p, int num_sms, cudaStream_t stream) {
  switch (bulk_stages()) {
    case 2: return launch_stages<T, 2>(out, qkv, positions, slots, cache, p, num_sms, stream);
    case 4: return launch_stages<T, 4>(out, qkv, positions, slots, cache, p, num_sms, stream);
    default: return launch_stages<T, 3>(out, qkv, positions, slots, cache, p, num_sms, stream);
  }
}

}  // namespace

void set_attention_decode_bulk_max_sms(int sms) { max_sms_cap.store(std::max(0, sms), std::memory_order_relaxed); }

bool attention_decode_bulk_supports(DType dt, const AttnParams& p, int cc_major) {
  static const bool on = ab_switch_on("LAMINA_ATTN_BULK");
  return on && cc_major >= 9 && (dt == DType::F16 || dt == DType::BF16) && p.kv_fp8 && p.head_dim == kD &&
         p.Hkv >= 1 && p.Hkv <= kMaxKvHeads && p.G >= 2 && p.G <= kHeads && p.tokens_per_block >= kGroupKeys;
}

void launch_attention_decode_bulk(DType dt, void* out, const void* qkv, const int32_t* positions,
                                  const int32_t* slots, KVCacheLayer cache, const AttnParams& p, int num_sms,
                                  cudaStream_t stream) {
  LAMINA_CHECK(p.kv_fp8 && p.head_dim == kD && p.Hkv <= kMaxKvHeads && p.G <= kHeads &&
                   p.tokens_per_block >= kGroupKeys && (dt == DType::F16 || dt == DType::BF16),
               "the bulk-copy decode attention takes an FP8 cache, 16-bit activations, head_dim 128, up to 8 kv "
               "heads of up to 8 q heads and KV blocks of 16+ rows");
  if (dt == DType::F16) return launch_t<__half>(out, qkv, positions, slots, cache, p, num_sms, stream);
  launch_t<__nv_bfloat16>(out, qkv, positions, slots, cache, p, num_sms, stream);
}

}  // namespace lamina::cuda
