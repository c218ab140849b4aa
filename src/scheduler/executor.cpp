#include "scheduler/executor.h"

#include <algorithm>
#include <cstdio>

namespace lamina {

Executor::Executor(Engine& engine, const ExecutorOptions& opts)
    : scheduler_(engine, opts.scheduler),
      max_queue_(opts.max_queue),
      limits_(scheduler_.limits()),
      max_batch_size_(scheduler_.max_batch_size()),
      max_num_tokens_(scheduler_.max_num_tokens()),
      kv_reuse_active_(scheduler_.kv_reuse_active()),
      stats_(scheduler_.stats()) {
  delivery_ = std::thread([this] { deliver_loop(); });
  thread_ = std::thread([this] { loop(); });
}

Executor::~Executor() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
    accepting_ = false;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();  // its last publish() hands over the cancelled outputs
  {
    std::lock_guard<std::mutex> lk(out_mu_);
    out_stop_ = true;
  }
  out_cv_.notify_one();
  if (delivery_.joinable()) delivery_.join();  // delivers what is left first
}

RequestId Executor::submit(RequestSpec spec, OutputCallback on_output) {
  validate_spec(spec, limits_);  // throws RequestRejected(Invalid) with the field to fix
  std::lock_guard<std::mutex> lk(mu_);
  if (!accepting_) throw RequestRejected(RequestRejected::Kind::ShuttingDown, "the server is shutting down");
  // Requests that free batch slots will take at the next step are not waiting: a burst of up to
  // (free slots + max_queue) requests is accepted.
  const int free_slots = std::max(0, max_batch_size_ - stats_.num_running);
  if (max_queue_ > 0 && int(inbox_.size()) + scheduled_waiting_ - free_slots >= max_queue_)
    throw RequestRejected(RequestRejected::Kind::QueueFull,
                          "the request queue is full (" + std::to_string(max_queue_) + " requests waiting): retry later");
  const RequestId id = next_id_++;
  ++in_flight_;
  // Outputs are held until the step's stats are published, then delivered (publish()): a
  // client that has its answer sees metrics that already count it.
  auto user = std::make_shared<OutputCallback>(std::move(on_output));
  OutputCallback counted = [this, user](RequestOutput&& out) { deferred_.emplace_back(user, std::move(out)); };
  inbox_.push_back({id, std::move(spec), std::move(counted), std::chrono::steady_clock::now()});
  wake_.notify_one();
  return id;
}

void Executor::cancel(RequestId id) {
  {
    std::lock_guard<std::mutex> lk(mu_);
    cancels_.push_back(id);
  }
  wake_.notify_one();
}

void Executor::cancel_all() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    cancel_all_ = true;
  }
  wake_.notify_one();
}

void Executor::drain() {
  std::unique_lock<std::mutex> lk(mu_);
  accepting_ = false;
  idle_.wait(lk, [&] { return in_flight_ == 0; });
}

SchedulerStats Executor::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  return stats_;
}

void Executor::loop() {
  for (;;) {
    std::vector<Pending> inbox;
    std::vector<RequestId> cancels;
    bool all = false, stop = false;
    {
      std::unique_lock<std::mutex> lk(mu_);
      wake_.wait(lk, [&] {
        return stop_ || cancel_all_ || !inbox_.empty() || !cancels_.empty() || scheduler_.has_work();
      });
      inbox.swap(inbox_);
      scheduled_waiting_ += int(inbox.size());  // still waiting: keep them counted for max_queue
      cancels.swap(cancels_);
      std::swap(all, cancel_all_);
      stop = stop_;
    }
    for (Pending& p : inbox) {
      try {
        scheduler_.add(p.id, std::move(p.spec), p.on_output, p.arrival);
      } catch (const std::exception& e) {  // submit validated it already; report, never lose it
        RequestOutput out;
        out.id = p.id;
        out.finished = true;
        out.end_reason = EndReason::Error;
        out.error = e.what();
        p.on_output(std::move(out));
      }
    }
    for (RequestId id : cancels) scheduler_.cancel(id);
    if (all || stop) scheduler_.cancel_all();
    publish();
    if (stop) break;

    int fed = 0;
    try {
      fed = scheduler_.has_work() ? scheduler_.step() : 0;
    } catch (const std::exception& e) {  // a broken invariant: fail what is in flight, keep serving
      std::fprintf(stderr, "[lamina] scheduler step failed: %s\n", e.what());
      scheduler_.end_all(EndReason::Error, e.what());
    }
    publish();
    if (fed == 0 && scheduler_.has_work()) {
      // Nothing could run (the queue head waits for capacity): wait for a submit or cancel.
      std::unique_lock<std::mutex> lk(mu_);
      wake_.wait_for(lk, std::chrono::milliseconds(5),
                     [&] { return stop_ || cancel_all_ || !inbox_.empty() || !cancels_.empty(); });
    }
  }
}

void Executor::publish() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stats_ = scheduler_.stats();
    scheduled_waiting_ = stats_.num_waiting;
  }
  if (deferred_.empty()) return;
  {
    std::lock_guard<std::mutex> lk(out_mu_);
    if (outbox_.empty()) {
      outbox_.swap(deferred_);
    } else {
      for (Delivery& d : deferred_) outbox_.push_back(std::move(d));
    }
  }
  deferred_.clear();
  out_cv_.notify_one();
}

void Executor::deliver_loop() {
  std::vector<Delivery> batch;
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(out_mu_);
      out_cv_.wait(lk, [&] { return out_stop_ || !outbox_.empty(); });
      if (outbox_.empty()) return;  // stopping, and everything was delivered
      batch.swap(outbox_);
    }
    int finished = 0;
    for (auto& [cb, out] : batch) {
      finished += out.finished ? 1 : 0;
      if (*cb) (*cb)(std::move(out));
    }
    batch.clear();
    if (finished == 0) continue;
    std::lock_guard<std::mutex> lk(mu_);  // drain() waits until every final output is delivered
    in_flight_ -= finished;
    if (in_flight_ == 0) idle_.notify_all();
  }
}

}  // namespace lamina
