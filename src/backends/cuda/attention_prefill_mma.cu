// Prefill attention on the tensor cores (float16 / bfloat16), FlashAttention-2 style: mma.sync
// m16n8k16 with fp32 accumulation, ldmatrix fragment loads, cp.async double-buffered K/V tiles,
// and the online softmax kept in registers. Same tiles, "uniform tile" rule and results as the
// fp32 prefill kernel (attention_prefill.cu).
//
//   grid (Hq, ceil(T / 64)), 128 threads = 4 warps. A block: one q head x 64 consecutive tokens
//   (tiles with the most keys start first); warp w owns query rows 16w..16w+15. Per tile of 64
//   cache rows (K, V in shared memory, the next tile loading while this one is used):
//     S_w[16, 64] = Q_w[16, D] · K^T   Q fragments stay in registers for the whole block
//     mask         only where the tile reaches past the warp's first row position (causal diagonal,
//                  or the end of the keys); a key j is visible to row r iff j <= positions[r]
//     softmax      scores scaled into the exp2 domain; running max m and sum l per row, with
//                  each row spread over the 4 lanes of a quad (accumulator layout)
//     O_w[16, D]  = O_w * alpha + P_w · V   P goes from the S accumulators straight to A
//                  fragments (rounded to the activation dtype), never through shared memory
//   A warp skips a key tile past its last row's position. The output is staged through the
//   warp's own Q rows in shared memory for 16-byte stores.
// Shared memory: Q + 2 x K + 2 x V tiles of 64 rows, each row padded by 16 bytes so the eight
// row addresses of an ldmatrix land in distinct banks: 85 KB for head_dim 128, 45 KB for 64.
#include <cuda_runtime.h>

#include <type_traits>

#include "attention_common.cuh"
#include "cp_async.cuh"
#include "cuda_check.h"
#include "cuda_types.cuh"
#include "mma.cuh"
#include "mma_layout.h"

namespace lamina::cuda {
namespace {

constexpr int kBQ = kPrefillTileTokens, kBK = 64, kWarps = 4, kThreads = kWarps * 32;
static_assert(kBQ == 16 * kWarps, "a warp owns 16 query rows");

template <int D>
struct MmaSmem {
  static constexpr int kLd = D + 8;                          // elements per shared row (16 B padding)
  static constexpr size_t tile = size_t(64) * kLd * 2;       // bytes of one 64-row tile
  static constexpr size_t q = 0;                             // Q, later the output staging
  static constexpr size_t k = q + tile;                      // K stages 0, 1
  static constexpr size_t v = k + 2 * tile;                  // V stages 0, 1
  static constexpr size_t pos = v + 2 * tile;                // int[kBQ]: last visible key per row
  static constexpr size_t kv_len = pos + kBQ * 4;            // int: keys the tile reads
  static constexpr size_t bytes = kv_len + 16;
  static_assert(tile % 16 == 0 && (kLd * 2) % 16 == 0, "cp.async and ldmatrix need 16-byte rows");
};

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// 8 e4m3 cache elements (one 8-byte word; zeros decode to zeros) times scale, as 8 T in one
// 16-byte word.
template <typename T>
__device__ __forceinline__ uint4 fp8x8_to_t(uint2 raw, float scale) {
  float f[8];
  load8_kv(reinterpret_cast<const KvFp8*>(&raw), scale, f);
  return uint4{pack2<T>(f[0], f[1]), pack2<T>(f[2], f[3]), pack2<T>(f[4], f[5]), pack2<T>(f[6], f[7])};
}

// C: the cache's element type (T, or e4m3 for an FP8 cache, whose tiles are converted to T on the
// way into shared memory with plain loads instead of cp.async).
template <typename T, typename C, int D>
__global__ void __launch_bounds__(kThreads, 2)
    attn_prefill_mma_kernel(T* __restrict__ out, const T* __restrict__ qkv, const int32_t* __restrict__ positions,
                            const int32_t* __restrict__ slots, const C* __restrict__ k_cache,
                            const C* __restrict__ v_cache, const int32_t* __restrict__ block_tables, AttnParams p) {
  using L = MmaSmem<D>;
  constexpr int kLd = L::kLd;
  constexpr int CH = D / 8;   // 16-byte chunks per row
  constexpr int KD = D / 16;  // k-steps of Q·K^T; also pairs of 8-wide head-dim tiles of O
  constexpr int NT = kBK / 8;  // 8-key tiles of S
  static_assert((kBQ * CH) % kThreads == 0 && (16 * CH) % 32 == 0, "whole 16-byte chunks per thread");
  extern __shared__ __align__(128) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem + L::q);
  int* row_pos = reinterpret_cast<int*>(smem + L::pos);
  int* tile_kv_len = reinterpret_cast<int*>(smem + L::kv_len);

