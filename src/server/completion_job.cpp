#include "server/completion_job.h"

#include <map>

namespace lamina::server {

CompletionJob::CompletionJob(Executor& executor, Tokenizer tokenizer, std::vector<std::string> stop)
    : executor_(executor), tok_(std::move(tokenizer)), stop_(std::move(stop)), inbox_(std::make_shared<Inbox>()) {}

CompletionJob::~CompletionJob() { cancel(); }

void CompletionJob::submit(std::vector<RequestSpec> specs) {
  choices_.reserve(specs.size());
  for (size_t i = 0; i < specs.size(); ++i) {
    std::shared_ptr<Inbox> inbox = inbox_;
    OutputCallback cb = [inbox, i](RequestOutput&& out) {
      {
        std::lock_guard<std::mutex> lk(inbox->mu);
        inbox->q.emplace_back(i, std::move(out));
      }
      inbox->cv.notify_one();
    };
    RequestId id = 0;
    try {
      id = executor_.submit(std::move(specs[i]), std::move(cb));
    } catch (...) {
      cancel();
      throw;
    }
    choices_.push_back({id, StreamingDetokenizer(tok_, /*skip_special_tokens=*/true), StopMatcher(stop_), false});
    ++remaining_;
  }
}

void CompletionJob::cancel() {
  for (Choice& c : choices_)
    if (!c.done) {
      executor_.cancel(c.id);
      c.done = true;
    }
  remaining_ = 0;
}

void CompletionJob::finish_choice(Choice& c, ChoiceDelta& delta, const std::string& reason) {
  if (!c.stop.stopped()) {
    delta.text += c.stop.push(c.detok.flush());
    delta.text += c.stop.flush();
  }
  delta.finish_reason = c.stop.stopped() ? "stop" : reason;
  c.done = true;
  --remaining_;
}

void CompletionJob::apply(size_t index, RequestOutput& out, ChoiceDelta& delta) {
  Choice& c = choices_[index];
  if (c.done) return;  // e.g. the Cancelled echo of a choice ended by a stop string
  for (GeneratedToken& t : out.tokens) {
    ++completion_tokens_;
    // An engine vocabulary padded past the tokenizer's may emit ids with no text.
    const bool known = t.id >= 0 && size_t(t.id) < tok_.vocab_size();
    delta.text += c.stop.push(known ? c.detok.push(t.id) : std::string());
    delta.tokens.push_back(std::move(t));
    if (c.stop.stopped()) {
      executor_.cancel(c.id);  // frees its KV now; its final "cancelled" output is ignored
      finish_choice(c, delta, "stop");
      return;
    }
  }
  if (!out.finished) return;
  switch (out.end_reason) {
    case EndReason::Length: finish_choice(c, delta, "length"); break;
    case EndReason::EndId:
    case EndReason::StopWord: finish_choice(c, delta, "stop"); break;
    case EndReason::Cancelled: finish_choice(c, delta, "abort"); break;
    case EndReason::Error:
      error_ = out.error.empty() ? "the engine failed" : out.error;
      finish_choice(c, delta, "abort");
      break;
  }
}

std::vector<ChoiceDelta> CompletionJob::poll(std::chrono::milliseconds wait) {
  std::deque<std::pair<size_t, RequestOutput>> got;
  {
    std::unique_lock<std::mutex> lk(inbox_->mu);
    inbox_->cv.wait_for(lk, wait, [&] { return !inbox_->q.empty(); });
    got.swap(inbox_->q);
  }
  std::map<size_t, ChoiceDelta> deltas;
  for (auto& [index, out] : got) {
    ChoiceDelta& d = deltas[index];
    d.index = int(index);
    apply(index, out, d);
  }
  std::vector<ChoiceDelta> result;
  for (auto& [index, d] : deltas)
    if (!d.text.empty() || !d.tokens.empty() || d.finish_reason) result.push_back(std::move(d));
  return result;
}

}  // namespace lamina::server
