// Asynchronous global -> shared copies (cp.async, sm_80+), 16 bytes at a time through L2 only
// (.cg): the K/V tile pipelines of the attention kernels. A thread's copies are grouped with
// cp_async_commit(); cp_async_wait<N>() returns once at most N of its groups are still in flight
// (a __syncthreads() after it makes every thread's copies visible).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace lamina::cuda {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; with valid == false nothing is read and zeros land.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

}  // namespace lamina::cuda