  const int h = blockIdx.x, kvh = h / p.G;
  const int tile = gridDim.y - 1 - blockIdx.y;  // later tiles (more keys) start first
  const int t0 = tile * kBQ, n = min(kBQ, p.T - t0);
  if (!tile_is_uniform(slots, t0, p.T)) return;  // the decode kernel takes this tile
  const int slot = slots[t0];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;

  if (tid == 0) *tile_kv_len = 0;
  __syncthreads();
  if (tid < kBQ) {
    const int len = tid < n ? token_kv_len(positions[t0 + tid], slot, p) : 0;
    row_pos[tid] = len - 1;  // -1: the row sees no key (absent or invalid token)
    atomicMax(tile_kv_len, len);
  }

  // Q tile (rows past n: zeros; their output is never written).
  const size_t row_elems = static_cast<size_t>(p.Hq + 2 * p.Hkv) * D;
  const T* q_src = qkv + static_cast<size_t>(t0) * row_elems + static_cast<size_t>(h) * D;
#pragma unroll
  for (int u = 0; u < kBQ * CH / kThreads; ++u) {
    const int i = tid + u * kThreads, r = i / CH, c = (i % CH) * 8;
    const bool ok = r < n;
    cp_async16(smem_u32(Qs + r * kLd + c), q_src + static_cast<size_t>(ok ? r : 0) * row_elems + c, ok);
  }
  cp_async_commit();
  __syncthreads();  // row_pos, tile_kv_len
  const int kv_len = *tile_kv_len;
  const int n_tiles = (kv_len + kBK - 1) / kBK;

  // K, V of positions kv0 .. kv0 + 63 into stage s, each from its pool row (kv_cache_row: paged KV);
  // positions at or past kv_len, or without a pool row, become zeros (they are masked, and zeros
  // keep P·V finite). kv_len > 0 means the sequence row is valid.
  const size_t pos_stride = static_cast<size_t>(p.Hkv) * D, head_off = static_cast<size_t>(kvh) * D;
  auto load_kv = [&](int it, int s) {
    const int kv0 = it * kBK;
    T* Ks = reinterpret_cast<T*>(smem + L::k + s * L::tile);
    T* Vs = reinterpret_cast<T*>(smem + L::v + s * L::tile);
    // Every block-table lookup first, then every copy: a lookup is a load, and a cp.async (an
    // asm with a memory clobber) between two lookups would serialise their latencies.
    constexpr int kPerThread = kBK * CH / kThreads;
    long long rows[kPerThread];
#pragma unroll
    for (int u = 0; u < kPerThread; ++u) {
      const int r = (tid + u * kThreads) / CH;
      rows[u] = kv0 + r < kv_len ? kv_cache_row(block_tables, slot, kv0 + r, p) : -1;
    }
    if constexpr (kIsFp8Kv<C>) {
      // Every 8-byte load first (their latencies overlap), then the conversions and 16-byte stores.
      uint2 k8[kPerThread], v8[kPerThread];
#pragma unroll
      for (int u = 0; u < kPerThread; ++u) {
        const int c = ((tid + u * kThreads) % CH) * 8;
        const size_t off = static_cast<size_t>(rows[u] >= 0 ? rows[u] : 0) * pos_stride + head_off + c;
        k8[u] = rows[u] >= 0 ? *reinterpret_cast<const uint2*>(k_cache + off) : uint2{};
        v8[u] = rows[u] >= 0 ? *reinterpret_cast<const uint2*>(v_cache + off) : uint2{};
      }
#pragma unroll
      for (int u = 0; u < kPerThread; ++u) {
        const int i = tid + u * kThreads, r = i / CH, c = (i % CH) * 8;
        *reinterpret_cast<uint4*>(Ks + r * kLd + c) = fp8x8_to_t<T>(k8[u], p.k_scale);
        *reinterpret_cast<uint4*>(Vs + r * kLd + c) = fp8x8_to_t<T>(v8[u], p.v_scale);
      }
    } else {
#pragma unroll
      for (int u = 0; u < kPerThread; ++u) {
        const int i = tid + u * kThreads, r = i / CH, c = (i % CH) * 8;
        const long long row = rows[u];
        const bool ok = row >= 0;
        const size_t off = static_cast<size_t>(ok ? row : 0) * pos_stride + head_off + c;
        cp_async16(smem_u32(Ks + r * kLd + c), k_cache + off, ok);
        cp_async16(smem_u32(Vs + r * kLd + c), v_cache + off, ok);
      }
    }
  };
  if (n_tiles > 0) load_kv(0, 0);
  cp_async_commit();
  cp_async_wait<1>();  // this thread's Q copies have landed
  __syncthreads();     // and everyone's

