// Device-side element types: float, __half and __nv_bfloat16 converted to and from float, and
// 16-byte vector loads/stores (8 x 16-bit or 4 x fp32 elements) that every memory-bound kernel
// uses. Host code picks the element type from a lamina::DType with dispatch_float_type().
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "common/dtype.h"
#include "common/error.h"

namespace lamina::cuda {

template <typename T>
__device__ __forceinline__ float to_float(T v);
template <>
__device__ __forceinline__ float to_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ float to_float<__half>(__half v) { return __half2float(v); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

// Order-preserving map float -> uint32 (larger float, larger key; -0 below +0, NaNs at the ends),
// and its inverse: sortable keys for atomicMax and radix-style selections.
__device__ __forceinline__ uint32_t float_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_float(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? key & 0x7FFFFFFFu : ~key);
}

// Elements in one 16-byte access.
template <typename T>
inline constexpr int kVec = 16 / sizeof(T);

// p must be 16-byte aligned. out[i] = float(p[i]) for i < kVec<T>.
template <typename T>
__device__ __forceinline__ void load_vec(const T* p, float (&out)[kVec<T>]) {
  const uint4 raw = *reinterpret_cast<const uint4*>(p);
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < kVec<T>; ++i) out[i] = to_float(e[i]);
}

// Same through the read-only cache, for data no kernel writes while it runs (weights).
template <typename T>
__device__ __forceinline__ void load_vec_ro(const T* p, float (&out)[kVec<T>]) {
  const uint4 raw = __ldg(reinterpret_cast<const uint4*>(p));
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < kVec<T>; ++i) out[i] = to_float(e[i]);
}

// 16 bytes of data read once (GEMV weights): not kept in L1.
__device__ __forceinline__ uint4 load_stream16(const void* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p));
  return r;
}

// 32-bit word i (0..3) of a 16-byte vector (i a compile-time constant after unrolling).
__device__ __forceinline__ uint32_t word_of(const uint4& v, int i) {
  return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w;
}

template <typename T>
__device__ __forceinline__ void store_vec(T* p, const float (&in)[kVec<T>]) {
  uint4 raw;
  T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
  for (int i = 0; i < kVec<T>; ++i) e[i] = from_float<T>(in[i]);
  *reinterpret_cast<uint4*>(p) = raw;
}

// Host: calls f(TypeTag<T>{}) with T the device type of dtype (float, __half, __nv_bfloat16).
template <typename T>
struct TypeTag {
  using type = T;
};

template <typename F>
void dispatch_float_type(DType dt, F&& f) {
  switch (dt) {
    case DType::F32: f(TypeTag<float>{}); return;
    case DType::F16: f(TypeTag<__half>{}); return;
    case DType::BF16: f(TypeTag<__nv_bfloat16>{}); return;
    default: fail("the CUDA backend has no kernels for dtype ", dtype_user_name(dt), " (use float32, float16 or bfloat16)");
  }
}

inline bool is_aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

inline int ceil_div(int a, int b) { return (a + b - 1) / b; }
inline long long ceil_div_ll(long long a, long long b) { return (a + b - 1) / b; }

}  // namespace lamina::cuda
