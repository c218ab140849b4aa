// Counts in-flight completion requests so a shutdown can let them finish: close() makes enter()
// refuse new ones (the caller answers 503), wait_idle() returns once the last one has left.
#pragma once
#include <chrono>
#include <condition_variable>
#include <mutex>

namespace lamina::server {

class DrainGate {
 public:
  bool enter() {
    std::lock_guard<std::mutex> lk(mu_);
    if (closed_) return false;
    ++active_;
    return true;
  }
  void leave() {
    std::lock_guard<std::mutex> lk(mu_);
    if (--active_ == 0) idle_.notify_all();
  }
  void close() {
    std::lock_guard<std::mutex> lk(mu_);
    closed_ = true;
  }
  bool closed() const {
    std::lock_guard<std::mutex> lk(mu_);
    return closed_;
  }
  template <typename Duration>
  bool wait_idle(Duration timeout) {
    std::unique_lock<std::mutex> lk(mu_);
    return idle_.wait_for(lk, timeout, [&] { return active_ == 0; });
  }

 private:
  mutable std::mutex mu_;
  std::condition_variable idle_;
  int active_ = 0;
  bool closed_ = false;
};

}  // namespace lamina::server
