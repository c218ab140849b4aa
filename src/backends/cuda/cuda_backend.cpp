// CudaBackend: owns the device, the stream, cuBLASLt and the workspaces; each op forwards to a
// launch_x function of kernels.h (or LtGemm) on the stream.
#include "backends/cuda/cuda_backend.h"

#include <algorithm>
#include <unordered_map>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_sampling.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/matmul.h"

namespace lamina {
namespace {

using namespace lamina::cuda;

constexpr size_t kGemmWorkspaceBytes = 32u << 20;       // cuBLASLt's recommendation for Hopper
constexpr size_t kAttentionWorkspaceBytes = 64u << 20;  // split-K partials
constexpr size_t kUploadChunkElems = 16u << 20;         // host staging for dtype conversion

class CudaBackend final : public Backend {
 public:
  CudaBackend(int device, DType act) : device_(device), act_(act) {
    const int n = cuda_device_count();
    LAMINA_CHECK(device >= 0 && device < n, "CUDA device ", device, " does not exist (", n, " found)");
    LAMINA_CHECK(act == DType::F32 || act == DType::F16 || act == DType::BF16, "the CUDA backend runs in float32, ",
                 "float16 or bfloat16, not ", dtype_user_name(act));
    CUDA_CHECK(cudaSetDevice(device_));
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
    name_ = std::string("cuda:") + std::to_string(device_) + " (" + prop.name + ")";
    attn_.num_sms = prop.multiProcessorCount;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    gemm_ = std::make_unique<LtGemm>(kGemmWorkspaceBytes);
    CUDA_CHECK(cudaMalloc(&attn_.workspace, kAttentionWorkspaceBytes));
    attn_.workspace_bytes = kAttentionWorkspaceBytes;
  }

  ~CudaBackend() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    for (auto& [key, rec] : recordings_)
      if (rec.exec) cudaGraphExecDestroy(rec.exec);
    gemm_.reset();
    cudaFree(attn_.workspace);
    cudaStreamDestroy(stream_);
  }

  DeviceKind kind() const override { return DeviceKind::CUDA; }
  std::string name() const override { return name_; }
  DType activation_dtype() const override { return act_; }
  DType kv_dtype() const override { return act_; }
  cudaStream_t stream() const { return stream_; }

