#include "bench_util.h"

#include <cuda_bf16.h>

#include <algorithm>
#include <exception>

#include "backends/cuda/cuda_check.h"

namespace lamina::bench {

namespace {

// Captures `batch` calls into an executable graph; nullptr (state cleaned up) if capture fails.
cudaGraphExec_t capture(cudaStream_t stream, const std::function<void(int)>& fn, int batch, int& call) {
  if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  bool ok = true;
  try {
    for (int i = 0; i < batch; ++i) fn(call++);
  } catch (const std::exception&) {
    ok = false;
  }
  cudaGraph_t graph = nullptr;
  ok = cudaStreamEndCapture(stream, &graph) == cudaSuccess && ok;
  cudaGraphExec_t exec = nullptr;
  if (ok) ok = cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
  if (graph) cudaGraphDestroy(graph);
  if (!ok) {
    cudaGetLastError();
    return nullptr;
  }
  return exec;
}

}  // namespace

Timing time_ms(cudaStream_t stream, const std::function<void(int)>& fn, int samples, double sample_target_ms,
               bool try_graph) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  int call = 0;
  // Warm-up (module load, handle and plan creation), then an estimate of one call.
  for (int i = 0; i < 3; ++i) fn(call++);
  CUDA_CHECK(cudaEventRecord(a, stream));
  for (int i = 0; i < 3; ++i) fn(call++);
  CUDA_CHECK(cudaEventRecord(b, stream));
  CUDA_CHECK(cudaEventSynchronize(b));
  float est = 0;
  CUDA_CHECK(cudaEventElapsedTime(&est, a, b));
  est /= 3;
  const int batch = std::clamp(static_cast<int>(sample_target_ms / std::max(est, 1e-4f)), 1, 500);
  Timing out;
  cudaGraphExec_t exec = try_graph ? capture(stream, fn, batch, call) : nullptr;
  out.graph = exec != nullptr;
  if (exec) {  // one untimed replay
    CUDA_CHECK(cudaGraphLaunch(exec, stream));
    CUDA_CHECK(cudaStreamSynchronize(stream));
  }
  std::vector<double> t(samples);
  for (int s = 0; s < samples; ++s) {
    CUDA_CHECK(cudaEventRecord(a, stream));
    if (exec) {
      CUDA_CHECK(cudaGraphLaunch(exec, stream));
    } else {
      for (int i = 0; i < batch; ++i) fn(call++);
    }
    CUDA_CHECK(cudaEventRecord(b, stream));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    t[s] = ms / batch;
  }
  CUDA_CHECK(cudaGetLastError());
  if (exec) cudaGraphExecDestroy(exec);
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  std::nth_element(t.begin(), t.begin() + samples / 2, t.end());
  out.ms = t[samples / 2];
  return out;
}

namespace {
__global__ void fill_kernel(__nv_bfloat16* p, size_t n, unsigned seed, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    unsigned h = static_cast<unsigned>(i) * 2654435761u ^ (seed * 0x9E3779B9u) ^ static_cast<unsigned>(i >> 32);
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    const float u = (h >> 8) * (1.0f / 16777216.0f);  // [0, 1)
    p[i] = __float2bfloat16((2.0f * u - 1.0f) * scale);
  }
}
}  // namespace

void fill_random_bf16(void* dst, size_t n, unsigned seed, float scale, cudaStream_t stream) {
  fill_kernel<<<4096, 256, 0, stream>>>(static_cast<__nv_bfloat16*>(dst), n, seed, scale);
  CUDA_CHECK_LAUNCH();
}

Rotation::Rotation(size_t bytes_, size_t min_total, unsigned seed, cudaStream_t stream, float scale) : bytes(bytes_) {
  const size_t copies = std::max<size_t>(1, (min_total + bytes - 1) / bytes);
  for (size_t i = 0; i < copies; ++i) {
    void* p = nullptr;
    CUDA_CHECK(cudaMalloc(&p, bytes));
    fill_random_bf16(p, bytes / 2, seed + static_cast<unsigned>(i), scale, stream);
    bufs.push_back(p);
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));
}

Rotation::~Rotation() {
  for (void* p : bufs) cudaFree(p);
}

}  // namespace lamina::bench
