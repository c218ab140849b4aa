// A fed decode step's inputs made on the device from the last step's (pipelined decoding,
// LlamaForward::step_fed): token t takes the id chosen for logit row t and the position after
// that row's token. One block; every thread reads before any writes, so rows may move in place.
// A fed step of another shape is uploaded with its fed tokens' ids naming their rows, which
// resolve_fed_ids_kernel replaces.
#include "cuda_check.h"
#include "kernels.h"

namespace lamina::cuda {
namespace {

__global__ void advance_fed_inputs_kernel(int32_t* ids, int32_t* positions, const int32_t* logit_rows,
                                          const int32_t* chosen, int T) {
  const int t = threadIdx.x;
  int32_t id = 0, pos = 0;
  if (t < T) {
    id = chosen[t];
    pos = positions[logit_rows[t]] + 1;
  }
  __syncthreads();
  if (t < T) {
    ids[t] = id;
    positions[t] = pos;
  }
}

// A fed step whose tokens take the last choice's rows in another order, or mix with prompt tokens:
// ids[t] < 0 names row -ids[t] - 1 of chosen.
__global__ void resolve_fed_ids_kernel(int32_t* ids, const int32_t* chosen, int T) {
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t < T && ids[t] < 0) ids[t] = chosen[-ids[t] - 1];
}

}  // namespace

void launch_resolve_fed_ids(int32_t* ids, const int32_t* chosen, int T, cudaStream_t stream) {
  if (T <= 0) return;
  resolve_fed_ids_kernel<<<(T + 255) / 256, 256, 0, stream>>>(ids, chosen, T);
  CUDA_CHECK_LAUNCH();
}

void launch_advance_fed_inputs(int32_t* ids, int32_t* positions, const int32_t* logit_rows, const int32_t* chosen,
                               int T, cudaStream_t stream) {
  if (T <= 0) return;
  advance_fed_inputs_kernel<<<1, (T + 31) / 32 * 32, 0, stream>>>(ids, positions, logit_rows, chosen, T);
  CUDA_CHECK_LAUNCH();
}

}  // namespace lamina::cuda
