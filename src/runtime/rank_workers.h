// Persistent threads for the tensor-parallel ranks of one engine. The ranks of a step must run at
// once (their all-reduces wait for one another, so one thread cannot run two ranks); starting tp
// threads for every step costs tens of microseconds, so these live as long as the engine.
// Rank 0 runs on the calling thread; ranks 1..tp-1 each have their own worker.
// Hand-offs spin for a while before they sleep: a condition variable's wake-up takes tens of
// microseconds, and a decode step of a tensor-parallel engine hands off twice (out to the
// workers, back to the caller) every few milliseconds. LAMINA_RANK_SPIN_US sets how long
// (default 200 us; 0 sleeps at once).
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace lamina {

class RankWorkers {
 public:
  explicit RankWorkers(size_t ranks);  // starts ranks - 1 threads; a bad LAMINA_RANK_SPIN_US throws
  ~RankWorkers();                      // stops and joins them
  RankWorkers(const RankWorkers&) = delete;
  RankWorkers& operator=(const RankWorkers&) = delete;

  size_t ranks() const { return ranks_; }
  // fn(r) for every rank r at once; returns when all have returned, then rethrows the error that
  // was thrown first (in time) if any rank threw. One run at a time (concurrent callers wait their
  // turn).
  void run(const std::function<void(size_t)>& fn);

 private:
  void work(size_t rank);

  size_t ranks_;
  std::chrono::microseconds spin_;  // how long a hand-off polls before it sleeps
  std::mutex run_mutex_;  // serializes run()
  std::mutex mutex_;      // guards everything below
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(size_t)>* job_ = nullptr;
  // Written under mutex_; atomic so that spinning threads may read them without it.
  std::atomic<uint64_t> generation_{0};  // bumped once per run: a worker runs the job of each generation once
  std::atomic<size_t> pending_{0};       // workers still running this generation's job
  std::atomic<bool> stop_{false};
  struct RankError {
    std::exception_ptr error;
    uint64_t order = 0;  // from error_clock_: which error came first
  };
  std::atomic<uint64_t> error_clock_{0};
  std::vector<RankError> errors_;  // [rank]; errors_[0] unused (rank 0 runs on the caller)
  std::vector<std::thread> threads_;        // ranks 1..ranks-1
};

}  // namespace lamina