  uint32_t qf[KD][4];  // A fragments of Q_w, k-step kk = head dims 16kk..16kk+15
  {
    const mma_layout::RowCol a = mma_layout::a_x4(lane);
#pragma unroll
    for (int kk = 0; kk < KD; ++kk) ldmatrix_x4(qf[kk], smem_u32(Qs + (16 * warp + a.row) * kLd + 16 * kk + a.col));
  }

  // This lane's two rows: g (accumulator elements 0, 1) and g + 8 (elements 2, 3).
  const int g = lane / 4, quad = lane % 4;
  const int pos_lo = row_pos[16 * warp + g], pos_hi = row_pos[16 * warp + g + 8];
  int warp_max = max(pos_lo, pos_hi), warp_min = min(pos_lo, pos_hi);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    warp_max = max(warp_max, __shfl_xor_sync(0xffffffffu, warp_max, o));
    warp_min = min(warp_min, __shfl_xor_sync(0xffffffffu, warp_min, o));
  }

  float o_acc[2 * KD][4];  // O_w: 8-wide head-dim tile dt, accumulator layout
#pragma unroll
  for (int dt = 0; dt < 2 * KD; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) o_acc[dt][e] = 0.0f;
  float m_row[2] = {-INFINITY, -INFINITY};  // running max (exp2 domain), same in the 4 quad lanes
  float l_row[2] = {0.0f, 0.0f};            // this lane's part of the running sum (quad-summed at the end)
  const float scale = p.scale_log2;
  const mma_layout::RowCol kb = mma_layout::b_nk_x4(lane), vb = mma_layout::b_kn_trans_x4(lane);

  for (int it = 0; it < n_tiles; ++it) {
    // Stage (it + 1) & 1 was last read in iteration it - 1, which ended with a barrier.
    if (it + 1 < n_tiles) load_kv(it + 1, (it + 1) & 1);
    cp_async_commit();   // possibly empty: keeps one group per iteration
    cp_async_wait<1>();  // tile it has landed (only tile it + 1 may be in flight)
    __syncthreads();

    const int kv0 = it * kBK;
    if (kv0 <= warp_max) {  // warp-uniform: some row of this warp sees a key of the tile
      const T* Ks = reinterpret_cast<const T*>(smem + L::k + (it & 1) * L::tile);
      const T* Vs = reinterpret_cast<const T*>(smem + L::v + (it & 1) * L::tile);

      // S_w = Q_w · K^T: 8-key tile j in s[j].
      float s[NT][4];
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[j][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < KD; ++kk) {
#pragma unroll
        for (int np = 0; np < NT / 2; ++np) {
          uint32_t b[4];
          ldmatrix_x4(b, smem_u32(Ks + (16 * np + kb.row) * kLd + 16 * kk + kb.col));
          mma_16816<T>(s[2 * np], qf[kk], b[0], b[1]);
          mma_16816<T>(s[2 * np + 1], qf[kk], b[2], b[3]);
        }
      }

      // Causal mask, only where some key of the tile lies past a row's position.
      if (kv0 + kBK - 1 > warp_min) {
#pragma unroll
        for (int j = 0; j < NT; ++j)
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int key = kv0 + 8 * j + 2 * quad + (e & 1);
            if (key > (e < 2 ? pos_lo : pos_hi)) s[j][e] = -INFINITY;
          }
      }

      // Online softmax of both rows.
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        mx[0] = fmaxf(mx[0], fmaxf(s[j][0], s[j][1]));
        mx[1] = fmaxf(mx[1], fmaxf(s[j][2], s[j][3]));
      }
      float m_use[2], alpha[2];
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
        mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
        const float m_new = fmaxf(m_row[r], mx[r] * scale);
        // Nothing visible yet: subtract 0, so exp2(-inf) = 0 everywhere (no inf - inf).
        m_use[r] = m_new == -INFINITY ? 0.0f : m_new;
        alpha[r] = exp2f(m_row[r] - m_use[r]);
        m_row[r] = m_new;
      }
      float sum[2] = {0.0f, 0.0f};
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[j][e] = exp2f(fmaf(s[j][e], scale, -m_use[e >> 1]));
          sum[e >> 1] += s[j][e];
        }
#pragma unroll
      for (int r = 0; r < 2; ++r) l_row[r] = l_row[r] * alpha[r] + sum[r];
