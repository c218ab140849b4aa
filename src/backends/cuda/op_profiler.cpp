#include "backends/cuda/op_profiler.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "backends/cuda/cuda_check.h"

namespace lamina::cuda {

bool OpProfiler::requested() {
  const char* e = std::getenv("LAMINA_PROFILE_OPS");
  return e && *e && std::strcmp(e, "0") != 0;
}

cudaEvent_t OpProfiler::take_event() {
  if (free_events_.empty()) {
    cudaEvent_t e = nullptr;
    CUDA_CHECK(cudaEventCreate(&e));
    return e;
  }
  cudaEvent_t e = free_events_.back();
  free_events_.pop_back();
  return e;
}

OpProfiler::Span OpProfiler::begin(std::string label) {
  Pending p{std::move(label), take_event(), take_event()};
  CUDA_CHECK(cudaEventRecord(p.start, stream_));
  pending_.push_back(std::move(p));
  return Span(this, pending_.size() - 1);
}

OpProfiler::Span::~Span() {
  if (p_ && i_ < p_->pending_.size()) cudaEventRecord(p_->pending_[i_].stop, p_->stream_);
}

void OpProfiler::collect() {
  for (Pending& p : pending_) {
    float ms = 0.0f;
    if (cudaEventElapsedTime(&ms, p.start, p.stop) == cudaSuccess) {
      Total& t = totals_[p.label];
      t.ms += ms;
      ++t.calls;
    } else {
      cudaGetLastError();  // an op that threw before its end event: nothing to count
    }
    free_events_.push_back(p.start);
    free_events_.push_back(p.stop);
  }
  pending_.clear();
}

OpProfiler::~OpProfiler() {
  cudaStreamSynchronize(stream_);
  collect();
  double total = 0;
  for (const auto& [label, t] : totals_) total += t.ms;
  std::vector<std::pair<std::string, Total>> rows(totals_.begin(), totals_.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  std::fprintf(stderr, "[lamina] GPU time by op (LAMINA_PROFILE_OPS): %.1f ms in all\n", total);
  std::fprintf(stderr, "  share   total ms     calls    avg us  op\n");
  for (const auto& [label, t] : rows)
    std::fprintf(stderr, "  %5.1f%% %9.1f %9lld %9.1f  %s\n", total > 0 ? 100.0 * t.ms / total : 0.0, t.ms, t.calls,
                 1e3 * t.ms / double(std::max(1LL, t.calls)), label.c_str());
  for (cudaEvent_t e : free_events_) cudaEventDestroy(e);
}

const char* rows_bucket(int M) {
  return M <= 8 ? "M<=8" : M <= 64 ? "M<=64" : M <= 512 ? "M<=512" : M <= 2048 ? "M<=2048" : "M>2048";
}

std::string matmul_label(const char* kind, int M, int N, int K) {
  return std::string(kind) + " " + rows_bucket(M) + " " + std::to_string(N) + "x" + std::to_string(K);
}

}  // namespace lamina::cuda
