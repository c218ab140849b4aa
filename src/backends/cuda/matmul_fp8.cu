// FP8 (e4m3) GEMM for M > 8 on GPUs with FP8 tensor cores (compute capability 8.9+, Hopper):
//   1. x_scale[m] = max_k |x[m,k]| / 448    dynamic, one scale per token (row) of the [M, K] activation
//                                           (per tensor, max over all of x, where cuBLASLt lacks
//                                           per-token scales)
//   2. xq = e4m3(x / x_scale)               saturating
//   3. out[m,n] = w_scale * x_scale[m] * (wq · xq^T)[m,n] in fp32 by cuBLASLt, in the activation dtype
// Steps 1-2 are here (step 1 also fused with the MLP's SwiGLU, for the down projection's input);
// step 3 is LtGemm::run_fp8 (matmul.cu). Both quantizers are kernels (and a
// memset) on the stream, so the sequence is graph-capturable.
// cuBLASLt's FP8 GEMM needs the "TN" form, which is what matmul.cu's layout already issues
// (A = w transposed, B = x not), 16-byte aligned pointers (the scales' too) and K a multiple of 16.
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>

#include "ab_switch.h"
#include "activation.cuh"
#include "cuda_check.h"
#include "cuda_types.cuh"
#include "e4m3_store.cuh"
#include "quant_kernels.h"
#include "reduce.cuh"

namespace lamina::cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void amax_kernel(const T* __restrict__ x, size_t n, unsigned* __restrict__ amax_bits) {
  __shared__ float scratch[32];
  float m = 0.0f;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    m = fmaxf(m, fabsf(to_float(x[i])));
  m = block_max(m, scratch);
  // Non-negative floats order like their bit patterns, so an unsigned max is a float max.
  if (threadIdx.x == 0) atomicMax(amax_bits, __float_as_uint(m));
}

template <typename T>
__global__ void quantize_fp8_kernel(const T* __restrict__ x, size_t n, __nv_fp8_e4m3* __restrict__ xq,
                                    const unsigned* __restrict__ amax_bits, float* __restrict__ scale_out) {
  const float amax = fmaxf(__uint_as_float(*amax_bits), 1e-12f);
  const float inv = 448.0f / amax;
  if (blockIdx.x == 0 && threadIdx.x == 0) *scale_out = amax / 448.0f;
  for (size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x)
    xq[i] = __nv_fp8_e4m3(to_float(x[i]) * inv);  // the constructor saturates to +-448
}

// One block per token row m of x [M, K]: scale[m] = max|x[m, :]| / 448, xq[m, :] = e4m3(x / scale[m]).
template <typename T>
__global__ void quantize_fp8_per_token_kernel(const T* __restrict__ x, int K, __nv_fp8_e4m3* __restrict__ xq,
                                              float* __restrict__ scales) {
  __shared__ float scratch[32];
  const size_t row = static_cast<size_t>(blockIdx.x) * K;
  float m = 0.0f;
  for (int k = threadIdx.x; k < K; k += blockDim.x) m = fmaxf(m, fabsf(to_float(x[row + k])));
  const float amax = fmaxf(block_max(m, scratch), 1e-12f);  // every thread gets the block's max
  if (threadIdx.x == 0) scales[blockIdx.x] = amax / 448.0f;
  const float inv = 448.0f / amax;
  for (int k = threadIdx.x; k < K; k += blockDim.x) xq[row + k] = __nv_fp8_e4m3(to_float(x[row + k]) * inv);
}

// Per-token quantization with the row held in registers: one block of kThreads per row, 16-byte
// loads of kVec<T> elements, at most kRowChunks of them a thread (rows of K <= kMaxVecRow<T>). The
// scalar kernel above reads x twice, 2 bytes a load; this one reads it once. kSwiGlu: row m is the
// SwiGLU of gate_up row m ([gate F | up F], so K = F and the row stride is 2F), rounded to T as
// silu_mul's output is: the same bits as silu_mul and then this quantization of its output,
// without the [M, F] round trip. Scale and rounding as quantize_fp8_per_token_kernel's (a max does
// not depend on the order it is taken in).
constexpr int kRowChunks = 8;
template <typename T>
constexpr int kMaxVecRow = kThreads * kRowChunks * kVec<T>;

// The chunk arithmetic both row kernels share. A chunk: 16 bytes, kVec<T> values of a 16-bit T.
// silu(gate) * up of one chunk, each value rounded to T as silu_mul stores it; m becomes
// max(m, |value|) over them, taken as each value forms.
template <typename T>
__device__ __forceinline__ uint4 swiglu_chunk(uint4 graw, uint4 uraw, float& m) {
  const T* g = reinterpret_cast<const T*>(&graw);
  const T* u = reinterpret_cast<const T*>(&uraw);
  alignas(16) T prod[kVec<T>];
#pragma unroll
  for (int e = 0; e < kVec<T>; ++e) {
    prod[e] = from_float<T>(silu(to_float(g[e])) * to_float(u[e]));
    m = fmaxf(m, fabsf(to_float(prod[e])));
  }
  return *reinterpret_cast<const uint4*>(prod);
}

