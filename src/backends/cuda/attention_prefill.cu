// Prefill attention: many query tokens of one sequence, flash-attention style (tiled, online
// softmax, no [T, T] score matrix in memory). This is the fp32 kernel (CUDA cores); float16 and
// bfloat16 go to the tensor-core kernel of attention_prefill_mma.cu.
//
//   grid (ceil(T / 64), Hq), 256 threads. A block takes a tile of 64 consecutive tokens and one q
//   head. Only tiles whose tokens all sit in one sequence are taken ("uniform"); the decode kernel
//   handles the tokens of the other tiles (see attention.cu). The block walks the positions
//   0..max(positions in tile) in tiles of 64 keys, each key read from its pool row
//   (kv_cache_row: paged KV):
//     S[64 q, 64 k] = Qs · Ks^T           (each thread a 4x4 block: rows ty+16i, cols tx+16j)
//     causal mask: key j is visible to row r iff j <= positions[r]
//     online softmax per row (4 threads a row): m, l, rescale factor alpha
//     O[64, D] = O * alpha + P · Vs        (each thread rows ty+16i, dims tx*4 + 64jj + e)
//   Q, K, V tiles are converted to fp32 in shared memory; all math is fp32 on the CUDA cores.
//   Shared rows are padded by 4 floats so the 16-byte reads of a quarter-warp hit distinct banks.
#include <cuda_runtime.h>


#include "attention_common.cuh"
#include "cuda_check.h"
#include "cuda_types.cuh"

