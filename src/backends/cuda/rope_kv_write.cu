// Rotary position embedding (NeoX rotate-half) of q and k in place, fused with the KV-cache write
// (in the activation type, or e4m3 over the layer's scale for an FP8 KV cache).
//   qkv[T, (Hq + 2*Hkv) * D]: per token, Hq q heads, then Hkv k heads, then Hkv v heads.
//   For dims i < D/2 of each q/k head: (x_i, x_{i+D/2}) rotated by angle positions[t] * inv_freq[i].
//   Rotated k and v go to the pool row kv_cache_row(block_tables, slots[t], positions[t])
//   of cache.{k,v} ([num_blocks, tokens_per_block, Hkv, D]; slots[t] is the block-table row).
// One block per token. The angles are computed once per token in double precision (as the CPU
// reference does) so large positions keep their accuracy. A token whose position or slot is
// or block is outside the cache writes nothing to it (there is no error channel from inside a
// kernel; the host checks the tables before the step).
#include <cuda_runtime.h>

#include "attention_common.cuh"
#include "cuda_check.h"
#include "cuda_types.cuh"
#include "kernels.h"
#include "pdl.cuh"

namespace lamina::cuda {
namespace {

constexpr int kMaxHalf = 256;  // head_dim up to 512

// V = element pairs per access (kVec<T> when D/2 is a multiple of it, else 1). C = the cache's
// element type (T, or e4m3 for an FP8 cache: attention_common.cuh's store_kv).
template <typename T, typename C, int V>
__global__ void rope_kv_write_kernel(T* __restrict__ qkv, const int32_t* __restrict__ positions,
                                     const int32_t* __restrict__ slots, const float* __restrict__ inv_freq,
                                     C* __restrict__ k_cache, C* __restrict__ v_cache,
                                     const int32_t* __restrict__ block_tables, AttnParams p) {
  const int Hq = p.Hq, Hkv = p.Hkv, D = p.head_dim;
  __shared__ float cos_s[kMaxHalf], sin_s[kMaxHalf];
  pdl_launch_dependents();
  pdl_wait();  // qkv comes from the projection
  const int t = blockIdx.x, half = D / 2;
  const int pos = positions[t], slot = slots[t];
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    double s, c;
    sincos(static_cast<double>(pos) * static_cast<double>(inv_freq[i]), &s, &c);
    cos_s[i] = static_cast<float>(c);
    sin_s[i] = static_cast<float>(s);
  }
  __syncthreads();

  const long long row = kv_cache_row(block_tables, slot, pos, p);
  const bool write_cache = row >= 0;
  T* tok = qkv + static_cast<size_t>(t) * (Hq + 2 * Hkv) * D;
  const size_t cache_row = static_cast<size_t>(write_cache ? row : 0) * Hkv * D;  // pool row [row, :, :]
  const int rot_per_head = half / V, rot_items = (Hq + Hkv) * rot_per_head;
  const int v_per_head = D / V, items = rot_items + Hkv * v_per_head;

  for (int it = threadIdx.x; it < items; it += blockDim.x) {
    if (it < rot_items) {
      // Rotate pairs i..i+V-1 of head h (q heads 0..Hq-1, then k heads).
      const int h = it / rot_per_head, i = (it % rot_per_head) * V;
      T* lo = tok + static_cast<size_t>(h) * D + i;
      T* hi = lo + half;
      float x0[V], x1[V];
      if constexpr (V > 1) {
        load_vec(lo, x0);
        load_vec(hi, x1);
      } else {
        x0[0] = to_float(*lo);
        x1[0] = to_float(*hi);
      }
#pragma unroll
      for (int k = 0; k < V; ++k) {
        const float c = cos_s[i + k], s = sin_s[i + k];
        const float a = x0[k], b = x1[k];
        x0[k] = a * c - b * s;
        x1[k] = b * c + a * s;
      }
      if constexpr (V > 1) {
        store_vec(lo, x0);
        store_vec(hi, x1);
      } else {
        *lo = from_float<T>(x0[0]);
        *hi = from_float<T>(x1[0]);
      }
      if (h >= Hq && write_cache) {  // a k head: the rotated values go to the cache too
        C* dst = k_cache + cache_row + static_cast<size_t>(h - Hq) * D + i;
        store_kv<C, V>(dst, x0, p.k_scale);
        store_kv<C, V>(dst + half, x1, p.k_scale);
      }
    } else if (write_cache) {
      // Copy elements j..j+V-1 of v head h (v is not rotated).
      const int r = it - rot_items, h = r / v_per_head, j = (r % v_per_head) * V;
      const T* src = tok + static_cast<size_t>(Hq + Hkv + h) * D + j;
      C* dst = v_cache + cache_row + static_cast<size_t>(h) * D + j;
      if constexpr (std::is_same_v<C, T> && V > 1) {
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(src);
      } else if constexpr (std::is_same_v<C, T>) {
        *dst = *src;
      } else {
        float x[V];
        if constexpr (V > 1) {
          load_vec(src, x);
        } else {
          x[0] = to_float(*src);
        }
        store_kv<C, V>(dst, x, p.v_scale);
      }
    }
  }
}

template <typename E, typename C>
void launch_typed(void* qkv, const int32_t* positions, const int32_t* slots, const float* inv_freq,
                  const KVCacheLayer& cache, const AttnParams& p, int T, cudaStream_t stream) {
  constexpr int V = kVec<E>;
  auto* q = static_cast<E*>(qkv);
  auto* kc = static_cast<C*>(cache.k);
  auto* vc = static_cast<C*>(cache.v);
  const bool vec = (p.head_dim / 2) % V == 0 && is_aligned16(q) && is_aligned16(kc) && is_aligned16(vc);
  const int threads = 128;
  if (vec) {
    launch_pdl(rope_kv_write_kernel<E, C, V>, dim3(T), dim3(threads), 0, stream, q, positions, slots, inv_freq, kc, vc,
               cache.block_tables, p);
  } else {
    launch_pdl(rope_kv_write_kernel<E, C, 1>, dim3(T), dim3(threads), 0, stream, q, positions, slots, inv_freq, kc, vc,
               cache.block_tables, p);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch_rope_kv_write(DType dt, void* qkv, const int32_t* positions, const int32_t* slots, const float* inv_freq,
                          KVCacheLayer cache, const AttentionShape& s, int T, cudaStream_t stream) {
  if (T <= 0) return;
  LAMINA_CHECK(cache.block_tables != nullptr && s.tokens_per_block > 0 && s.max_blocks_per_seq > 0,
               "rope_kv_write needs the KV block tables and their shape");
  LAMINA_CHECK(s.head_dim % 2 == 0 && s.head_dim / 2 <= kMaxHalf, "head_dim ", s.head_dim,
               " is not supported by the CUDA rope kernel (even, at most ", 2 * kMaxHalf, ")");
  const AttnParams p = make_attn_params(s, T, cache);
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    dispatch_kv_element<E>(p.kv_fp8, [&](auto kv_tag) {
      launch_typed<E, typename decltype(kv_tag)::type>(qkv, positions, slots, inv_freq, cache, p, T, stream);
    });
  });
}

}  // namespace lamina::cuda
