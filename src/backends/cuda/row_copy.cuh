// Copies whole rows picked by an index array: out[i, :] = src[index[i], :]. Shared by embedding
// (index = token ids) and gather_rows (index = row numbers). One block per output row; 16-byte
// accesses when the row size and both base pointers allow it. Launched without programmatic
// dependent launch (it starts once the kernels before it are done), it lets the kernel after it
// launch early.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda_check.h"
#include "cuda_types.cuh"
#include "pdl.cuh"

namespace lamina::cuda {

// out[R, cols] (units of U: uint4 for 16-byte copies, or the element type) = src[index[r], :]
template <typename U>
__global__ void copy_rows_kernel(U* __restrict__ out, const U* __restrict__ src, const int32_t* __restrict__ index,
                                 int cols) {
  // The next kernel may launch now (it waits for these rows in its pdl_wait()): at a decode step's
  // start the embedding is followed by the first norm, whose launch had trailed this copy.
  pdl_launch_dependents();
  const int r = blockIdx.x;
  const U* from = src + static_cast<size_t>(index[r]) * cols;
  U* to = out + static_cast<size_t>(r) * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) to[c] = from[c];
}

// Row of H elements of `elem_bytes` each.
inline void launch_copy_rows(void* out, const void* src, const int32_t* index, int rows, int H, size_t elem_bytes,
                             cudaStream_t stream) {
  if (rows <= 0 || H <= 0) return;
  const size_t row_bytes = static_cast<size_t>(H) * elem_bytes;
  if (row_bytes % 16 == 0 && is_aligned16(out) && is_aligned16(src)) {
    const int cols = static_cast<int>(row_bytes / 16);
    const int threads = cols >= 256 ? 256 : ((cols + 31) / 32) * 32;
    copy_rows_kernel<uint4><<<rows, threads, 0, stream>>>(static_cast<uint4*>(out), static_cast<const uint4*>(src),
                                                          index, cols);
  } else if (elem_bytes == 4) {
    copy_rows_kernel<uint32_t><<<rows, 256, 0, stream>>>(static_cast<uint32_t*>(out),
                                                         static_cast<const uint32_t*>(src), index, H);
  } else {
    copy_rows_kernel<uint16_t><<<rows, 256, 0, stream>>>(static_cast<uint16_t*>(out),
                                                         static_cast<const uint16_t*>(src), index, H);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace lamina::cuda
