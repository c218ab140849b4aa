// Prefill attention on the tensor cores (float16 / bfloat16) with WMMA, flash-attention style.
// Superseded by attention_prefill_mma.cu; kept, unused by the ops, as the baseline that
// bench/bench_kernels times the mma.sync kernel against (remove it once that comparison is recorded).
// Same tiles, same "uniform tile" rule and same results as attention_prefill.cu (fp32 kernel).
//
//   grid (ceil(T / 64), Hq), 128 threads = 4 warps. A block: 64 consecutive tokens x one q head;
//   warp w owns query rows 16w..16w+15. Per tile of 64 positions (K, V copied raw to shared from
//   their pool rows, kv_cache_row: paged KV):
//     S_w[16, 64]  = Q_w[16, D] · K^T        wmma m16n16k16, fp32 accumulate -> shared (fp32)
//     softmax      2 lanes a row (32 columns each): scale, causal mask, online max/sum in fp32,
//                  P_w = exp2(S - m) stored as T, O rows rescaled by alpha
//     PV_w[16, D]  = P_w[16, 64] · V[64, D]   wmma, fp32 -> shared scratch, added to O
//   O lives in registers: lane (r = lane / 2, half = lane % 2) holds row r, dims half*D/2 ...
//   A warp skips the key tiles past its last row's position (causal).
#include <cuda_runtime.h>
#include <mma.h>


#include "attention_common.cuh"
#include "cuda_check.h"
#include "cuda_types.cuh"

