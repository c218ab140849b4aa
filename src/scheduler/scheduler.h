// In-flight batching over one Engine. Each step(): the capacity scheduler admits queued requests
// (and preempts under MaxUtilization), the micro-batch scheduler picks this step's tokens
// (decodes first, then prefill chunks within max_num_tokens), the engine runs them, and every
// request whose chunk reached its end samples its next token. Requests join and leave the batch
// at every step. Not thread-safe: one thread owns it (Executor wraps it with a thread and a queue).
// The contract is written down in docs/runtime.md.
#pragma once
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <unordered_map>
#include <vector>

#include "runtime/engine.h"
#include "scheduler/capacity_scheduler.h"
#include "scheduler/micro_batch.h"
#include "scheduler/request.h"
#include "scheduler/scheduled_step.h"
#include "scheduler/scheduler_stats.h"

namespace lamina {

struct SchedulerOptions {
  int max_batch_size = 0;  // running requests at once; 0 = the engine's num_slots (never more)
  int max_num_tokens = 0;  // tokens per step; 0 = the engine's max_num_tokens (never more)
  int tokens_per_block = 0;  // 0 = the engine's (Engine::kv_cache()); anything else must equal it
  int num_kv_blocks = 0;     // 0 = the engine's whole KV pool; else at most that many of its blocks
  bool enable_kv_cache_reuse = false;  // prefix reuse: requests share cached full blocks of a common prefix
  CapacityPolicy capacity_policy = CapacityPolicy::GuaranteedNoEvict;
  // Queue a decode step before reading the ids of the one in flight, where the next step is known
  // without them (docs/runtime.md, "Overlapped steps"); false runs every step to its end first.
  bool overlap_steps = true;
};

class Scheduler {
 public:
  Scheduler(Engine& engine, const SchedulerOptions& opts);
  ~Scheduler();  // collects a step still in flight, so the engine holds no uncollected ticket
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

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

  bool has_work() const { return !waiting_.empty() || !running_.empty() || in_flight_.has_value(); }
  // One iteration: one step's tokens become outputs. Returns the number of tokens the engine ran
  // (0: nothing could run). With overlap_steps the next decode step may be queued on the engine
  // before this one's ids are read; it is the next call's step.
  int step();

  const SchedulerStats& stats() const { return stats_; }
  int max_batch_size() const { return max_batch_; }
  int max_num_tokens() const { return max_tokens_; }
  bool kv_reuse_active() const { return capacity_.kv().reuse_enabled(); }

 private:
  // A step queued on the engine (enqueue_step_and_choose) whose ids are not read yet. Its requests
  // may end (stop rule, cancel) before it is read: their chunks and rows are then skipped.
  struct QueuedStep {
    uint64_t ticket = 0;
    std::vector<ScheduledChunk> chunks;
    std::vector<RequestId> chunk_ids;  // [chunks] the request of each chunk, to tell it still exists
    std::vector<Request*> row_owner;   // [R] the request each logit row samples for
    int tokens = 0;
  };

  void admit();
  // The step planned from the requests' current state and run at once (rows sampled on the host,
  // no rows, or overlap_steps off); returns its tokens.
  int run_planned_step(const std::vector<ScheduledChunk>& chunks, const ScheduledStep& batch,
                       const std::vector<TokenChoice>& choices, const std::vector<int32_t>& host_rows,
                       SteadyTime t_begin);
  // The step after `s`, queued before s's ids are read (docs/runtime.md, "Overlapped steps"):
  // planned as step() would plan it once s is read, with each request that samples in s taking
  // s's token from the device (fed) unless that token is its last (max_tokens), and the waiting
  // requests admitted now. Not where a request of s has ended meanwhile, a request to run samples
  // on the host, or the capacity policy may evict.
  std::optional<QueuedStep> queue_next_step(const QueuedStep& s);
  // engine_.enqueue_step_and_choose, its time counted in enqueue_seconds_.
  uint64_t enqueue(const StepBatch& batch, const std::vector<TokenChoice>& choices, bool feed_previous);
  // Reads s's ids and turns them into outputs (ended requests skipped); returns s's tokens.
  int complete(QueuedStep s, SteadyTime t_begin);
  // After a step: chunks' KV committed, each row's token accepted (or sampled from its host
  // logits) and the stop rules applied. Requests that ended meanwhile (not in requests_) skipped.
  void finish_step(const std::vector<ScheduledChunk>& chunks, const std::vector<RequestId>& chunk_ids,
                   const std::vector<Request*>& row_owner, const ChosenTokens& chosen,
                   const std::vector<int32_t>& host_rows, SteadyTime t_scheduled);
  // An engine step failed: its chunks' requests that still exist end with the error (logged).
  void end_with_error(const std::vector<ScheduledChunk>& chunks, const std::vector<RequestId>& chunk_ids,
                      const std::exception& e);
  bool alive(RequestId id, const Request* r) const;
  // Reads and drops a step still in flight (after a failure, at destruction).
  void discard_in_flight();
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
  bool overlap_steps_;
  std::optional<QueuedStep> in_flight_;
  double enqueue_seconds_ = 0;  // this step() call's time in enqueue()
  SchedulerStats stats_;
};

}  // namespace lamina
