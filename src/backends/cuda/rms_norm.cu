// RMSNorm and the residual stream: out = x / sqrt(mean(x^2) + eps) * w, optionally fused with the
// residual add that precedes every norm in the Llama block (residual += x; out = norm(residual)).
// One block per token row; sums of squares in fp32; 16-byte accesses when H and the pointers allow.
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_check.h"
#include "cuda_types.cuh"
#include "e4m3_store.cuh"
#include "kernels.h"
#include "pdl.cuh"
#include "reduce.cuh"
#include "rms_norm_shape.h"

namespace lamina::cuda {
namespace {

// V = elements per access (kVec<T> or 1). With kAdd: residual[t] += x[t] first (the rounded sum is
// stored and normalized, exactly what a later reader of residual sees), then out[t] = norm(residual[t]).
// Without kAdd: out[t] = norm(x[t]) and residual is unused.
template <typename T, int V, bool kAdd>
__global__ void rms_norm_kernel(T* __restrict__ out, T* __restrict__ residual, const T* __restrict__ x,
                                const T* __restrict__ w, int H, float eps) {
  __shared__ float scratch[32];
  pdl_launch_dependents();  // the next GEMV may start streaming its weights now
  pdl_wait();
  const size_t row = static_cast<size_t>(blockIdx.x) * H;
  const T* src = kAdd ? residual + row : x + row;
  float ss = 0.0f;
  for (int c = threadIdx.x * V; c < H; c += blockDim.x * V) {
    float v[V];
    if constexpr (V > 1) {
      load_vec(src + c, v);
    } else {
      v[0] = to_float(src[c]);
    }
    if constexpr (kAdd) {
      float a[V];
      if constexpr (V > 1) {
        load_vec(x + row + c, a);
      } else {
        a[0] = to_float(x[row + c]);
      }
      // Round the sum to T and square the rounded value: it is what the residual now holds.
#pragma unroll
      for (int i = 0; i < V; ++i) v[i] = to_float(from_float<T>(v[i] + a[i]));
      if constexpr (V > 1) {
        store_vec(residual + row + c, v);
      } else {
        residual[row + c] = from_float<T>(v[0]);
      }
    }
#pragma unroll
    for (int i = 0; i < V; ++i) ss += v[i] * v[i];
  }
  const float inv = rsqrtf(block_sum(ss, scratch) / static_cast<float>(H) + eps);
  // Second pass re-reads the row (this thread's own elements: L1/L2 hits, no barrier needed).
  for (int c = threadIdx.x * V; c < H; c += blockDim.x * V) {
    float v[V], g[V];
    if constexpr (V > 1) {
      load_vec(src + c, v);
      load_vec_ro(w + c, g);
    } else {
      v[0] = to_float(src[c]);
      g[0] = to_float(w[c]);
    }
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] = v[i] * inv * g[i];
    if constexpr (V > 1) {
      store_vec(out + row + c, v);
    } else {
      out[row + c] = from_float<T>(v[0]);
    }
  }
}

// The same for rows of at most one vector a thread (H <= blockDim.x * V, e.g. H = 4096 in bf16
// with 512 threads): x, the residual and w are all requested before the reduction and the row
// stays in registers, so a decode step's norm makes one round trip to memory instead of three.
// kQuant: the output row is also quantized for the FP8 GEMM, as launch_quantize_fp8_per_token
// would quantize it (the same bits): xq [T, H] e4m3 of out / scale, scales[t] = max|out[t, :]| / 448;
// out may then be nullptr (only xq and the scales are written).
template <typename T, int V, bool kAdd, bool kQuant = false>
__global__ void rms_norm_row_in_registers_kernel(T* __restrict__ out, T* __restrict__ residual,
                                                 const T* __restrict__ x, const T* __restrict__ w, int H,
                                                 float eps, __nv_fp8_e4m3* __restrict__ xq,
                                                 float* __restrict__ scales) {
  __shared__ float scratch[32];
  pdl_launch_dependents();
  const int c = threadIdx.x * V;
  const bool mine = c < H;
  float g[V] = {};
  if (mine) load_vec_ro(w + c, g);  // a weight: no earlier kernel writes it
  pdl_wait();
  const size_t row = static_cast<size_t>(blockIdx.x) * H;
  float v[V] = {};
  if (mine) {
    load_vec((kAdd ? residual : x) + row + c, v);
    if constexpr (kAdd) {
      float a[V];
      load_vec(x + row + c, a);
      // Round the sum to T and square the rounded value: it is what the residual now holds.
#pragma unroll
      for (int i = 0; i < V; ++i) v[i] = to_float(from_float<T>(v[i] + a[i]));
      store_vec(residual + row + c, v);
    }
  }
  float ss = 0.0f;
#pragma unroll
  for (int i = 0; i < V; ++i) ss += v[i] * v[i];
  const float inv = rsqrtf(block_sum(ss, scratch) / static_cast<float>(H) + eps);
  if (mine) {
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] = v[i] * inv * g[i];
    if (!kQuant || out != nullptr) store_vec(out + row + c, v);
  }
  if constexpr (kQuant) {
    static_assert(V == 8, "8 e4m3 a thread: one 8-byte store");
    float m = 0.0f;
#pragma unroll
    for (int i = 0; i < V; ++i) {
      v[i] = to_float(from_float<T>(v[i]));  // the value out holds, as the quantizer would read it
      m = fmaxf(m, fabsf(v[i]));
    }
    const float amax = fmaxf(block_max(m, scratch), 1e-12f);
    if (threadIdx.x == 0) scales[blockIdx.x] = amax / 448.0f;
    const float to_e4m3 = 448.0f / amax;
    if (mine) store_e4m3x8(xq + row + c, v, to_e4m3);
  }
}

