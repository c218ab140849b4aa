// GPU time of the CUDA backend's ops, by op and shape, when LAMINA_PROFILE_OPS=1: each op is
// bracketed by two CUDA events on the backend's stream, the elapsed times are summed per label
// after the stream has synchronized, and the table is printed to stderr when the backend goes
// away. For finding where a step's time goes (e.g. a serving step at batch 1024) on machines
// without Nsight; recording (CUDA graphs) is off while profiling, so decode steps run as launched.
#pragma once
#include <cuda_runtime_api.h>

#include <map>
#include <string>
#include <vector>

namespace lamina::cuda {

class OpProfiler {
 public:
  static bool requested();  // LAMINA_PROFILE_OPS is set and not "0"
  explicit OpProfiler(cudaStream_t stream) : stream_(stream) {}
  ~OpProfiler();  // collects what is left and prints the table
  OpProfiler(const OpProfiler&) = delete;
  OpProfiler& operator=(const OpProfiler&) = delete;

  // Records the end event of the span begun by begin() (spans do not nest).
  class Span {
   public:
    Span() = default;
    Span(OpProfiler* p, size_t i) : p_(p), i_(i) {}
    Span(Span&& o) noexcept : p_(o.p_), i_(o.i_) { o.p_ = nullptr; }
    Span& operator=(Span&&) = delete;
    ~Span();

   private:
    OpProfiler* p_ = nullptr;
    size_t i_ = 0;
  };
  Span begin(std::string label);
  // Adds the elapsed time of every finished span to its label; call after the stream synchronized.
  void collect();

 private:
  struct Pending {
    std::string label;
    cudaEvent_t start, stop;
  };
  struct Total {
    double ms = 0;
    long long calls = 0;
  };
  cudaEvent_t take_event();

  cudaStream_t stream_;
  std::vector<Pending> pending_;
  std::vector<cudaEvent_t> free_events_;
  std::map<std::string, Total> totals_;
};

// Token rows bucketed for labels: "M<=8", "M<=64", "M<=512", "M<=2048", "M>2048".
const char* rows_bucket(int M);
// The label of a matmul: its kind (e.g. "gemv", "gemm", "gemm-quant"), rows_bucket(M) and the
// weight's N x K.
std::string matmul_label(const char* kind, int M, int N, int K);

}  // namespace lamina::cuda
