// Dequantize a quantized weight into an activation-dtype scratch matrix, for the M > 8 path
// (dequantize, then the regular cuBLASLt GEMM). One thread per output element, grid-stride; the
// result is what the CPU reference computes, rounded to the activation dtype.
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda_check.h"
#include "cuda_types.cuh"
#include "quant_decode.cuh"
#include "quant_kernels.h"

namespace lamina::cuda {
namespace {

template <typename T, WeightFormat F>
__global__ void dequantize_kernel(T* __restrict__ out, const uint8_t* __restrict__ w, const float* __restrict__ scales,
                                  int N, int K, int group) {
  const size_t total = static_cast<size_t>(N) * K;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const size_t n = i / K, k = i % K;
    float s;
    if constexpr (F == WeightFormat::Int4Group) s = scales[n * (K / group) + k / group];
    else if constexpr (F == WeightFormat::Int8PerChannel) s = scales[n];
    else s = scales[0];
    out[i] = from_float<T>(Decode<F>::scalar(w, i) * s);
  }
}

}  // namespace

void launch_dequantize_weight(DType dt, void* out, const DeviceQuantWeight& w, int N, int K, cudaStream_t stream) {
  if (N <= 0 || K <= 0) return;
  if (w.int4_tiles) return launch_dequantize_int4_tiles(dt, out, w, N, K, stream);
  const long long total = static_cast<long long>(N) * K;
  const unsigned blocks = static_cast<unsigned>(std::min<long long>(ceil_div_ll(total, 256), 8192));
  const auto* wb = static_cast<const uint8_t*>(w.data);
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    auto* o = static_cast<E*>(out);
    switch (w.format) {
      case WeightFormat::Int8PerChannel:
        dequantize_kernel<E, WeightFormat::Int8PerChannel><<<blocks, 256, 0, stream>>>(o, wb, w.scales, N, K, 1);
        break;
      case WeightFormat::Fp8PerTensor:
        dequantize_kernel<E, WeightFormat::Fp8PerTensor><<<blocks, 256, 0, stream>>>(o, wb, w.scales, N, K, 1);
        break;
      case WeightFormat::Int4Group:
        LAMINA_CHECK(w.group_size > 0 && K % w.group_size == 0, "int4 dequantize: bad group size ", w.group_size);
        dequantize_kernel<E, WeightFormat::Int4Group><<<blocks, 256, 0, stream>>>(o, wb, w.scales, N, K, w.group_size);
        break;
    }
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace lamina::cuda