  // ---- memory ----
  void* alloc(size_t bytes) override {
    if (bytes == 0) return nullptr;
    use_device();
    void* p = nullptr;
    const cudaError_t e = cudaMalloc(&p, bytes);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error so later calls are not blamed
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      fail("out of GPU memory on ", name_, ": asked for ", bytes >> 20, " MiB, ", free_b >> 20, " MiB free of ",
           total_b >> 20, " MiB (", cudaGetErrorString(e), ")");
    }
    return p;
  }
  void free(void* p) override {
    if (!p) return;
    use_device();
    CUDA_CHECK(cudaFree(p));
  }
  size_t free_device_memory() override {
    use_device();
    size_t free_b = 0, total_b = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    return free_b;
  }
  void copy_to_device(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    use_device();
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void copy_to_host(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    use_device();
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  void synchronize() override {
    use_device();
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  // Converts on the host in chunks (bounded staging memory), then copies.
  void* upload_weight(const void* host, DType dtype, size_t n) override {
    const size_t esz = dtype_size(act_);
    auto* dst = static_cast<char*>(alloc(n * esz));
    if (dtype == act_) {
      copy_to_device(dst, host, n * esz);
      return dst;
    }
    LAMINA_CHECK(dtype_is_float(dtype), "cannot upload a ", dtype_safetensors_name(dtype), " weight as ",
                 dtype_user_name(act_));
    std::vector<char> stage(std::min(n, kUploadChunkElems) * esz);
    const auto* src = static_cast<const char*>(host);
    for (size_t at = 0; at < n; at += kUploadChunkElems) {
      const size_t cnt = std::min(kUploadChunkElems, n - at);
      convert_dtype(src + at * dtype_size(dtype), dtype, stage.data(), act_, cnt);
      copy_to_device(dst + at * esz, stage.data(), cnt * esz);
    }
    return dst;
  }
  void activations_to_host_f32(float* dst, const void* src, size_t n) override {
    if (act_ == DType::F32) return copy_to_host(dst, src, n * 4);
    // One staging buffer reused across calls: a batch's logits are ~64 MB a step, and a fresh
    // vector would allocate and fault in those pages every time.
    host_stage_.resize(n * dtype_size(act_));
    copy_to_host(host_stage_.data(), src, n * dtype_size(act_));
    convert_to_f32(host_stage_.data(), act_, dst, n);
  }

  // ---- ops ----
  void embedding(void* out, const int32_t* ids, const void* table, int T, int H) override {
    use_device();
    launch_embedding(act_, out, ids, table, T, H, stream_);
  }
  void rms_norm(void* out, const void* x, const void* w, int T, int H, float eps) override {
    use_device();
    launch_rms_norm(act_, out, x, w, T, H, eps, stream_);
  }
  void add_rms_norm(void* residual, const void* x, void* out, const void* w, int T, int H, float eps) override {
    use_device();
    launch_add_rms_norm(act_, residual, x, out, w, T, H, eps, stream_);
  }
  void add(void* residual, const void* x, size_t n) override {
    use_device();
    launch_add(act_, residual, x, n, stream_);
  }
  void matmul(void* out, const void* x, const void* w, int M, int N, int K) override {
    use_device();
    if (M <= kGemvMaxM) {
      launch_gemv(act_, out, x, w, M, N, K, stream_);
    } else {
      gemm_->run(act_, out, x, w, M, N, K, stream_);
    }
  }
  bool swiglu_matmul(void* out, const void* gate_up, const void* w, int M, int N, int F) override {
    if (M > kGemvMaxM) return false;
    use_device();
    launch_swiglu_gemv(act_, out, gate_up, w, M, N, F, stream_);
    return true;
  }
  void rope_kv_write(void* qkv, const int32_t* positions, const int32_t* slots, const float* inv_freq,
                     KVCacheLayer cache, const AttentionShape& s, int T) override {
    use_device();
    launch_rope_kv_write(act_, qkv, positions, slots, inv_freq, cache, s, T, stream_);
  }
  void attention(void* out, const void* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                 const AttentionShape& s, int T) override {
    use_device();
    launch_attention(act_, out, qkv, positions, slots, cache, s, T, attn_, stream_);
  }
  void silu_mul(void* out, const void* gate_up, int T, int F) override {
    use_device();
    launch_silu_mul(act_, out, gate_up, T, F, stream_);
  }
  void gather_rows(void* out, const void* x, const int32_t* rows, int num_rows, int H) override {
    use_device();
    launch_gather_rows(act_, out, x, rows, num_rows, H, stream_);
  }
  void select_tokens(int32_t* ids, const void* logits, int R, int V, const TokenChoice* choices) override {
    use_device();
    launch_sample(act_, logits, R, V, choices, ids, stream_);
  }

  // First use of a key runs the ops directly (GEMM plans and kernel attributes are set up on
  // first call, outside any capture); the second captures them into a graph; later uses replay it.
  void run_recorded(uint64_t key, const std::function<void()>& ops) override {
    use_device();
    Recording& rec = recordings_[key];
    if (rec.exec) {
      CUDA_CHECK(cudaGraphLaunch(rec.exec, stream_));
      return;
    }
    if (rec.uses++ == 0) {
      ops();
      return;
    }
    cudaGraph_t graph = nullptr;
    CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      ops();
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    CUDA_CHECK(cudaGraphInstantiate(&rec.exec, graph, 0));
    CUDA_CHECK(cudaGraphDestroy(graph));
    CUDA_CHECK(cudaGraphLaunch(rec.exec, stream_));
  }

 private:
  // Kernels launch on the calling thread's current device: make it ours (cheap, no sync).
  void use_device() const { CUDA_CHECK(cudaSetDevice(device_)); }

  int device_;
  DType act_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  std::unique_ptr<LtGemm> gemm_;
  AttentionLaunch attn_;
  struct Recording {
    int uses = 0;
    cudaGraphExec_t exec = nullptr;
  };
  std::unordered_map<uint64_t, Recording> recordings_;
  std::vector<char> host_stage_;  // activations_to_host_f32's download buffer
};

}  // namespace

int cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // no driver / no device: clear the error, report none
    return 0;
  }
  return n;
}

std::unique_ptr<Backend> make_cuda_backend(int device_id, DType activation_dtype) {
  return std::make_unique<CudaBackend>(device_id, activation_dtype);
}

cudaStream_t cuda_stream_of(Backend& backend) {
  auto* cuda = dynamic_cast<CudaBackend*>(&backend);
  LAMINA_CHECK(cuda != nullptr, "backend '", backend.name(), "' is not a CUDA backend");
  return cuda->stream();
}

}  // namespace lamina
