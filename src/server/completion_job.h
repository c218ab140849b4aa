// One HTTP completion: its choices (prompts × n) as scheduler requests, and the text coming back.
// The executor's delivery thread pushes each RequestOutput into a locked inbox; the HTTP thread polls it and
// turns tokens into text deltas: streaming detokenizer (never half a UTF-8 character), then stop
// strings (the stop string and what follows are never sent; the request is cancelled at once).
#pragma once
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "scheduler/executor.h"
#include "server/stop_matcher.h"
#include "tokenizer/tokenizer.h"

namespace lamina::server {

// What a choice produced since the last poll.
struct ChoiceDelta {
  int index = 0;
  std::string text;
  std::vector<GeneratedToken> tokens;        // with logprobs when asked
  std::optional<std::string> finish_reason;  // set on a choice's last delta: "stop" | "length" | "abort"
};

class CompletionJob {
 public:
  CompletionJob(Executor& executor, Tokenizer tokenizer, std::vector<std::string> stop);
  ~CompletionJob();  // cancels whatever is still running
  CompletionJob(const CompletionJob&) = delete;
  CompletionJob& operator=(const CompletionJob&) = delete;

  // Queues one scheduler request per spec (choice i = specs[i]). All or nothing: on
  // RequestRejected the ones already queued are cancelled and the exception propagates.
  void submit(std::vector<RequestSpec> specs);
  // Waits up to `wait` for outputs; returns one delta per choice that changed, by index.
  std::vector<ChoiceDelta> poll(std::chrono::milliseconds wait);
  bool done() const { return remaining_ == 0; }
  void cancel();  // the client went away: every unfinished choice's KV is freed now

  const std::optional<std::string>& error() const { return error_; }  // an engine failure
  int completion_tokens() const { return completion_tokens_; }
  size_t num_choices() const { return choices_.size(); }

 private:
  struct Inbox {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::pair<size_t, RequestOutput>> q;  // (choice, output)
  };
  struct Choice {
    RequestId id = 0;
    StreamingDetokenizer detok;
    StopMatcher stop;
    bool done = false;
  };
  void apply(size_t index, RequestOutput& out, ChoiceDelta& delta);
  void finish_choice(Choice& c, ChoiceDelta& delta, const std::string& reason);

  Executor& executor_;
  Tokenizer tok_;
  std::vector<std::string> stop_;
  std::shared_ptr<Inbox> inbox_;  // shared with the callbacks, which may outlive the job
  std::vector<Choice> choices_;
  size_t remaining_ = 0;
  int completion_tokens_ = 0;
  std::optional<std::string> error_;
};

}  // namespace lamina::server
