// Counters and latency histograms the scheduler keeps (the server renders them for /metrics).
// Plain values: the executor copies a snapshot under its lock after each step.
#pragma once
#include <array>
#include <cstdint>
#include <vector>

namespace lamina {

// Prometheus-style cumulative histogram over fixed upper bounds (seconds).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  const std::vector<uint64_t>& counts() const { return counts_; }  // per bucket, not cumulative; last = +Inf
  uint64_t count() const { return count_; }
  double sum() const { return sum_; }
  double quantile(double q) const;  // bucket upper bound holding the q-quantile (rough)

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  double sum_ = 0;
};

struct SchedulerStats {
  int num_waiting = 0, num_running = 0;
  int kv_blocks_used = 0, kv_blocks_total = 0, kv_blocks_cached = 0, tokens_per_block = 0;
  uint64_t prompt_tokens_total = 0, generation_tokens_total = 0, steps_total = 0;
  uint64_t preemptions_total = 0;
  uint64_t steps_overlapped_total = 0;  // steps queued before the previous step's ids were read
  uint64_t computed_tokens_total = 0;  // tokens the engine ran (prompt, generated, recomputed)
  uint64_t reused_tokens_total = 0;    // prompt tokens whose KV came from cached prefix blocks
  std::array<uint64_t, 5> finished_total{};  // by EndReason
  // Wall time of the steps by phase (seconds): schedule (capacity, admission, the micro-batch and
  // its block tables), engine (forward and token choice, the GPU's time included) and output
  // (stop rules, host sampling, handing tokens out).
  double step_schedule_seconds_total = 0, step_engine_seconds_total = 0, step_output_seconds_total = 0;
  Histogram ttft{{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0}};
  Histogram itl{{0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.025, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                 0.4, 0.5, 0.75, 1.0, 2.5}};
};

}  // namespace lamina