// max(m, |v|) over a chunk's values.
template <typename T>
__device__ __forceinline__ float chunk_absmax(uint4 raw, float m) {
  const T* v = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int e = 0; e < kVec<T>; ++e) m = fmaxf(m, fabsf(to_float(v[e])));
  return m;
}

// A chunk's values times inv in e4m3 (saturating at +-448): kVec<T> bytes at dst.
template <typename T>
__device__ __forceinline__ void store_e4m3_chunk(__nv_fp8_e4m3* dst, uint4 raw, float inv) {
  static_assert(kVec<T> == 8, "8 values a chunk: one 8-byte store");
  const T* v = reinterpret_cast<const T*>(&raw);
  float f[kVec<T>];
#pragma unroll
  for (int e = 0; e < kVec<T>; ++e) f[e] = to_float(v[e]);
  store_e4m3x8(dst, f, inv);
}

template <typename T, bool kSwiGlu>
__global__ void __launch_bounds__(kThreads)
    quantize_fp8_rows_kernel(const T* __restrict__ x, int K, __nv_fp8_e4m3* __restrict__ xq,
                             float* __restrict__ scales) {
  constexpr int V = kVec<T>;
  static_assert(V * sizeof(T) == 16, "16-byte chunks");
  __shared__ float scratch[32];
  const int chunks = K / V;
  const T* row = x + static_cast<size_t>(blockIdx.x) * (kSwiGlu ? 2 : 1) * K;
  uint4 raw[kRowChunks];  // the row's values in T, kVec<T> to a chunk
  float m = 0.0f;
#pragma unroll
  for (int j = 0; j < kRowChunks; ++j) {
    const int c = threadIdx.x + j * kThreads;
    if (c >= chunks) break;
    raw[j] = *reinterpret_cast<const uint4*>(row + static_cast<size_t>(c) * V);
    if constexpr (kSwiGlu)
      raw[j] = swiglu_chunk<T>(raw[j], *reinterpret_cast<const uint4*>(row + K + static_cast<size_t>(c) * V), m);
    else
      m = chunk_absmax<T>(raw[j], m);
  }
  const float amax = fmaxf(block_max(m, scratch), 1e-12f);  // every thread gets the block's max
  if (threadIdx.x == 0) scales[blockIdx.x] = amax / 448.0f;
  const float inv = 448.0f / amax;
  __nv_fp8_e4m3* out = xq + static_cast<size_t>(blockIdx.x) * K;
#pragma unroll
  for (int j = 0; j < kRowChunks; ++j) {
    const int c = threadIdx.x + j * kThreads;
    if (c >= chunks) break;
    store_e4m3_chunk<T>(out + static_cast<size_t>(c) * V, raw[j], inv);
  }
}

// The SwiGLU form with the row's products held in shared memory instead of registers
// (F * sizeof(T) bytes a block, at most kMaxSmemRowBytes): ~32 registers a thread against ~80, so
// up to 8 blocks share an SM where 3 did, which puts the 1024 rows of a decode step in one wave
// (3 blocks an SM took 2.6 waves, the last one 60 % full) and lets other blocks stream while one
// takes its row's max or stores its row. The same arithmetic, so the same bits, as
// quantize_fp8_rows_kernel<T, true>.
constexpr int kMaxSmemRowBytes = 48 << 10;  // the dynamic shared memory a launch gets without opting in

template <typename T>
__global__ void __launch_bounds__(kThreads)
    silu_mul_quantize_fp8_rows_smem_kernel(const T* __restrict__ gate_up, int F, __nv_fp8_e4m3* __restrict__ xq,
                                           float* __restrict__ scales) {
  constexpr int V = kVec<T>;
  extern __shared__ uint4 products[];  // [F / V] chunks of silu(gate) * up, rounded to T
  __shared__ float scratch[32];
  const int chunks = F / V;
  const T* gate = gate_up + static_cast<size_t>(blockIdx.x) * 2 * F;
  const T* up = gate + F;
  float m = 0.0f;
#pragma unroll 4
  for (int c = threadIdx.x; c < chunks; c += kThreads) {
    const uint4 prod = swiglu_chunk<T>(*reinterpret_cast<const uint4*>(gate + static_cast<size_t>(c) * V),
                                       *reinterpret_cast<const uint4*>(up + static_cast<size_t>(c) * V), m);
    products[c] = prod;
  }
  const float amax = fmaxf(block_max(m, scratch), 1e-12f);  // its barriers also publish `products`
  if (threadIdx.x == 0) scales[blockIdx.x] = amax / 448.0f;
  const float inv = 448.0f / amax;
  __nv_fp8_e4m3* out = xq + static_cast<size_t>(blockIdx.x) * F;
  for (int c = threadIdx.x; c < chunks; c += kThreads)
    store_e4m3_chunk<T>(out + static_cast<size_t>(c) * V, products[c], inv);
}