namespace lamina::cuda {
namespace {

namespace wmma = nvcuda::wmma;

constexpr int kBQ = kPrefillTileTokens, kBK = 64, kWarps = 4, kThreads = kWarps * 32;
static_assert(kBQ == 16 * kWarps, "a warp owns 16 query rows");

template <int D>
struct TcSmem {
  static constexpr int kLdT = D + 8;                             // Q, K, V rows (elements of T)
  static constexpr int kLdS = (D > kBK ? D : kBK) + 4;          // fp32 scratch rows
  static constexpr int kLdP = kBK + 8;                           // P rows (elements of T)
  static constexpr size_t q = 0;                                 // [kBQ][kLdT] T
  static constexpr size_t k = q + size_t(kBQ) * kLdT * 2;        // [kBK][kLdT] T
  static constexpr size_t v = k + size_t(kBK) * kLdT * 2;        // [kBK][kLdT] T
  static constexpr size_t s = v + size_t(kBK) * kLdT * 2;        // [kWarps][16][kLdS] float
  static constexpr size_t p = s + size_t(kWarps) * 16 * kLdS * 4;  // [kWarps][16][kLdP] T
  static constexpr size_t pos = p + size_t(kWarps) * 16 * kLdP * 2;  // [kBQ] int
  static constexpr size_t kv_len = pos + kBQ * 4;                     // int
  static constexpr size_t bytes = kv_len + 16;
  static_assert(k % 128 == 0 && v % 128 == 0 && s % 128 == 0 && p % 128 == 0, "wmma tiles need aligned bases");
};

// Copies rows [0, n) of a [64, D] tile (row r at src(r)) into dst rows of ld elements; zero rows
// after, and for rows whose src(r) is null (no pool row).
template <typename T, int D, typename RowPtr>
__device__ __forceinline__ void copy_tile(T* dst, int ld, int n, RowPtr src) {
  constexpr int CH = D / 8;  // 16-byte chunks per row
  for (int i = threadIdx.x; i < 64 * CH; i += kThreads) {
    const int r = i / CH, c = (i % CH) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    const T* row = r < n ? src(r) : nullptr;
    if (row != nullptr) v = *reinterpret_cast<const uint4*>(row + c);
    *reinterpret_cast<uint4*>(dst + r * ld + c) = v;
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    attn_prefill_tc_kernel(T* __restrict__ out, const T* __restrict__ qkv, const int32_t* __restrict__ positions,
                           const int32_t* __restrict__ slots, const T* __restrict__ k_cache,
                           const T* __restrict__ v_cache, const int32_t* __restrict__ block_tables, AttnParams p) {
  using L = TcSmem<D>;
  constexpr int HALF = D / 2;
  extern __shared__ __align__(128) unsigned char smem[];
  T* Qs = reinterpret_cast<T*>(smem + L::q);
  T* Ks = reinterpret_cast<T*>(smem + L::k);
  T* Vs = reinterpret_cast<T*>(smem + L::v);
  int* row_pos = reinterpret_cast<int*>(smem + L::pos);
  int& tile_kv_len = *reinterpret_cast<int*>(smem + L::kv_len);  // no static shared: smem starts aligned

  const int tile = gridDim.x - 1 - blockIdx.x;
  const int h = blockIdx.y, kvh = h / p.G;
  const int t0 = tile * kBQ, n = min(kBQ, p.T - t0);
  if (!tile_is_uniform(slots, t0, p.T)) return;  // the decode kernel takes this tile
  const int slot = slots[t0];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  float* Sw = reinterpret_cast<float*>(smem + L::s) + warp * 16 * L::kLdS;
  T* Pw = reinterpret_cast<T*>(smem + L::p) + warp * 16 * L::kLdP;

  if (tid == 0) tile_kv_len = 0;
  __syncthreads();
  if (tid < kBQ) {
    const int len = tid < n ? token_kv_len(positions[t0 + tid], slot, p) : 0;
    row_pos[tid] = len - 1;
    atomicMax(&tile_kv_len, len);
  }
  const size_t row_elems = static_cast<size_t>(p.Hq + 2 * p.Hkv) * D;
  const T* q_base = qkv + static_cast<size_t>(t0) * row_elems + static_cast<size_t>(h) * D;
  copy_tile<T, D>(Qs, L::kLdT, n, [&](int r) { return q_base + r * row_elems; });
  __syncthreads();
  const int kv_len = tile_kv_len;

  const int r = lane / 2, half = lane % 2;  // softmax / output layout
  const int my_pos = row_pos[16 * warp + r];
  int warp_last = my_pos;  // last key any row of this warp sees
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) warp_last = max(warp_last, __shfl_xor_sync(0xffffffffu, warp_last, o));

  float o_acc[HALF];
#pragma unroll
  for (int i = 0; i < HALF; ++i) o_acc[i] = 0.0f;
  float m_row = -INFINITY, l_row = 0.0f;

  const size_t pos_stride = static_cast<size_t>(p.Hkv) * D;
  const size_t head_off = static_cast<size_t>(kvh) * D;
  for (int kv0 = 0; kv0 < kv_len; kv0 += kBK) {
    const int nk = min(kBK, kv_len - kv0);
    // Key j of this tile (position kv0 + j) sits in pool row kv_cache_row(...) (paged KV).
    auto k_row = [&](int j) -> const T* {
      const long long row = kv_cache_row(block_tables, slot, kv0 + j, p);
      return row < 0 ? nullptr : k_cache + static_cast<size_t>(row) * pos_stride + head_off;
    };
    auto v_row = [&](int j) -> const T* {
      const long long row = kv_cache_row(block_tables, slot, kv0 + j, p);
      return row < 0 ? nullptr : v_cache + static_cast<size_t>(row) * pos_stride + head_off;
    };
    __syncthreads();  // every warp is done with the previous K, V
    copy_tile<T, D>(Ks, L::kLdT, nk, k_row);
    copy_tile<T, D>(Vs, L::kLdT, nk, v_row);
    __syncthreads();
    if (kv0 > warp_last) continue;  // warp-uniform: nothing visible to this warp's rows

    // S_w = Q_w K^T
    {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> s_acc[kBK / 16];
#pragma unroll
      for (int j = 0; j < kBK / 16; ++j) wmma::fill_fragment(s_acc[j], 0.0f);
#pragma unroll
      for (int k0 = 0; k0 < D; k0 += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::load_matrix_sync(a, Qs + 16 * warp * L::kLdT + k0, L::kLdT);
#pragma unroll
        for (int j = 0; j < kBK / 16; ++j) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> b;  // b[k][n] = K[16j + n][k0 + k]
          wmma::load_matrix_sync(b, Ks + 16 * j * L::kLdT + k0, L::kLdT);
          wmma::mma_sync(s_acc[j], a, b, s_acc[j]);
        }
      }
#pragma unroll
      for (int j = 0; j < kBK / 16; ++j) wmma::store_matrix_sync(Sw + 16 * j, s_acc[j], L::kLdS, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax of row r, columns half*32 .. half*32+31.
    {
      float s[32];
      float mx = -INFINITY;
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        const int c = half * 32 + i;
        s[i] = kv0 + c <= my_pos ? Sw[r * L::kLdS + c] * p.scale_log2 : -INFINITY;
        mx = fmaxf(mx, s[i]);
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      const float m_new = fmaxf(m_row, mx);
      float alpha = 1.0f, sum = 0.0f;
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        const float pr = m_new == -INFINITY ? 0.0f : exp2f(s[i] - m_new);
        sum += pr;
        Pw[r * L::kLdP + half * 32 + i] = from_float<T>(pr);
      }
      if (m_new != -INFINITY) alpha = exp2f(m_row - m_new);
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      l_row = l_row * alpha + sum;
      m_row = m_new;
#pragma unroll
      for (int i = 0; i < HALF; ++i) o_acc[i] *= alpha;
    }
    __syncwarp();

    // PV_w = P_w V -> scratch (Sw is free again), then added to the registers.
#pragma unroll
    for (int n0 = 0; n0 < D; n0 += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      wmma::fill_fragment(acc, 0.0f);
#pragma unroll
      for (int k0 = 0; k0 < kBK; k0 += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::row_major> b;
        wmma::load_matrix_sync(a, Pw + k0, L::kLdP);
        wmma::load_matrix_sync(b, Vs + k0 * L::kLdT + n0, L::kLdT);
        wmma::mma_sync(acc, a, b, acc);
      }
      wmma::store_matrix_sync(Sw + n0, acc, L::kLdS, wmma::mem_row_major);
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < HALF; ++i) o_acc[i] += Sw[r * L::kLdS + half * HALF + i];
    __syncwarp();  // Sw is rewritten by the next tile's S
  }

  const int row = 16 * warp + r;
  if (row < n) {
    const float inv = l_row > 0.0f ? 1.0f / l_row : 0.0f;  // no visible key (invalid token): zeros
    T* dst = out + (static_cast<size_t>(t0 + row) * p.Hq + h) * D + half * HALF;
#pragma unroll
    for (int i = 0; i < HALF; i += 8) {
      float v[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) v[e] = o_acc[i + e] * inv;
      store_vec(dst + i, v);
    }
  }
}

template <typename T, int D>
void launch_tc(T* out, const T* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
               const AttnParams& p, cudaStream_t stream) {
  constexpr size_t smem = TcSmem<D>::bytes;
  auto* kernel = attn_prefill_tc_kernel<T, D>;
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
  const dim3 grid((p.T + kBQ - 1) / kBQ, p.Hq);
  kernel<<<grid, kThreads, smem, stream>>>(out, qkv, positions, slots, static_cast<const T*>(cache.k),
                                           static_cast<const T*>(cache.v), cache.block_tables, p);
  CUDA_CHECK_LAUNCH();
}

template <typename T>
void launch_tc_d(void* out, const void* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                 const AttnParams& p, cudaStream_t stream) {
  auto* o = static_cast<T*>(out);
  auto* q = static_cast<const T*>(qkv);
  switch (p.head_dim) {
    case 64: return launch_tc<T, 64>(o, q, positions, slots, cache, p, stream);
    case 128: return launch_tc<T, 128>(o, q, positions, slots, cache, p, stream);
    default: fail("head_dim ", p.head_dim, " has no tensor-core prefill attention kernel (64 or 128)");
  }
}

}  // namespace

void launch_attention_prefill_tc(DType dt, void* out, const void* qkv, const int32_t* positions,
                                 const int32_t* slots, KVCacheLayer cache, const AttnParams& p, cudaStream_t stream) {
  if (dt == DType::F16) return launch_tc_d<__half>(out, qkv, positions, slots, cache, p, stream);
  if (dt == DType::BF16) return launch_tc_d<__nv_bfloat16>(out, qkv, positions, slots, cache, p, stream);
  fail("the tensor-core prefill attention runs in float16 or bfloat16, not ", dtype_user_name(dt));
}

}  // namespace lamina::cuda
