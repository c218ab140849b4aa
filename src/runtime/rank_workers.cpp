#include "runtime/rank_workers.h"

#include <chrono>
#include <cstdlib>
#include <string>

#include "common/error.h"

namespace lamina {
namespace {

// LAMINA_RANK_SPIN_US, read when workers start.
std::chrono::microseconds spin_time_from_env() {
  const char* e = std::getenv("LAMINA_RANK_SPIN_US");
  if (e == nullptr || *e == 0) return std::chrono::microseconds(200);
  char* end = nullptr;
  const long v = std::strtol(e, &end, 10);
  if (*end != 0 || v < 0 || v > 1000000)
    fail("LAMINA_RANK_SPIN_US must be a number of microseconds from 0 to 1000000, not '", e, "'");
  return std::chrono::microseconds(v);
}

// Polls done() for up to `limit`; the caller then waits on its condition variable, which returns
// at once if done() became true.
template <class Done>
void spin_until(std::chrono::microseconds limit, Done done) {
  if (limit.count() == 0) return;
  const auto start = std::chrono::steady_clock::now();
  for (unsigned i = 1;; ++i) {
    if (done()) return;
    if (i % 64 == 0 && std::chrono::steady_clock::now() - start > limit) return;
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
}

}  // namespace

RankWorkers::RankWorkers(size_t ranks)
    : ranks_(ranks == 0 ? 1 : ranks), spin_(spin_time_from_env()), errors_(ranks_) {
  for (size_t r = 1; r < ranks_; ++r) threads_.emplace_back([this, r] { work(r); });
}

RankWorkers::~RankWorkers() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  start_cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void RankWorkers::work(size_t rank) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void(size_t)>* job = nullptr;
    spin_until(spin_, [&] { return stop_ || generation_.load() != seen; });
    {
      std::unique_lock<std::mutex> lock(mutex_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
    }
    RankError err;
    try {
      (*job)(rank);
    } catch (...) {
      err = {std::current_exception(), error_clock_.fetch_add(1)};
    }
    std::lock_guard<std::mutex> lock(mutex_);
    errors_[rank] = err;
    if (--pending_ == 0) done_cv_.notify_one();
  }
}

void RankWorkers::run(const std::function<void(size_t)>& fn) {
  std::lock_guard<std::mutex> turn(run_mutex_);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    job_ = &fn;
    pending_ = ranks_ - 1;
    ++generation_;
  }
  start_cv_.notify_all();
  RankError err0;
  try {
    fn(0);
  } catch (...) {
    err0 = {std::current_exception(), error_clock_.fetch_add(1)};
  }
  std::vector<RankError> errors;
  spin_until(spin_, [&] { return pending_.load() == 0; });
  {
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
    errors.swap(errors_);
    errors_.assign(ranks_, RankError{});
  }
  // The error that came first: a rank whose peer failed may fail later for that reason alone (its
  // all-reduce gave up waiting, peer_wait.cuh), and the first error says what went wrong.
  errors[0] = err0;
  const RankError* first = nullptr;
  for (const RankError& err : errors)
    if (err.error && (first == nullptr || err.order < first->order)) first = &err;
  if (first) std::rethrow_exception(first->error);
}

}  // namespace lamina
