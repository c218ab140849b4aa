// The CUDA backend: every lamina::Backend op on one GPU, activations, weights and the KV cache all
// in one activation dtype (float32, float16 or bfloat16).
//   - All ops run on the backend's own stream, in order; none allocates or synchronizes, so a
//     decode step can be captured into a CUDA graph (the GEMM workspace and the attention split-K
//     workspace are allocated when the backend is made). copy_to_host/copy_to_device and
//     synchronize() do wait for the stream.
//   - Position/slot/id arrays are device int32 arrays; nothing is read back to plan a kernel.
#pragma once
#include <cuda_runtime_api.h>

#include <memory>

#include "ops/backend.h"

namespace lamina {

// Number of CUDA devices; 0 when there is no GPU or no driver (never throws).
int cuda_device_count();

// Throws lamina::Error if the device does not exist or the dtype is not F32, F16 or BF16.
std::unique_ptr<Backend> make_cuda_backend(int device_id, DType activation_dtype);

// The stream a CUDA backend's ops run on (for graph capture, or for kernels run beside the ops
// such as sampling). Throws if `backend` is not a CUDA backend.
cudaStream_t cuda_stream_of(Backend& backend);

}  // namespace lamina
