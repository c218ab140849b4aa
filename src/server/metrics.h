// /metrics in Prometheus text format: the scheduler's gauges, counters and latency histograms,
// plus the HTTP layer's own counters. Names are listed in docs/serving.md.
#pragma once
#include <array>
#include <atomic>
#include <string>

#include "scheduler/scheduler_stats.h"

namespace lamina::server {

// Counted by the HTTP handlers (any thread).
struct HttpCounters {
  std::atomic<uint64_t> requests_ok{0};            // completions answered 200
  std::atomic<uint64_t> requests_bad{0};           // 4xx other than 429
  std::atomic<uint64_t> requests_rejected_busy{0};  // 429 (queue full) and 503 (draining)
  std::atomic<uint64_t> requests_failed{0};        // 5xx from the engine
  std::atomic<uint64_t> client_disconnects{0};     // streams cancelled because the client left
};

std::string render_metrics(const SchedulerStats& s, const HttpCounters& http, const std::string& model_name);

}  // namespace lamina::server
