// The thread-safe face of the Scheduler. One scheduler thread owns the Engine and the Scheduler;
// other threads (HTTP handlers) submit and cancel through a locked inbox, and tokens come back
// through each request's OutputCallback, called on a delivery thread in step order (a request's
// outputs in the order they were made). The scheduler thread hands a step's outputs over in one
// batch and goes on with the next step, so waking a thousand waiting HTTP handlers does not hold
// the GPU up (it took ~3 ms a step at 1024 streams when the scheduler thread did it).
#pragma once
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "scheduler/scheduler.h"

namespace lamina {

struct ExecutorOptions {
  SchedulerOptions scheduler;
  int max_queue = 0;  // requests waiting for admission (inbox + queue) before submit refuses; 0 = no limit
};

class Executor {
 public:
  Executor(Engine& engine, const ExecutorOptions& opts);
  ~Executor();  // cancels what is left and joins the thread
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  // Queues a request; any thread. Throws RequestRejected: Invalid (with the field to fix),
  // QueueFull (max_queue requests are waiting) or ShuttingDown.
  RequestId submit(RequestSpec spec, OutputCallback on_output);
  // Any thread; the request's KV is freed before the scheduler's next step. Unknown ids are ignored.
  void cancel(RequestId id);
  void cancel_all();
  // Stops accepting (submit throws ShuttingDown) and returns once every request has finished.
  void drain();

  SchedulerStats stats() const;  // a snapshot, refreshed after each step
  const RequestLimits& limits() const { return limits_; }
  int max_batch_size() const { return max_batch_size_; }
  int max_num_tokens() const { return max_num_tokens_; }
  bool kv_reuse_active() const { return kv_reuse_active_; }

 private:
  struct Pending {
    RequestId id;
    RequestSpec spec;
    OutputCallback on_output;
    SteadyTime arrival;
  };
  using Delivery = std::pair<std::shared_ptr<OutputCallback>, RequestOutput>;
  void loop();
  void publish();  // stats snapshot, then this step's outputs to the delivery thread (scheduler thread)
  void deliver_loop();  // calls the callbacks, then lowers the in-flight count (delivery thread)

  Scheduler scheduler_;  // touched only by the scheduler thread after construction
  const int max_queue_;
  RequestLimits limits_;
  int max_batch_size_, max_num_tokens_;
  bool kv_reuse_active_;

  mutable std::mutex mu_;
  std::condition_variable wake_, idle_;
  std::vector<Pending> inbox_;
  std::vector<RequestId> cancels_;
  bool cancel_all_ = false, accepting_ = true, stop_ = false;
  int scheduled_waiting_ = 0;  // scheduler's queue length as of the last step
  int in_flight_ = 0;          // submitted, final output not yet delivered
  // Outputs of the current step, handed over by publish(); scheduler thread only.
  std::vector<Delivery> deferred_;
  RequestId next_id_ = 1;
  SchedulerStats stats_;
  // Outputs waiting for the delivery thread (under out_mu_).
  std::mutex out_mu_;
  std::condition_variable out_cv_;
  std::vector<Delivery> outbox_;
  bool out_stop_ = false;
  std::thread delivery_, thread_;
};

}  // namespace lamina
