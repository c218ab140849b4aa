// SwiGLU activation: out[T,F] = silu(gate_up[:, :F]) * gate_up[:, F:], silu(g) = g / (1 + exp(-g)).
// gate_up rows hold the gate half then the up half (the fused gate/up projection's output).
#include <cuda_runtime.h>

#include "activation.cuh"
#include "cuda_check.h"
#include "cuda_types.cuh"
#include "kernels.h"

namespace lamina::cuda {
namespace {

// cols = F / V accesses per row; item i covers row i / cols, elements (i % cols) * V .. + V.
template <typename T, int V>
__global__ void silu_mul_kernel(T* __restrict__ out, const T* __restrict__ gate_up, int F, size_t items) {
  const size_t cols = F / V;
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < items;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t t = i / cols, c = (i % cols) * V;
    const T* g_ptr = gate_up + t * 2 * F + c;
    float g[V], u[V];
    if constexpr (V > 1) {
      load_vec(g_ptr, g);
      load_vec(g_ptr + F, u);
    } else {
      g[0] = to_float(g_ptr[0]);
      u[0] = to_float(g_ptr[F]);
    }
#pragma unroll
    for (int k = 0; k < V; ++k) g[k] = silu(g[k]) * u[k];
    if constexpr (V > 1) {
      store_vec(out + t * F + c, g);
    } else {
      out[t * F + c] = from_float<T>(g[0]);
    }
  }
}

}  // namespace

void launch_silu_mul(DType dt, void* out, const void* gate_up, int T, int F, cudaStream_t stream) {
  if (T <= 0 || F <= 0) return;
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    constexpr int V = kVec<E>;
    auto* o = static_cast<E*>(out);
    auto* gu = static_cast<const E*>(gate_up);
    const bool vec = F % V == 0 && is_aligned16(o) && is_aligned16(gu);
    const size_t items = static_cast<size_t>(T) * (vec ? F / V : F);
    const int threads = 256;
    const long long blocks = ceil_div_ll(static_cast<long long>(items), threads);
    const int grid = static_cast<int>(blocks < 65536 ? blocks : 65536);
    if (vec) {
      silu_mul_kernel<E, V><<<grid, threads, 0, stream>>>(o, gu, F, items);
    } else {
      silu_mul_kernel<E, 1><<<grid, threads, 0, stream>>>(o, gu, F, items);
    }
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace lamina::cuda
