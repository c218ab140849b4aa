// In-flight batching over one Engine. Each step(): the capacity scheduler admits queued requests
// (and preempts under MaxUtilization), the micro-batch scheduler picks this step's tokens
// (decodes first, then prefill chunks within max_num_tokens), the engine runs them, and every
// request whose chunk reached its end samples its next token. Requests join and leave the batch
// at every step. Not thread-safe: one thread owns it (Executor wraps it with a thread and a queue).
// The contract is written down in docs/runtime.md.
#pragma once
#include <deque>
#include <memory>
#include <unordered_map>
#include <vector>

#include "runtime/engine.h"
#include "scheduler/capacity_scheduler.h"
#include "scheduler/micro_batch.h"
#include "scheduler/request.h"
#include "scheduler/scheduler_stats.h"

namespace lamina {

struct SchedulerOptions {
  int max_batch_size = 0;  // running requests at once; 0 = the engine's num_slots (never more)
  int max_num_tokens = 0;  // tokens per step; 0 = the engine's max_num_tokens (never more)
  int tokens_per_block = 0;  // 0 = the engine's (Engine::kv_cache()); anything else must equal it
  int num_kv_blocks = 0;     // 0 = the engine's whole KV pool; else at most that many of its blocks
  bool enable_kv_cache_reuse = false;  // prefix reuse: requests share cached full blocks of a common prefix
  CapacityPolicy capacity_policy = CapacityPolicy::GuaranteedNoEvict;
};

class Scheduler {
 public:
  Scheduler(Engine& engine, const SchedulerOptions& opts);

  // The limits validate_spec checks a request against.
  const RequestLimits& limits() const { return limits_; }
  // Queues a request (validated here too; throws RequestRejected). `on_output` gets one call per
  // step that produced something, the last one with finished = true.
  void add(RequestId id, RequestSpec spec, OutputCallback on_output, SteadyTime arrival);
  // Ends a queued or running request at once: its KV blocks and slot are free before the next
  // step, and it gets a final output with end_reason Cancelled. False if the id is unknown.
  bool cancel(RequestId id);
  void cancel_all();
  // Ends every request with `why` (e.g. Error after an internal failure), freeing all KV.
  void end_all(EndReason why, const std::string& error);

  bool has_work() const { return !waiting_.empty() || !running_.empty(); }
  // One iteration. Returns the number of tokens the engine ran (0: nothing could run).
  int step();

  const SchedulerStats& stats() const { return stats_; }
  int max_batch_size() const { return max_batch_; }
  int max_num_tokens() const { return max_tokens_; }
  bool kv_reuse_active() const { return capacity_.kv().reuse_enabled(); }

 private:
  void admit();
  void finish(Request& r, EndReason why, std::vector<GeneratedToken> tokens = {}, const std::string& error = "");
  void emit(Request& r, std::vector<GeneratedToken> tokens);
  void record_token_times(Request& r, SteadyTime now);
  void update_gauges();

  Engine& engine_;
  int max_batch_, max_tokens_, vocab_;
  RequestLimits limits_;
  CapacityScheduler capacity_;
  std::unordered_map<RequestId, std::unique_ptr<Request>> requests_;
  std::deque<Request*> waiting_;   // FIFO; preempted requests go back to the front
  std::vector<Request*> running_;  // admission order (oldest first)
  uint64_t admissions_ = 0;
  SchedulerStats stats_;
};

}  // namespace lamina