// Whether rows of H elements of T at these pointers take 16-byte accesses (residual: nullptr
// where the norm has no residual add).
template <typename T>
bool takes_vectors(int H, const void* out, const void* residual, const void* x, const void* w) {
  return H % kVec<T> == 0 && is_aligned16(out) && is_aligned16(x) && is_aligned16(w) &&
         (residual == nullptr || is_aligned16(residual));
}
// Whether a row of H elements fits rms_norm_row_in_registers_kernel's block: one vector a thread.
template <typename T>
bool fits_in_registers(int H) {
  return H <= rms_norm_threads(H, kVec<T>) * kVec<T>;
}

template <typename T, bool kAdd>
void launch_norm(T* out, T* residual, const T* x, const T* w, int T_rows, int H, float eps, cudaStream_t stream) {
  if (T_rows <= 0 || H <= 0) return;
  constexpr int V = kVec<T>;
  const bool vec = takes_vectors<T>(H, out, residual, x, w);
  const int threads = rms_norm_threads(H, vec ? V : 1);
  if (vec && fits_in_registers<T>(H)) {
    launch_pdl(rms_norm_row_in_registers_kernel<T, V, kAdd>, dim3(T_rows), dim3(threads), 0, stream, out, residual, x,
               w, H, eps, static_cast<__nv_fp8_e4m3*>(nullptr), static_cast<float*>(nullptr));
  } else if (vec) {
    launch_pdl(rms_norm_kernel<T, V, kAdd>, dim3(T_rows), dim3(threads), 0, stream, out, residual, x, w, H, eps);
  } else {
    launch_pdl(rms_norm_kernel<T, 1, kAdd>, dim3(T_rows), dim3(threads), 0, stream, out, residual, x, w, H, eps);
  }
  CUDA_CHECK_LAUNCH();
}

// residual[n] += x[n]; V elements per thread-iteration.
template <typename T, int V>
__global__ void add_kernel(T* __restrict__ residual, const T* __restrict__ x, size_t n_vec) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n_vec;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    if constexpr (V > 1) {
      float r[V], a[V];
      load_vec(residual + i * V, r);
      load_vec(x + i * V, a);
#pragma unroll
      for (int k = 0; k < V; ++k) r[k] += a[k];
      store_vec(residual + i * V, r);
    } else {
      residual[i] = from_float<T>(to_float(residual[i]) + to_float(x[i]));
    }
  }
}

}  // namespace

void launch_rms_norm(DType dt, void* out, const void* x, const void* w, int T, int H, float eps, cudaStream_t stream) {
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    launch_norm<E, false>(static_cast<E*>(out), nullptr, static_cast<const E*>(x), static_cast<const E*>(w), T, H,
                          eps, stream);
  });
}

void launch_add_rms_norm(DType dt, void* residual, const void* x, void* out, const void* w, int T, int H, float eps,
                         cudaStream_t stream) {
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    launch_norm<E, true>(static_cast<E*>(out), static_cast<E*>(residual), static_cast<const E*>(x),
                         static_cast<const E*>(w), T, H, eps, stream);
  });
}

bool launch_add_rms_norm_quantize_fp8(DType dt, void* residual, const void* x, void* out, const void* w, int T, int H,
                                      float eps, void* xq, float* scales, cudaStream_t stream) {
  // residual == nullptr: the norm of x itself (kAdd off).
  if (T <= 0 || H <= 0) return true;
  bool taken = false;
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    if constexpr (sizeof(E) == 2) {
      constexpr int V = kVec<E>;
      const bool fits = takes_vectors<E>(H, out, residual, x, w) && fits_in_registers<E>(H) &&
                        (reinterpret_cast<uintptr_t>(xq) & 7) == 0;  // 8 e4m3 a thread
      if (!fits) return;
      launch_pdl(residual != nullptr ? rms_norm_row_in_registers_kernel<E, V, true, true>
                                     : rms_norm_row_in_registers_kernel<E, V, false, true>,
                 dim3(T), dim3(rms_norm_threads(H, V)), 0, stream, static_cast<E*>(out), static_cast<E*>(residual),
                 static_cast<const E*>(x), static_cast<const E*>(w), H, eps, static_cast<__nv_fp8_e4m3*>(xq), scales);
      CUDA_CHECK_LAUNCH();
      taken = true;
    }
  });
  return taken;
}

void launch_add(DType dt, void* residual, const void* x, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    constexpr int V = kVec<E>;
    auto* r = static_cast<E*>(residual);
    auto* a = static_cast<const E*>(x);
    const bool vec = n % V == 0 && is_aligned16(r) && is_aligned16(a);
    const size_t items = vec ? n / V : n;
    const int threads = 256;
    const long long blocks = ceil_div_ll(static_cast<long long>(items), threads);
    const int grid = static_cast<int>(blocks < 65536 ? blocks : 65536);
    if (vec) {
      add_kernel<E, V><<<grid, threads, 0, stream>>>(r, a, items);
    } else {
      add_kernel<E, 1><<<grid, threads, 0, stream>>>(r, a, items);
    }
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace lamina::cuda