#pragma unroll
      for (int dt = 0; dt < 2 * KD; ++dt) {
        o_acc[dt][0] *= alpha[0];
        o_acc[dt][1] *= alpha[0];
        o_acc[dt][2] *= alpha[1];
        o_acc[dt][3] *= alpha[1];
      }

      // O_w += P_w · V. The A fragment of keys 16kk..16kk+15 is S tiles 2kk and 2kk + 1.
#pragma unroll
      for (int kk = 0; kk < kBK / 16; ++kk) {
        uint32_t pa[4];
        pa[0] = pack2<T>(s[2 * kk][0], s[2 * kk][1]);
        pa[1] = pack2<T>(s[2 * kk][2], s[2 * kk][3]);
        pa[2] = pack2<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
        pa[3] = pack2<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
        for (int dp = 0; dp < KD; ++dp) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, smem_u32(Vs + (16 * kk + vb.row) * kLd + 16 * dp + vb.col));
          mma_16816<T>(o_acc[2 * dp], pa, b[0], b[1]);
          mma_16816<T>(o_acc[2 * dp + 1], pa, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // every warp is done with stage it & 1 before iteration it + 1 refills it
  }

  // Normalise, stage the warp's 16 rows in its own Q rows (only this warp read them), store.
  float inv[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_row[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[r] = l > 0.0f ? 1.0f / l : 0.0f;  // no visible key (invalid token): zeros
  }
  T* Ow = Qs + 16 * warp * kLd;
#pragma unroll
  for (int dt = 0; dt < 2 * KD; ++dt) {
    const int c = 8 * dt + 2 * quad;
    *reinterpret_cast<uint32_t*>(Ow + g * kLd + c) = pack2<T>(o_acc[dt][0] * inv[0], o_acc[dt][1] * inv[0]);
    *reinterpret_cast<uint32_t*>(Ow + (g + 8) * kLd + c) = pack2<T>(o_acc[dt][2] * inv[1], o_acc[dt][3] * inv[1]);
  }
  __syncwarp();
#pragma unroll
  for (int u = 0; u < 16 * CH / 32; ++u) {
    const int i = lane + 32 * u, r = i / CH, c = (i % CH) * 8, row = 16 * warp + r;
    if (row < n)
      *reinterpret_cast<uint4*>(out + (static_cast<size_t>(t0 + row) * p.Hq + h) * D + c) =
          *reinterpret_cast<const uint4*>(Ow + r * kLd + c);
  }
}

template <typename T, typename C, int D>
void launch_mma_cache(void* out, const void* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                      const AttnParams& p, cudaStream_t stream) {
  constexpr size_t smem = MmaSmem<D>::bytes;
  auto* kernel = attn_prefill_mma_kernel<T, C, D>;
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
  const dim3 grid(p.Hq, p.prefill_tiles);
  kernel<<<grid, kThreads, smem, stream>>>(static_cast<T*>(out), static_cast<const T*>(qkv), positions, slots,
                                           static_cast<const C*>(cache.k), static_cast<const C*>(cache.v),
                                           cache.block_tables, p);
  CUDA_CHECK_LAUNCH();
}

template <typename T, int D>
void launch_mma(void* out, const void* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                const AttnParams& p, cudaStream_t stream) {
  dispatch_kv_element<T>(p.kv_fp8, [&](auto tag) {
    launch_mma_cache<T, typename decltype(tag)::type, D>(out, qkv, positions, slots, cache, p, stream);
  });
}

template <typename T>
void launch_mma_d(void* out, const void* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                  const AttnParams& p, cudaStream_t stream) {
  switch (p.head_dim) {
    case 64: return launch_mma<T, 64>(out, qkv, positions, slots, cache, p, stream);
    case 128: return launch_mma<T, 128>(out, qkv, positions, slots, cache, p, stream);
    default: fail("head_dim ", p.head_dim, " has no mma.sync prefill attention kernel (64 or 128)");
  }
}

}  // namespace

void launch_attention_prefill_mma(DType dt, void* out, const void* qkv, const int32_t* positions,
                                  const int32_t* slots, KVCacheLayer cache, const AttnParams& p, cudaStream_t stream) {
  if (dt == DType::F16) return launch_mma_d<__half>(out, qkv, positions, slots, cache, p, stream);
  if (dt == DType::BF16) return launch_mma_d<__nv_bfloat16>(out, qkv, positions, slots, cache, p, stream);
  fail("the mma.sync prefill attention runs in float16 or bfloat16, not ", dtype_user_name(dt));
}

}  // namespace lamina::cuda
