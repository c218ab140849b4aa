// Skinny matmul for decode: out[M,N] = x[M,K] · w[N,K]^T with M <= 8 (one token per sequence).
// The time is the weight read (N*K elements once), so the kernel is built to stream w:
//   256 threads = 8 warps a block; each warp owns R rows of w (8R rows a block) and walks K with
//   16-byte loads, lane l taking chunks l, l+32, ...; U chunks of each row are loaded before any is
//   used (R*U = 8 loads of w in flight per lane). x (M*K elements, shared by every warp) is read
//   through the read-only cache. Each lane keeps acc[M][R] in fp32; a warp reduction finishes each
//   dot product.
// Rows of K not a multiple of 8 (16-bit) / 4 (fp32), or unaligned pointers, take a scalar kernel.
#include <cuda_runtime.h>

#include "cuda_check.h"
#include "cuda_types.cuh"
#include "kernels.h"
#include "reduce.cuh"

namespace lamina::cuda {
namespace {

constexpr int kWarps = 8, kThreads = kWarps * 32;

template <typename T, int M, int kRowsPerWarp, int kUnroll>
__global__ void __launch_bounds__(kThreads)
    gemv_kernel(T* __restrict__ out, const T* __restrict__ x, const T* __restrict__ w, int N, int K) {
  constexpr int V = kVec<T>;
  constexpr int kRowsPerBlock = kWarps * kRowsPerWarp;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int n0 = blockIdx.x * kRowsPerBlock + warp * kRowsPerWarp;
  if (n0 >= N) return;
  const int rows = min(kRowsPerWarp, N - n0);
  const int chunks = K / V;
  const T* w_row[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; ++r) w_row[r] = w + static_cast<size_t>(r < rows ? n0 + r : n0) * K;

  float acc[M][kRowsPerWarp] = {};
  for (int c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
    float wv[kUnroll][kRowsPerWarp][V];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + 32 * u;
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        if (c < chunks) {
          load_vec_ro(w_row[r] + static_cast<size_t>(c) * V, wv[u][r]);
        } else {
#pragma unroll
          for (int e = 0; e < V; ++e) wv[u][r][e] = 0.0f;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int c = c0 + 32 * u;
      if (c >= chunks) break;
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float xv[V];
        load_vec_ro(x + static_cast<size_t>(m) * K + static_cast<size_t>(c) * V, xv);
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r)
#pragma unroll
          for (int e = 0; e < V; ++e) acc[m][r] = fmaf(xv[e], wv[u][r][e], acc[m][r]);
      }
    }
  }
#pragma unroll
  for (int m = 0; m < M; ++m)
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const float s = warp_sum(acc[m][r]);
      if (lane == 0 && r < rows) out[static_cast<size_t>(m) * N + n0 + r] = from_float<T>(s);
    }
}

// Fallback: one warp per (m, n), scalar loads.
template <typename T>
__global__ void gemv_scalar_kernel(T* __restrict__ out, const T* __restrict__ x, const T* __restrict__ w, int M,
                                   int N, int K) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long item = static_cast<long long>(blockIdx.x) * (blockDim.x / 32) + warp;
  if (item >= static_cast<long long>(M) * N) return;
  const int m = static_cast<int>(item / N), n = static_cast<int>(item % N);
  float acc = 0.0f;
  for (int k = lane; k < K; k += 32)
    acc = fmaf(to_float(x[static_cast<size_t>(m) * K + k]), to_float(w[static_cast<size_t>(n) * K + k]), acc);
  acc = warp_sum(acc);
  if (lane == 0) out[static_cast<size_t>(m) * N + n] = from_float<T>(acc);
}

template <typename T, int M>
void launch_m(T* out, const T* x, const T* w, int N, int K, cudaStream_t stream) {
  // 2 rows a warp, 4 chunks deep, for every M: 4 rows a warp (fewer x loads per w load) measured
  // slower at M = 8 on an H100 (N = 4096: 128 blocks for 132 SMs).
  constexpr int R = 2, U = 4;
  gemv_kernel<T, M, R, U><<<ceil_div(N, kWarps * R), kThreads, 0, stream>>>(out, x, w, N, K);
}

}  // namespace

void launch_gemv(DType dt, void* out, const void* x, const void* w, int M, int N, int K, cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
  LAMINA_CHECK(M <= kGemvMaxM, "gemv takes at most ", kGemvMaxM, " rows, got ", M);
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    auto* o = static_cast<E*>(out);
    auto* a = static_cast<const E*>(x);
    auto* b = static_cast<const E*>(w);
    if (K % kVec<E> != 0 || !is_aligned16(a) || !is_aligned16(b)) {
      const long long items = static_cast<long long>(M) * N;
      gemv_scalar_kernel<E><<<static_cast<unsigned>(ceil_div_ll(items, 8)), 256, 0, stream>>>(o, a, b, M, N, K);
    } else {
      switch (M) {
        case 1: launch_m<E, 1>(o, a, b, N, K, stream); break;
        case 2: launch_m<E, 2>(o, a, b, N, K, stream); break;
        case 3: launch_m<E, 3>(o, a, b, N, K, stream); break;
        case 4: launch_m<E, 4>(o, a, b, N, K, stream); break;
        case 5: launch_m<E, 5>(o, a, b, N, K, stream); break;
        case 6: launch_m<E, 6>(o, a, b, N, K, stream); break;
        case 7: launch_m<E, 7>(o, a, b, N, K, stream); break;
        default: launch_m<E, 8>(o, a, b, N, K, stream); break;
      }
    }
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace lamina::cuda