// LAMINA_FP8_SWIGLU_QUANT_SMEM=0: the SwiGLU quantization keeps its rows in registers (A/B).
bool swiglu_rows_in_smem_enabled() {
  static const bool on = ab_switch_on("LAMINA_FP8_SWIGLU_QUANT_SMEM");
  return on;
}

// LAMINA_FP8_QUANT_IN_REGISTERS=0: per-token quantization by the scalar kernel only (A/B).
bool rows_in_registers_enabled() {
  static const bool on = ab_switch_on("LAMINA_FP8_QUANT_IN_REGISTERS");
  return on;
}

// Whether quantize_fp8_rows_kernel takes rows of K elements of 16-bit T at x (and xq): whole
// aligned chunks, at most kMaxVecRow<T> a row.
template <typename T>
bool takes_rows_in_registers(const void* x, const void* xq, int K) {
  static_assert(sizeof(T) == 2, "16-bit activations");
  return K % kVec<T> == 0 && K <= kMaxVecRow<T> && is_aligned16(x) && (reinterpret_cast<uintptr_t>(xq) & 7) == 0;
}

}  // namespace

void launch_quantize_fp8_dynamic(DType dt, const void* x, size_t n, void* xq, unsigned* amax_bits, float* x_scale,
                                 cudaStream_t stream) {
  if (n == 0) return;
  CUDA_CHECK(cudaMemsetAsync(amax_bits, 0, sizeof(unsigned), stream));
  const unsigned blocks = static_cast<unsigned>(std::min<long long>(ceil_div_ll(static_cast<long long>(n), kThreads), 1024));
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    amax_kernel<E><<<blocks, kThreads, 0, stream>>>(static_cast<const E*>(x), n, amax_bits);
    CUDA_CHECK_LAUNCH();
    quantize_fp8_kernel<E><<<blocks, kThreads, 0, stream>>>(static_cast<const E*>(x), n,
                                                             static_cast<__nv_fp8_e4m3*>(xq), amax_bits, x_scale);
    CUDA_CHECK_LAUNCH();
  });
}

void launch_quantize_fp8_per_token(DType dt, const void* x, int M, int K, void* xq, float* x_scales,
                                   cudaStream_t stream) {
  if (M <= 0 || K <= 0) return;
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    if constexpr (sizeof(E) == 2) {
      if (rows_in_registers_enabled() && takes_rows_in_registers<E>(x, xq, K)) {
        quantize_fp8_rows_kernel<E, false><<<static_cast<unsigned>(M), kThreads, 0, stream>>>(
            static_cast<const E*>(x), K, static_cast<__nv_fp8_e4m3*>(xq), x_scales);
        CUDA_CHECK_LAUNCH();
        return;
      }
    }
    quantize_fp8_per_token_kernel<E><<<static_cast<unsigned>(M), kThreads, 0, stream>>>(
        static_cast<const E*>(x), K, static_cast<__nv_fp8_e4m3*>(xq), x_scales);
    CUDA_CHECK_LAUNCH();
  });
}

bool launch_silu_mul_quantize_fp8_per_token(DType dt, const void* gate_up, int M, int F, void* xq, float* x_scales,
                                            cudaStream_t stream) {
  if (M <= 0 || F <= 0) return true;
  bool taken = false;
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    if constexpr (sizeof(E) == 2) {
      if (!takes_rows_in_registers<E>(gate_up, xq, F)) return;
      const size_t row_bytes = size_t(F) * sizeof(E);
      if (swiglu_rows_in_smem_enabled() && row_bytes <= size_t(kMaxSmemRowBytes)) {
        silu_mul_quantize_fp8_rows_smem_kernel<E><<<static_cast<unsigned>(M), kThreads, row_bytes, stream>>>(
            static_cast<const E*>(gate_up), F, static_cast<__nv_fp8_e4m3*>(xq), x_scales);
      } else {
        quantize_fp8_rows_kernel<E, true><<<static_cast<unsigned>(M), kThreads, 0, stream>>>(
            static_cast<const E*>(gate_up), F, static_cast<__nv_fp8_e4m3*>(xq), x_scales);
      }
      CUDA_CHECK_LAUNCH();
      taken = true;
    }
  });
  return taken;
}

}  // namespace lamina::cuda