namespace lamina::cuda {
namespace {

constexpr int kBQ = kPrefillTileTokens, kBK = 64, kThreads = 256;
static_assert(kBQ == 64 && kBK == 64 && kThreads == 256, "the thread layout below assumes 64x64 tiles, 256 threads");

template <int D>
struct PrefillSmem {
  static constexpr int kQK = D + 4;   // padded row of Qs, Ks
  static constexpr int kP = kBK + 4;  // padded row of Ps
  static constexpr size_t bytes =
      sizeof(float) * (size_t(kBQ) * kQK + size_t(kBK) * kQK + size_t(kBK) * D + size_t(kBQ) * kP + 2 * kBQ) +
      sizeof(int) * kBQ;
};

// Loads rows [0, n) of a [rows, D] tile whose row r starts at src(r); rows >= n, and rows whose
// src(r) is null (no pool row), become zeros.
template <typename T, int D, int STRIDE, typename RowPtr>
__device__ __forceinline__ void load_tile(float* dst, int n, float scale, RowPtr src) {
  constexpr int V = kVec<T>, CHUNKS = D / V;
  for (int i = threadIdx.x; i < 64 * CHUNKS; i += kThreads) {
    const int r = i / CHUNKS, c = (i % CHUNKS) * V;
    float v[V];
    const T* row = r < n ? src(r) : nullptr;
    if (row != nullptr) {
      load_vec(row + c, v);
    } else {
#pragma unroll
      for (int k = 0; k < V; ++k) v[k] = 0.0f;
    }
#pragma unroll
    for (int k = 0; k < V; k += 4)
      *reinterpret_cast<float4*>(dst + r * STRIDE + c + k) =
          make_float4(v[k] * scale, v[k + 1] * scale, v[k + 2] * scale, v[k + 3] * scale);
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads)
    attn_prefill_kernel(T* __restrict__ out, const T* __restrict__ qkv, const int32_t* __restrict__ positions,
                        const int32_t* __restrict__ slots, const T* __restrict__ k_cache,
                        const T* __restrict__ v_cache, const int32_t* __restrict__ block_tables, AttnParams p) {
  using S = PrefillSmem<D>;
  constexpr int NJ = D / 64;  // output column groups per thread
  extern __shared__ float4 smem_raw[];
  float* Qs = reinterpret_cast<float*>(smem_raw);  // [kBQ][kQK], pre-scaled q
  float* Ks = Qs + kBQ * S::kQK;                    // [kBK][kQK]
  float* Vs = Ks + kBK * S::kQK;                    // [kBK][D]
  float* Ps = Vs + kBK * D;                         // [kBQ][kP]: scores, then probabilities
  float* row_alpha = Ps + kBQ * S::kP;              // [kBQ]
  float* row_l = row_alpha + kBQ;                   // [kBQ]
  int* row_pos = reinterpret_cast<int*>(row_l + kBQ);  // [kBQ]: last visible key, -1 for none
  __shared__ int tile_kv_len;

  const int tile = gridDim.x - 1 - blockIdx.x;  // later tiles (longer rows) start first
  const int h = blockIdx.y, kvh = h / p.G;
  const int t0 = tile * kBQ, n = min(kBQ, p.T - t0);
  if (!tile_is_uniform(slots, t0, p.T)) return;  // the decode kernel takes this tile
  const int slot = slots[t0];

  const int tid = threadIdx.x;
  if (tid == 0) tile_kv_len = 0;
  __syncthreads();
  if (tid < kBQ) {
    const int len = tid < n ? token_kv_len(positions[t0 + tid], slot, p) : 0;
    row_pos[tid] = len - 1;
    atomicMax(&tile_kv_len, len);
  }
  const size_t row_elems = static_cast<size_t>(p.Hq + 2 * p.Hkv) * D;
  const T* q_base = qkv + static_cast<size_t>(t0) * row_elems + static_cast<size_t>(h) * D;
  load_tile<T, D, S::kQK>(Qs, n, p.scale_log2, [&](int r) { return q_base + r * row_elems; });
  __syncthreads();
  const int kv_len = tile_kv_len;

  const int tx = tid % 16, ty = tid / 16;  // matmul layout
  const int sr = tid / 4, sp = tid % 4;    // softmax layout: row sr, columns sp + 4c
  float m_row = -INFINITY, l_row = 0.0f;   // softmax state of row sr (same in its 4 threads)
  float o[4][NJ][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int jj = 0; jj < NJ; ++jj)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[i][jj][e] = 0.0f;

  const size_t pos_stride = static_cast<size_t>(p.Hkv) * D;
  const size_t head_off = static_cast<size_t>(kvh) * D;
  for (int kv0 = 0; kv0 < kv_len; kv0 += kBK) {
    const int nk = min(kBK, kv_len - kv0);
    // Key r of this tile (position kv0 + r) sits in pool row kv_cache_row(...) (paged KV).
    auto k_row = [&](int r) -> const T* {
      const long long row = kv_cache_row(block_tables, slot, kv0 + r, p);
      return row < 0 ? nullptr : k_cache + static_cast<size_t>(row) * pos_stride + head_off;
    };
    auto v_row = [&](int r) -> const T* {
      const long long row = kv_cache_row(block_tables, slot, kv0 + r, p);
      return row < 0 ? nullptr : v_cache + static_cast<size_t>(row) * pos_stride + head_off;
    };
    __syncthreads();  // the previous tile's Ks, Vs, Ps are no longer read
    load_tile<T, D, S::kQK>(Ks, nk, 1.0f, k_row);
    load_tile<T, D, D>(Vs, nk, 1.0f, v_row);
    __syncthreads();

    // S = Q K^T for rows ty+16i, keys tx+16j; masked entries -inf.
    {
      float s[4][4] = {};
#pragma unroll 4
      for (int d = 0; d < D; d += 4) {
        float4 qv[4], kv[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) qv[i] = *reinterpret_cast<const float4*>(Qs + (ty + 16 * i) * S::kQK + d);
#pragma unroll
        for (int j = 0; j < 4; ++j) kv[j] = *reinterpret_cast<const float4*>(Ks + (tx + 16 * j) * S::kQK + d);
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            s[i][j] = fmaf(qv[i].x, kv[j].x, s[i][j]);
            s[i][j] = fmaf(qv[i].y, kv[j].y, s[i][j]);
            s[i][j] = fmaf(qv[i].z, kv[j].z, s[i][j]);
            s[i][j] = fmaf(qv[i].w, kv[j].w, s[i][j]);
          }
      }
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int r = ty + 16 * i;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int c = tx + 16 * j;
          Ps[r * S::kP + c] = kv0 + c <= row_pos[r] ? s[i][j] : -INFINITY;
        }
      }
    }
    __syncthreads();

