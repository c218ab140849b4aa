// CUDA_CHECK / CUBLAS_CHECK: turn a failed CUDA runtime or cuBLAS(Lt) call into a lamina::Error
// that names the call, the error and file:line. CUDA_CHECK_LAUNCH checks the last kernel launch
// (it reads the launch error without synchronizing, so it is safe inside graph capture).
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <string>

#include "backends/cuda/peer_wait.h"
#include "common/error.h"

namespace lamina::cuda_detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t e, const char* call, const char* file, int line) {
  // A kernel that gave up waiting for another rank traps: say why (peer_wait.h).
  const std::string note = cuda::peer_wait_note();
  fail("CUDA error ", static_cast<int>(e), " (", cudaGetErrorName(e), ": ", cudaGetErrorString(e), ") in ", call,
       " at ", file, ":", line, note.empty() ? "" : "; ", note);
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t s, const char* call, const char* file, int line) {
  fail("cuBLAS error ", static_cast<int>(s), " (", cublasLtGetStatusName(s), ": ", cublasLtGetStatusString(s),
       ") in ", call, " at ", file, ":", line);
}

}  // namespace lamina::cuda_detail

#define CUDA_CHECK(call)                                                                   \
  do {                                                                                     \
    const cudaError_t lamina_cuda_err_ = (call);                                           \
    if (lamina_cuda_err_ != cudaSuccess)                                                   \
      ::lamina::cuda_detail::throw_cuda_error(lamina_cuda_err_, #call, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(call)                                                                     \
  do {                                                                                         \
    const cublasStatus_t lamina_cublas_st_ = (call);                                           \
    if (lamina_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                            \
      ::lamina::cuda_detail::throw_cublas_error(lamina_cublas_st_, #call, __FILE__, __LINE__); \
  } while (0)

#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

namespace lamina::cuda {

// Lets `kernel` use `smem_bytes` (> 48 KB) of dynamic shared memory on the current device;
// max_carveout: also asks for the largest shared-memory carve-out, for several such blocks an SM.
// The opt-in is made once per (kernel, device), so later calls, e.g. under graph capture, only
// launch. (Defined in attention.cu.)
void allow_dynamic_smem(const void* kernel, size_t smem_bytes, bool max_carveout = false);

}  // namespace lamina::cuda
