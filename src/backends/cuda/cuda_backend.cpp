// CudaBackend: owns the device, the stream, cuBLASLt and the workspaces; each op forwards to a
// launch_x function of kernels.h (or LtGemm) on the stream.
#include "backends/cuda/cuda_backend.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backends/cuda/ab_switch.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_sampling.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/lm_head_screen.h"
#include "backends/cuda/matmul.h"
#include "backends/cuda/op_profiler.h"
#include "backends/cuda/pinned_staging.h"
#include "backends/cuda/quant_kernels.h"
#include "common/progress.h"

namespace lamina {
namespace {

using namespace lamina::cuda;

constexpr size_t kGemmWorkspaceBytes = 32u << 20;       // cuBLASLt's recommendation for Hopper
constexpr size_t kAttentionWorkspaceBytes = 64u << 20;  // decode arrival counters + split-K partials
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
    attn_.cc_major = prop.major;
    CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&attn_.side_stream, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&attn_.fork, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&attn_.join, cudaEventDisableTiming));
    gemm_ = std::make_unique<LtGemm>(kGemmWorkspaceBytes);
    CUDA_CHECK(cudaMalloc(&attn_.workspace, kAttentionWorkspaceBytes));
    attn_.workspace_bytes = kAttentionWorkspaceBytes;
    CUDA_CHECK(cudaMemsetAsync(attn_.workspace, 0, kAttentionCounterBytes, stream_));  // decode arrival counters
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    fp8_tensor_cores_ = prop.major * 10 + prop.minor >= 89;
    if (!fp8_tensor_cores_) fp8_scales_ = Fp8ActivationScales::kNone;
    if (const char* e = std::getenv("LAMINA_FP8_ACTIVATION_SCALES"); e && std::string(e) == "tensor")
      fp8_scales_ = std::min(fp8_scales_, Fp8ActivationScales::kPerTensor);
    // [amax bits | pad | x_scale]: cuBLASLt wants 16-byte aligned scale pointers.
    CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&fp8_tensor_scale_), 32));
    if (OpProfiler::requested()) profiler_ = std::make_unique<OpProfiler>(stream_);
    staging_ = std::make_unique<PinnedStaging>(kStagingSlots);
    preload_slice_argmax_join();
  }

  ~CudaBackend() override {
    cudaSetDevice(device_);
    cudaStreamSynchronize(stream_);
    profiler_.reset();  // prints its table
    staging_.reset();
    for (auto& [key, rec] : recordings_)
      if (rec.exec) cudaGraphExecDestroy(rec.exec);
    gemm_.reset();
    for (auto& [p, q] : quant_) {
      cudaFree(const_cast<float*>(q.w.scales));
      if (q.channel_scales) cudaFree(q.channel_scales);
    }
    for (void* p : retired_) cudaFree(p);
    cudaFree(dequant_scratch_.p);
    cudaFree(fp8_act_scratch_.p);
    cudaFree(fp8_token_scales_.p);
    cudaFree(fp8_tensor_scale_);
    cudaFree(attn_.workspace);
    cudaEventDestroy(attn_.fork);
    cudaEventDestroy(attn_.join);
    cudaStreamDestroy(attn_.side_stream);
    cudaStreamDestroy(stream_);
  }

  DeviceKind kind() const override { return DeviceKind::CUDA; }
  std::string name() const override { return name_; }
  DType activation_dtype() const override { return act_; }
  DType kv_dtype(bool fp8_cache) const override { return fp8_cache ? DType::F8_E4M3 : act_; }
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
    if (auto it = quant_.find(p); it != quant_.end()) {
      CUDA_CHECK(cudaFree(const_cast<float*>(it->second.w.scales)));
      if (it->second.channel_scales) CUDA_CHECK(cudaFree(it->second.channel_scales));
      quant_.erase(it);
    }
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
    if (profiler_) profiler_->collect();
  }
  void copy_to_device_ordered(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    use_device();
    if (!staging_->upload(dst, src, bytes, stream_)) copy_to_device(dst, src, bytes);
  }
  void copy_on_device(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0) return;
    use_device();
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream_));
  }
  // Even tickets are pinned slots' (no wait); odd ones, when no slot was free or the bytes too
  // many, the base class's copies made at once.
  uint64_t start_copy_to_host(const void* src, size_t bytes) override {
    use_device();
    if (const uint64_t t = staging_->start_download(src, bytes, stream_)) return t << 1;
    return (Backend::start_copy_to_host(src, bytes) << 1) | 1;
  }
  void finish_copy_to_host(uint64_t ticket, void* dst) override {
    use_device();
    if (ticket & 1) return Backend::finish_copy_to_host(ticket >> 1, dst);
    if (!staging_->finish_download(ticket >> 1, dst)) fail_unknown_copy(ticket);
  }
  void synchronize() override {
    use_device();
    CUDA_CHECK(cudaStreamSynchronize(stream_));
    if (profiler_) profiler_->collect();
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
  // Keeps the weight quantized on the device; matmul() finds its format by the returned pointer.
  void* upload_quantized_weight(const QuantizedWeight& q) override {
    q.validate();
    LAMINA_CHECK(q.rows <= INT32_MAX && q.cols <= INT32_MAX, "quantized weight too large");
    auto* data = alloc(q.data_bytes());
    const bool tiles = q.format == WeightFormat::Int4Group && act_ != DType::F32 && int4_tiles_enabled() &&
                       int4_tiles_fit(int(q.rows), int(q.cols), q.group_size);
    if (tiles) {  // the int4 GEMV's tensor-core layout: through a temporary copy of the packed rows
      void* rows = alloc(q.data_bytes());
      copy_to_device(rows, q.data, q.data_bytes());
      launch_int4_to_tiles(data, rows, int(q.rows), int(q.cols), stream_);
      synchronize();
      free(rows);
    } else {
      copy_to_device(data, q.data, q.data_bytes());
    }
    auto* scales = static_cast<float*>(alloc(q.num_scales() * sizeof(float)));
    copy_to_device(scales, q.scales, q.num_scales() * sizeof(float));
    float* channel_scales = nullptr;
    if (q.format == WeightFormat::Fp8PerTensor && fp8_tensor_cores_) {
      // The per-token FP8 GEMM takes the weight scale as one per output channel ([N] copies).
      const std::vector<float> per_channel(size_t(q.rows), q.scales[0]);
      channel_scales = static_cast<float*>(alloc(per_channel.size() * sizeof(float)));
      copy_to_device(channel_scales, per_channel.data(), per_channel.size() * sizeof(float));
    }
    quant_[data] = QuantEntry{{q.format, data, scales, q.group_size, tiles}, int(q.rows), int(q.cols), channel_scales};
    // The M > 8 path dequantizes into this scratch; sized here, before any graph capture.
    grow(dequant_scratch_, size_t(q.rows) * size_t(q.cols) * dtype_size(act_));
    if (q.format == WeightFormat::Fp8PerTensor && !fp8_tensor_cores_ && !warned_no_fp8_) {
      warned_no_fp8_ = true;
      log_warn(name_ + " has no FP8 tensor cores (compute capability < 8.9): FP8 weights are dequantized for "
               "batched matmuls (correct, but slower than on Hopper); decode reads them as FP8");
    }
    return data;
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
    auto span = profile("embedding", T);
    launch_embedding(act_, out, ids, table, T, H, stream_);
  }
  void rms_norm(void* out, const void* x, const void* w, int T, int H, float eps) override {
    use_device();
    auto span = profile("rms_norm", T);
    launch_rms_norm(act_, out, x, w, T, H, eps, stream_);
  }
  void add_rms_norm(void* residual, const void* x, void* out, const void* w, int T, int H, float eps) override {
    use_device();
    auto span = profile("add_rms_norm", T);
    launch_add_rms_norm(act_, residual, x, out, w, T, H, eps, stream_);
  }
  // Over an FP8 weight at batched T (the per-token FP8 GEMM's case), the norm also quantizes its
  // output for that GEMM in the same pass, and the matmul that follows takes it instead of
  // quantizing out again (LAMINA_FUSED_NORM_QUANT=0: two passes, for comparisons). Once a
  // per-token FP8 GEMM has run (so cuBLASLt takes the plan and no fallback will read out), out
  // itself is left unwritten: its only reader is that matmul (the contract in ops/backend.h), and
  // its store was 2 of the pass's 9 bytes an element (LAMINA_NORM_QUANT_KEEPS_OUTPUT=1 writes it).
  void add_rms_norm_before_matmul(void* residual, const void* x, void* out, const void* w, int T, int H, float eps,
                                  const void* next_w) override {
    if (!norm_quantizing_for(residual, x, out, w, T, H, eps, next_w)) add_rms_norm(residual, x, out, w, T, H, eps);
  }
  // The same without the residual add: after a matmul_accumulate.
  void rms_norm_before_matmul(void* out, const void* x, const void* w, int T, int H, float eps,
                              const void* next_w) override {
    if (!norm_quantizing_for(nullptr, x, out, w, T, H, eps, next_w)) rms_norm(out, x, w, T, H, eps);
  }
  // The norm with next_w's FP8 input quantization in its pass (residual: nullptr for none), where
  // it applies; false, having run nothing, otherwise.
  bool norm_quantizing_for(void* residual, const void* x, void* out, const void* w, int T, int H, float eps,
                           const void* next_w) {
    use_device();
    prepared_ = {};
    const auto it = quant_.find(next_w);
    if (T > kGemvMaxM && fused_norm_quant_enabled() && fp8_scales_ == Fp8ActivationScales::kPerToken &&
        it != quant_.end() && it->second.cols == H && takes_fp8_gemm(it->second, it->second.rows, H)) {
      auto span = profile(residual != nullptr ? "add_rms_norm+quant" : "rms_norm+quant", T);
      void* xq = grow(fp8_act_scratch_, size_t(T) * size_t(H));
      auto* scales = static_cast<float*>(grow(fp8_token_scales_, size_t(T) * sizeof(float)));
      const bool skip_out = per_token_fp8_gemm_ran_ && !norm_quant_keeps_output();
      if (launch_add_rms_norm_quantize_fp8(act_, residual, x, skip_out ? nullptr : out, w, T, H, eps, xq, scales,
                                           stream_)) {
        prepared_ = {out, next_w, T, H, !skip_out};
        return true;
      }
    }
    return false;
  }
  void add(void* residual, const void* x, size_t n) override {
    use_device();
    auto span = profile("add", -1);
    launch_add(act_, residual, x, n, stream_);
  }
  void matmul(void* out, const void* x, const void* w, int M, int N, int K) override {
    use_device();
    const bool input_ready = take_prepared(x, w, M, K);
    auto it = quant_.find(w);
    const bool quant = it != quant_.end(), gemv = M <= kGemvMaxM;
    auto span = profile_matmul(gemv ? (quant ? "gemv-quant" : "gemv") : (quant ? "gemm-quant" : "gemm"), M, N, K);
    if (quant) return quantized_matmul(out, x, it->second, M, N, K, input_ready);
    if (gemv) {
      launch_gemv(act_, out, x, w, M, N, K, stream_);
    } else {
      gemm_->run(act_, out, x, w, M, N, K, stream_);
    }
  }
  // One matmul at one M of each of the GEMM's row buckets (LtGemm::algorithm_rows), largest first
  // (the scratch each takes then grows once): each bucket's algorithm is chosen and its kernel
  // loaded now. Not profiled.
  void prepare_matmul(void* out, const void* x, const void* w, int max_M, int N, int K) override {
    use_device();
    preparing_ = true;
    for (int M : LtGemm::bucket_rows(kGemvMaxM + 1, max_M)) matmul(out, x, w, M, N, K);
    preparing_ = false;
  }
  // Only the matmul right after a norm that prepared its input may take it: whether this one does
  // (x, w, M, K as prepared); prepared_ is consumed either way.
  bool take_prepared(const void* x, const void* w, int M, int K) {
    const PreparedFp8Input prepared = std::exchange(prepared_, {});
    const bool input_ready = prepared.x == x && prepared.w == w && prepared.M == M && prepared.K == K;
    LAMINA_CHECK(input_ready || prepared.x != x || prepared.out_written, "the norm's output was prepared for ",
                 "another matmul and not written (Backend::add_rms_norm_before_matmul names the matmul that reads it)");
    return input_ready;
  }
  // The GEMM adds its product to the residual as its C input (beta 1) at batched M: over plain
  // weights, FP8 weights in the per-token mode once a per-token GEMM has run (cuBLASLt refusing
  // the accumulating plan turns this off for the backend's life, with a warning), and other
  // quantized formats through their dequantized copy. Not the GEMV (M <= 8).
  // LAMINA_RESIDUAL_IN_GEMM=0 turns it off (A/B).
  bool matmul_accumulate(void* residual, const void* x, const void* w, int M, int N, int K) override {
    if (!accumulates(M)) return false;
    const auto it = quant_.find(w);
    const bool fp8 = it != quant_.end() && takes_fp8_gemm(it->second, N, K);
    if (fp8 && !per_token_fp8_ready()) return false;
    use_device();
    const PreparedFp8Input prepared = prepared_;
    const bool input_ready = take_prepared(x, w, M, K);
    auto span = profile_matmul(it != quant_.end() ? "gemm-quant+add" : "gemm+add", M, N, K);
    if (it == quant_.end()) {
      gemm_->run(act_, residual, x, w, M, N, K, stream_, /*accumulate=*/true);
      return true;
    }
    const QuantEntry& q = it->second;
    check_quant_shape(q, N, K, "matmul");
    if (!fp8) {
      void* wd = grow(dequant_scratch_, size_t(N) * size_t(K) * dtype_size(act_));
      launch_dequantize_weight(act_, wd, q.w, N, K, stream_);
      gemm_->run(act_, residual, x, wd, M, N, K, stream_, /*accumulate=*/true);
      return true;
    }
    const bool done = accumulating_fp8_gemm(residual, q, M, N, K, [&](void* xq, float* scales) {
      if (!input_ready) launch_quantize_fp8_per_token(act_, x, M, K, xq, scales, stream_);
      return true;
    });
    if (!done) prepared_ = prepared;  // the caller's matmul takes it instead
    return done;
  }
  // Over FP8 weights, the SwiGLU quantized as it forms it (silu_mul_matmul's fused pass) and the
  // down GEMM adding to the residual; otherwise silu_mul then matmul_accumulate.
  bool silu_mul_matmul_accumulate(void* residual, void* mlp, const void* gate_up, const void* w, int T, int N,
                                  int F) override {
    if (!accumulates(T)) return false;
    const auto it = quant_.find(w);
    if (it == quant_.end() || !takes_fp8_gemm(it->second, N, F)) {
      silu_mul(mlp, gate_up, T, F);
      return matmul_accumulate(residual, mlp, w, T, N, F);
    }
    if (!fused_swiglu_quant_enabled() || !per_token_fp8_ready()) return false;
    use_device();
    prepared_ = {};  // its quantization overwrites the FP8 GEMM's scratch
    check_quant_shape(it->second, N, F, "matmul");
    auto span = profile_matmul("swiglu+gemm-quant+add", T, N, F);
    return accumulating_fp8_gemm(residual, it->second, T, N, F, [&](void* xq, float* scales) {
      return launch_silu_mul_quantize_fp8_per_token(act_, gate_up, T, F, xq, scales, stream_);
    });
  }
  bool accumulates(int M) const { return M > kGemvMaxM && residual_in_gemm_enabled() && !accumulate_refused_; }
  // The per-token FP8 GEMM has run here, so its plans are known to be taken.
  bool per_token_fp8_ready() const {
    return fp8_scales_ == Fp8ActivationScales::kPerToken && per_token_fp8_gemm_ran_;
  }
  bool qkv_rope_kv_write(void* qkv, const void* x, const void* w, int T, int K, const int32_t* positions,
                         const int32_t* slots, const float* inv_freq, KVCacheLayer cache,
                         const AttentionShape& s) override {
    if (T > kGemvMaxM || !fused_rope_enabled()) return false;
    use_device();
    const int N = (s.num_q_heads + 2 * s.num_kv_heads) * s.head_dim;
    auto span = profile_matmul("gemv+rope+kv", T, N, K);
    if (auto it = quant_.find(w); it != quant_.end()) {
      check_quant_shape(it->second, N, K, "qkv");
      return launch_gemv_quant_qkv_rope_kv_write(act_, qkv, x, it->second.w, T, K, positions, slots, inv_freq, cache, s,
                                                 stream_);
    }
    return launch_qkv_rope_kv_write_gemv(act_, qkv, x, w, T, K, positions, slots, inv_freq, cache, s, stream_);
  }
  bool gate_up_swiglu(void* out, const void* x, const void* w, int M, int F, int K) override {
    if (M > kGemvMaxM) return false;
    use_device();
    auto span = profile_matmul("gemv+swiglu", M, 2 * F, K);
    if (auto it = quant_.find(w); it != quant_.end()) {
      check_quant_shape(it->second, 2 * F, K, "gate_up");
      return launch_gemv_quant_gate_up(act_, out, x, it->second.w, M, F, K, stream_);
    }
    launch_gate_up_swiglu_gemv(act_, out, x, w, M, F, K, stream_);
    return true;
  }
  void rope_kv_write(void* qkv, const int32_t* positions, const int32_t* slots, const float* inv_freq,
                     KVCacheLayer cache, const AttentionShape& s, int T) override {
    use_device();
    auto span = profile("rope_kv_write", T);
    launch_rope_kv_write(act_, qkv, positions, slots, inv_freq, cache, s, T, stream_);
  }
  void attention(void* out, const void* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                 const AttentionShape& s, int T) override {
    use_device();
    auto span = profile("attention", T);
    launch_attention(act_, out, qkv, positions, slots, cache, s, T, attn_, stream_);
  }
  void silu_mul(void* out, const void* gate_up, int T, int F) override {
    use_device();
    auto span = profile("silu_mul", T);
    launch_silu_mul(act_, out, gate_up, T, F, stream_);
  }
  void silu_mul_matmul(void* out, void* mlp, const void* gate_up, const void* w, int T, int N, int F) override {
    use_device();
    prepared_ = {};  // its quantization overwrites the FP8 GEMM's scratch
    if (T > kGemvMaxM && fused_swiglu_quant_enabled() && fp8_scales_ == Fp8ActivationScales::kPerToken) {
      const auto it = quant_.find(w);
      if (it != quant_.end() && takes_fp8_gemm(it->second, N, F)) {
        const QuantEntry& q = it->second;
        check_quant_shape(q, N, F, "matmul");
        auto span = profile_matmul("swiglu+gemm-quant", T, N, F);
        try {
          const bool done = fp8_gemm_per_token(out, q, T, N, F, [&](void* xq, float* scales) {
            return launch_silu_mul_quantize_fp8_per_token(act_, gate_up, T, F, xq, scales, stream_);
          });
          if (done) return;
        } catch (const Error&) {
          // cuBLASLt refused the per-token plan: the two-op path below meets the refusal in
          // fp8_gemm, which warns and moves to the next scale mode.
        }
      }
    }
    Backend::silu_mul_matmul(out, mlp, gate_up, w, T, N, F);
  }
  void gather_rows(void* out, const void* x, const int32_t* rows, int num_rows, int H) override {
    use_device();
    auto span = profile("gather_rows", num_rows);
    launch_gather_rows(act_, out, x, rows, num_rows, H, stream_);
  }
  void select_tokens(int32_t* ids, const void* logits, int R, int V, const TokenChoice* choices) override {
    use_device();
    auto span = profile("select_tokens", R);
    // Few rows (decode at small batch): each greedy row's argmax split over 64 blocks (H100, one
    // 128k-token bf16 row: 3.5 against 8.5 us; at 64 rows the split is slower, 15.0 against 8.8).
    const int split = R <= kArgmaxSplitMaxRows && argmax_split_enabled() ? kArgmaxSplit : 0;
    auto* partials = split ? static_cast<SliceArgmax*>(grow(argmax_partials_, size_t(R) * split * sizeof(SliceArgmax)))
                           : nullptr;
    launch_sample_split(act_, logits, R, V, choices, ids, partials, split, stream_);
  }
  void resolve_fed_ids(int32_t* ids, const int32_t* chosen, int T) override {
    use_device();
    auto span = profile("resolve_fed_ids", T);
    launch_resolve_fed_ids(ids, chosen, T, stream_);
  }
  void advance_fed_inputs(int32_t* ids, int32_t* positions, const int32_t* logit_rows, const int32_t* chosen,
                          int T) override {
    use_device();
    LAMINA_CHECK(T <= 1024, "advance_fed_inputs takes at most 1024 tokens (got ", T, ")");
    launch_advance_fed_inputs(ids, positions, logit_rows, chosen, T, stream_);
  }
  void spread_slice_argmax(float* gathered, const SliceArgmax* mine, int R, int rank, int tp) override {
    use_device();
    launch_spread_slice_argmax(gathered, mine, R, rank, tp, stream_);
  }
  void join_slice_argmax(int32_t* ids, const float* gathered, int R, int tp, int64_t vocab_per_rank) override {
    use_device();
    launch_join_slice_argmax(ids, gathered, R, tp, vocab_per_rank, stream_);
  }
  void slice_argmax_rows(SliceArgmax* out, const void* logits, int R, int V, int64_t row_stride) override {
    use_device();
    auto span = profile("slice_argmax_rows", R);
    launch_slice_argmax(act_, logits, R, V, row_stride, out, stream_);
  }

  size_t lm_head_screen_bytes(const void* lm_head, int V, int H) override {
    // A quantized lm_head (--quantize_lm_head) is read as stored; LAMINA_LM_HEAD_SCREEN=0: no screen (A/B).
    if (!lm_head_screen_enabled() || quant_.count(lm_head) != 0 || !cuda::lm_head_screen_fits(act_, V, H)) return 0;
    return cuda::lm_head_screen_bytes(V, H);
  }
  void make_lm_head_screen(void* screen, const void* lm_head, int V, int H) override {
    use_device();
    launch_make_lm_head_screen(act_, screen, lm_head, V, H, stream_);
    synchronize();
  }
  void screened_argmax(SliceArgmax* out, int32_t* ids, const void* x, const void* lm_head, const void* screen,
                       void* scratch, int R, int V, int H) override {
    use_device();
    auto span = profile("screened_argmax", R);
    launch_screened_argmax(act_, out, ids, x, lm_head, screen, scratch, R, V, H, stream_);
  }

  // First use of a key runs the ops directly (GEMM plans and kernel attributes are set up on
  // first call, outside any capture); the second captures them into a graph; later uses replay it.
  void run_recorded(uint64_t key, const std::function<void()>& ops) override {
    use_device();
    if (profiler_) return ops();  // events cannot be recorded inside a graph capture
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
  struct QuantEntry {
    DeviceQuantWeight w;
    int rows = 0, cols = 0;
    float* channel_scales = nullptr;  // FP8 on FP8 tensor cores: [rows] copies of the tensor scale
  };
  // A profiling span over the op `op` of `rows` tokens (rows < 0: not known to the op; nothing
  // when LAMINA_PROFILE_OPS is unset).
  OpProfiler::Span profile(const char* op, int rows) {
    if (!profiler_ || preparing_) return {};
    return profiler_->begin(rows < 0 ? std::string(op) : std::string(op) + " " + rows_bucket(rows));
  }
  // The same over a matmul of kind `kind` (matmul_label: its rows bucketed, the weight's N x K).
  OpProfiler::Span profile_matmul(const char* kind, int M, int N, int K) {
    if (!profiler_ || preparing_) return {};
    return profiler_->begin(matmul_label(kind, M, N, K));
  }
  // Device scratch that only grows. A replaced buffer is kept until the backend dies, since a
  // recorded graph may still point at it.
  struct Scratch {
    void* p = nullptr;
    size_t bytes = 0;
  };
  void* grow(Scratch& s, size_t bytes) {
    if (bytes > s.bytes) {
      if (s.p) retired_.push_back(s.p);
      s.p = alloc(bytes);
      s.bytes = bytes;
    }
    return s.p;
  }

  // Fails unless q is an [N, K] weight; `what` names the product in the message.
  static void check_quant_shape(const QuantEntry& q, int N, int K, const char* what) {
    LAMINA_CHECK(q.rows == N && q.cols == K, what, " of a quantized [", q.rows, ", ", q.cols, "] weight as [", N, ", ",
                 K, "]");
  }
  // Whether cuBLASLt's FP8 GEMM can take this [N, K] weight: e4m3 with a tensor scale, K a
  // multiple of 16 and N of 8 (the alignment its FP8 kernels need).
  static bool takes_fp8_gemm(const QuantEntry& q, int N, int K) {
    return q.w.format == WeightFormat::Fp8PerTensor && K % 16 == 0 && N % 8 == 0;
  }

  // M <= 8: the quantized GEMV reads the weight as stored. Larger M: FP8 weights on FP8 tensor
  // cores, the activations quantized on the fly with one scale per token (per tensor where
  // cuBLASLt refuses per-token scales); otherwise dequantize into scratch, then the regular GEMM.
  // input_ready: x's per-token FP8 quantization is already in the FP8 GEMM's scratch (prepared_).
  void quantized_matmul(void* out, const void* x, const QuantEntry& q, int M, int N, int K, bool input_ready = false) {
    check_quant_shape(q, N, K, "matmul");
    if (M <= kGemvMaxM) return launch_gemv_quant(act_, out, x, q.w, M, N, K, stream_);
    if (takes_fp8_gemm(q, N, K) && fp8_gemm(out, x, q, M, N, K, input_ready)) return;
    void* w = grow(dequant_scratch_, size_t(N) * size_t(K) * dtype_size(act_));
    launch_dequantize_weight(act_, w, q.w, N, K, stream_);
    gemm_->run(act_, out, x, w, M, N, K, stream_);
  }

  // The FP8 tensor-core GEMM in the best activation-scale mode cuBLASLt accepts here; false (nothing
  // written) once no mode is left. A refused mode is dropped for the backend's life, with a warning;
  // the quantization kernels it ran are harmless, since the next mode or the caller overwrites out.
  bool fp8_gemm(void* out, const void* x, const QuantEntry& q, int M, int N, int K, bool input_ready = false) {
    const DeviceQuantWeight& w = q.w;
    while (fp8_scales_ != Fp8ActivationScales::kNone) {
      const bool per_token = fp8_scales_ == Fp8ActivationScales::kPerToken;
      try {
        if (per_token) {
          fp8_gemm_per_token(out, q, M, N, K, [&](void* xq, float* scales) {
            if (!input_ready) launch_quantize_fp8_per_token(act_, x, M, K, xq, scales, stream_);
            return true;
          });
        } else {
          void* xq = grow(fp8_act_scratch_, size_t(M) * size_t(K));
          auto* amax_bits = reinterpret_cast<unsigned*>(fp8_tensor_scale_);
          float* scale = fp8_tensor_scale_ + 4;
          launch_quantize_fp8_dynamic(act_, x, size_t(M) * size_t(K), xq, amax_bits, scale, stream_);
          gemm_->run_fp8(act_, out, xq, scale, Fp8Scaling::kPerTensor, w.data, w.scales, M, N, K, stream_);
        }
        return true;
      } catch (const Error& e) {
        fp8_scales_ = per_token ? Fp8ActivationScales::kPerTensor : Fp8ActivationScales::kNone;
        log_warn(std::string("FP8 GEMM with per-") + (per_token ? "token" : "tensor") +
                 " activation scales unavailable (" + e.what() + "); " +
                 (per_token ? "using per-tensor activation scales" : "dequantizing FP8 weights for batched matmuls"));
      }
    }
    return false;
  }

  // out[M,N] = xq[M,K] · w[N,K]^T on FP8 tensor cores, xq with one scale per token as written by
  // quantize(xq [M,K] fp8, scales [M] f32), which returns false where it cannot (nothing run then).
  // Throws where cuBLASLt refuses the per-token plan.
  template <class Quantize>
  bool fp8_gemm_per_token(void* out, const QuantEntry& q, int M, int N, int K, Quantize&& quantize,
                          bool accumulate = false) {
    void* xq = grow(fp8_act_scratch_, size_t(M) * size_t(K));
    auto* scales = static_cast<float*>(grow(fp8_token_scales_, size_t(M) * sizeof(float)));
    if (!quantize(xq, scales)) return false;
    gemm_->run_fp8(act_, out, xq, scales, Fp8Scaling::kPerToken, q.w.data, q.channel_scales, M, N, K, stream_,
                   accumulate);
    per_token_fp8_gemm_ran_ = true;
    return true;
  }
  // fp8_gemm_per_token adding to out; false where quantize declined or cuBLASLt refused the
  // accumulating plan (then never asked again; the caller takes the two-step path).
  template <class Quantize>
  bool accumulating_fp8_gemm(void* out, const QuantEntry& q, int M, int N, int K, Quantize&& quantize) {
    try {
      return fp8_gemm_per_token(out, q, M, N, K, quantize, /*accumulate=*/true);
    } catch (const Error& e) {
      accumulate_refused_ = true;
      log_warn(std::string("FP8 GEMM adding to the residual unavailable (") + e.what() +
               "); the residual add stays in the norm");
      return false;
    }
  }

  // LAMINA_FUSED_SWIGLU_QUANT=0: over FP8 weights the down projection's input is written by silu_mul
  // and then quantized, two passes, as before the fused kernel (for comparisons).
  static bool fused_swiglu_quant_enabled() {
    static const bool on = ab_switch_on("LAMINA_FUSED_SWIGLU_QUANT");
    return on;
  }
  // LAMINA_RESIDUAL_IN_GEMM=0: the residual add stays in the norm after the GEMM (for comparisons).
  static bool residual_in_gemm_enabled() {
    static const bool on = ab_switch_on("LAMINA_RESIDUAL_IN_GEMM");
    return on;
  }
  // LAMINA_NORM_QUANT_KEEPS_OUTPUT=1: the norm that quantizes the next FP8 GEMM's input writes
  // its own 16-bit output too (for comparisons).
  static bool norm_quant_keeps_output() {
    static const bool keep = [] {
      const char* e = std::getenv("LAMINA_NORM_QUANT_KEEPS_OUTPUT");
      return e != nullptr && std::string(e) == "1";
    }();
    return keep;
  }
  // LAMINA_FUSED_NORM_QUANT=0: the norm before an FP8 GEMM writes only its output, which the GEMM
  // then quantizes, two passes, as before the fused kernel (for comparisons).
  static bool fused_norm_quant_enabled() {
    static const bool on = ab_switch_on("LAMINA_FUSED_NORM_QUANT");
    return on;
  }
  // LAMINA_FUSED_ROPE=0 runs the qkv GEMV and rope_kv_write as two kernels at decode (for comparisons).
  static bool fused_rope_enabled() {
    static const bool on = ab_switch_on("LAMINA_FUSED_ROPE");
    return on;
  }
  // LAMINA_INT4_TILES=0 keeps int4 weights in their packed rows and the scalar-decode GEMV (for comparisons).
  static bool int4_tiles_enabled() { return ab_switch_on("LAMINA_INT4_TILES"); }

  // Kernels launch on the calling thread's current device: make it ours (cheap, no sync).
  void use_device() const { CUDA_CHECK(cudaSetDevice(device_)); }

  int device_;
  DType act_;
  std::string name_;
  cudaStream_t stream_ = nullptr;
  static constexpr int kStagingSlots = 8;  // ordered uploads and early downloads in flight at once
  std::unique_ptr<PinnedStaging> staging_;
  std::unique_ptr<LtGemm> gemm_;
  bool preparing_ = false;  // inside prepare_matmul: its matmuls are not profiled
  AttentionLaunch attn_;
  struct Recording {
    int uses = 0;
    cudaGraphExec_t exec = nullptr;
  };
  std::unordered_map<uint64_t, Recording> recordings_;
  std::unique_ptr<OpProfiler> profiler_;  // LAMINA_PROFILE_OPS=1 only
  std::vector<char> host_stage_;  // activations_to_host_f32's download buffer
  std::unordered_map<const void*, QuantEntry> quant_;  // quantized weights by data pointer
  Scratch dequant_scratch_;   // [N, K] activation dtype: the largest quantized weight
  Scratch argmax_partials_;   // SliceArgmax [R, kArgmaxSplit]: select_tokens' split greedy rows
  static constexpr int kArgmaxSplit = 64, kArgmaxSplitMaxRows = 8;
  // LAMINA_ARGMAX_SPLIT=0: one block a greedy row (for comparisons).
  static bool argmax_split_enabled() {
    static const bool on = ab_switch_on("LAMINA_ARGMAX_SPLIT");
    return on;
  }
  // LAMINA_LM_HEAD_SCREEN=0: no lm_head screen (for comparisons).
  static bool lm_head_screen_enabled() {
    static const bool on = ab_switch_on("LAMINA_LM_HEAD_SCREEN");
    return on;
  }
  Scratch fp8_act_scratch_;   // [M, K] e4m3 activations of the FP8 GEMM
  std::vector<void*> retired_;
  // Activation scales of the FP8 GEMM, best first; kNone: batched FP8 matmuls dequantize.
  enum class Fp8ActivationScales { kNone, kPerTensor, kPerToken };
  Fp8ActivationScales fp8_scales_ = Fp8ActivationScales::kPerToken;
  Scratch fp8_token_scales_;           // [M] float: per-token activation scales
  // What add_rms_norm_before_matmul left in fp8_act_scratch_ / fp8_token_scales_: the per-token
  // quantization of x [M, K] for the matmul by w. The next matmul takes it or forgets it.
  struct PreparedFp8Input {
    const void* x = nullptr;
    const void* w = nullptr;
    int M = 0, K = 0;
    bool out_written = true;  // false: x (the norm's output) holds nothing; only the matmul by w may come
  };
  PreparedFp8Input prepared_;
  bool per_token_fp8_gemm_ran_ = false;  // cuBLASLt took a per-token FP8 plan (no fallback reads x again)
  bool accumulate_refused_ = false;      // cuBLASLt refused an FP8 GEMM adding to its C input
  float* fp8_tensor_scale_ = nullptr;  // device [amax bits, -, -, -, x_scale, ...]: per-tensor scale
  bool fp8_tensor_cores_ = false;
  bool warned_no_fp8_ = false;
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
