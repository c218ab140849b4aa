// A small device-to-host copy made by a kernel that writes mapped pinned host memory
// (PinnedStaging::start_download). A decode step's chosen ids (4 bytes a row) took a copy-engine
// transfer after the step's CUDA graph, and the next step's first kernel could start only once
// that transfer had ended: ~11 us of idle GPU a token on an H100 (a CUPTI timeline,
// bench/kernel_trace.cpp). A kernel's stores cross to host memory as posted writes; the event
// recorded after it completes once they have, as for the copy.
#include <cuda_runtime.h>

#include "cuda_check.h"
#include "kernels.h"

namespace lamina::cuda {
namespace {

// n elements of U (32-bit words where sizes and addresses allow, else bytes), one block.
template <typename U>
__global__ void copy_to_mapped_kernel(U* __restrict__ dst, const U* __restrict__ src, size_t n) {
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) dst[i] = src[i];
}

}  // namespace

void launch_copy_to_mapped(void* dst, const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes == 0) return;
  const bool words = bytes % 4 == 0 && reinterpret_cast<uintptr_t>(dst) % 4 == 0 &&
                     reinterpret_cast<uintptr_t>(src) % 4 == 0;
  if (words)
    copy_to_mapped_kernel<<<1, 256, 0, stream>>>(static_cast<uint32_t*>(dst), static_cast<const uint32_t*>(src),
                                                 bytes / 4);
  else
    copy_to_mapped_kernel<<<1, 256, 0, stream>>>(static_cast<uint8_t*>(dst), static_cast<const uint8_t*>(src), bytes);
  CUDA_CHECK_LAUNCH();
}

}  // namespace lamina::cuda
