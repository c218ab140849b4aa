#include "runtime/rank_workers.h"

namespace lamina {

RankWorkers::RankWorkers(size_t ranks) : ranks_(ranks == 0 ? 1 : ranks), errors_(ranks_) {
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
    {
      std::unique_lock<std::mutex> lock(mutex_);
      start_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
      if (stop_) return;
      seen = generation_;
      job = job_;
    }
    std::exception_ptr err;
    try {
      (*job)(rank);
    } catch (...) {
      err = std::current_exception();
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
  std::exception_ptr err0;
  try {
    fn(0);
  } catch (...) {
    err0 = std::current_exception();
  }
  std::vector<std::exception_ptr> errors;
  {
    std::unique_lock<std::mutex> lock(mutex_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
    errors.swap(errors_);
    errors_.assign(ranks_, nullptr);
  }
  if (err0) std::rethrow_exception(err0);
  for (auto& err : errors)
    if (err) std::rethrow_exception(err);
}

}  // namespace lamina