    // Online softmax of row sr over this tile's 64 scores (columns sp + 4c).
    {
      float* prow = Ps + sr * S::kP;
      float mx = -INFINITY;
#pragma unroll
      for (int c = 0; c < 16; ++c) mx = fmaxf(mx, prow[sp + 4 * c]);
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m_row, mx);
      float alpha = 1.0f, sum = 0.0f;
      if (m_new != -INFINITY) {  // else: nothing visible yet; p = 0 everywhere
        alpha = exp2f(m_row - m_new);
#pragma unroll
        for (int c = 0; c < 16; ++c) {
          const float pr = exp2f(prow[sp + 4 * c] - m_new);
          prow[sp + 4 * c] = pr;
          sum += pr;
        }
      } else {
#pragma unroll
        for (int c = 0; c < 16; ++c) prow[sp + 4 * c] = 0.0f;
      }
      sum += __shfl_xor_sync(0xffffffffu, sum, 1);
      sum += __shfl_xor_sync(0xffffffffu, sum, 2);
      l_row = l_row * alpha + sum;
      m_row = m_new;
      if (sp == 0) row_alpha[sr] = alpha;
    }
    __syncthreads();

    // O = O * alpha + P V for rows ty+16i, dims tx*4 + 64jj.
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float a = row_alpha[ty + 16 * i];
#pragma unroll
      for (int jj = 0; jj < NJ; ++jj)
#pragma unroll
        for (int e = 0; e < 4; ++e) o[i][jj][e] *= a;
    }
#pragma unroll 2
    for (int c = 0; c < kBK; c += 4) {
      float4 pv[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) pv[i] = *reinterpret_cast<const float4*>(Ps + (ty + 16 * i) * S::kP + c);
#pragma unroll
      for (int cc = 0; cc < 4; ++cc) {
#pragma unroll
        for (int jj = 0; jj < NJ; ++jj) {
          const float4 v = *reinterpret_cast<const float4*>(Vs + (c + cc) * D + tx * 4 + 64 * jj);
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            const float pr = cc == 0 ? pv[i].x : cc == 1 ? pv[i].y : cc == 2 ? pv[i].z : pv[i].w;
            o[i][jj][0] = fmaf(pr, v.x, o[i][jj][0]);
            o[i][jj][1] = fmaf(pr, v.y, o[i][jj][1]);
            o[i][jj][2] = fmaf(pr, v.z, o[i][jj][2]);
            o[i][jj][3] = fmaf(pr, v.w, o[i][jj][3]);
          }
        }
      }
    }
  }

  if (sp == 0) row_l[sr] = l_row;
  __syncthreads();
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = ty + 16 * i;
    if (r >= n) continue;
    const float l = row_l[r];
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // rows with no visible key (invalid token): zeros
    T* dst = out + (static_cast<size_t>(t0 + r) * p.Hq + h) * D + tx * 4;
#pragma unroll
    for (int jj = 0; jj < NJ; ++jj)
#pragma unroll
      for (int e = 0; e < 4; ++e) dst[64 * jj + e] = from_float<T>(o[i][jj][e] * inv);
  }
}

template <typename T, int D>
void launch_prefill_typed(T* out, const T* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                          const AttnParams& p, cudaStream_t stream) {
  constexpr size_t smem = PrefillSmem<D>::bytes;
  auto* kernel = attn_prefill_kernel<T, D>;
  allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
  const dim3 grid(p.prefill_tiles, p.Hq);
  kernel<<<grid, kThreads, smem, stream>>>(out, qkv, positions, slots, static_cast<const T*>(cache.k),
                                           static_cast<const T*>(cache.v), cache.block_tables, p);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

bool attention_prefill_supports(int head_dim) { return head_dim == 64 || head_dim == 128; }

void launch_attention_prefill(DType dt, void* out, const void* qkv, const int32_t* positions, const int32_t* slots,
                              KVCacheLayer cache, const AttnParams& p, cudaStream_t stream) {
  if (dt != DType::F32) return launch_attention_prefill_mma(dt, out, qkv, positions, slots, cache, p, stream);
  LAMINA_CHECK(!p.kv_fp8, "an FP8 KV cache needs float16 or bfloat16 activations");
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    auto* o = static_cast<E*>(out);
    auto* q = static_cast<const E*>(qkv);
    switch (p.head_dim) {
      case 64: return launch_prefill_typed<E, 64>(o, q, positions, slots, cache, p, stream);
      case 128: return launch_prefill_typed<E, 128>(o, q, positions, slots, cache, p, stream);
      default: fail("head_dim ", p.head_dim, " has no CUDA prefill attention kernel (64 or 128)");
    }
  });
}

}  // namespace lamina::cuda
