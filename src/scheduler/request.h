// A generation request as the scheduler sees it: what the caller asks for (RequestSpec), what
// flows back (RequestOutput, one per step through a callback), and the scheduler's own record
// (Request) that moves through queued → prefilling → decoding → finished | cancelled.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "sampling/sampler.h"

namespace lamina {

using RequestId = uint64_t;
using SteadyTime = std::chrono::steady_clock::time_point;

// What a caller asks for. Sampling is per request, with its own seed (its own Sampler).
struct RequestSpec {
  std::vector<int32_t> prompt;
  int max_tokens = 16;                           // most tokens to generate
  SamplingParams sampling;                       // greedy by default (top_k = 1)
  std::vector<int32_t> end_ids;                  // any ends generation; not part of the output
  std::vector<std::vector<int32_t>> stop_words;  // token sequences that end generation; part of the output
  int top_logprobs = -1;                         // -1: no logprobs; 0: the chosen token's; k: plus the k best
};

enum class RequestState { Queued, Prefilling, Decoding, Finished, Cancelled };
const char* request_state_name(RequestState s);

enum class EndReason { Length, EndId, StopWord, Cancelled, Error };
const char* end_reason_name(EndReason r);  // "length", "end_id", "stop_word", "cancelled", "error"

struct TokenLogprob {
  int32_t token;
  float logprob;
};

struct GeneratedToken {
  int32_t id = 0;
  float logprob = 0.0f;           // log-softmax of the processed logits (penalties, temperature)
  std::vector<TokenLogprob> top;  // the top_logprobs most likely tokens, best first
};

// What one step produced for one request. The last output of a request has finished = true.
struct RequestOutput {
  RequestId id = 0;
  std::vector<GeneratedToken> tokens;  // new tokens (0 or 1 per step)
  bool finished = false;
  EndReason end_reason = EndReason::Length;  // valid when finished
  std::string error;                         // when end_reason == Error
  int prompt_tokens = 0, generated_tokens = 0;
};

// Runs on the scheduler thread: must be quick and must not block (push to a queue and return).
using OutputCallback = std::function<void(RequestOutput&&)>;

// Why a request was refused at submit time; `param` names the offending field for API errors.
class RequestRejected : public Error {
 public:
  enum class Kind { Invalid, QueueFull, ShuttingDown };
  RequestRejected(Kind kind, const std::string& what, std::string param = "", std::string code = "")
      : Error(what), kind_(kind), param_(std::move(param)), code_(std::move(code)) {}
  Kind kind() const { return kind_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }

 private:
  Kind kind_;
  std::string param_, code_;
};

// The scheduler's record of a request. Only the scheduler thread touches it.
//   tokens = prompt + generated; num_computed of them have KV in the cache. A step feeds
//   tokens[num_computed, ...); when it reaches tokens.size() the step's logits pick the next token.
//   So "decoding" means exactly one token is pending, "prefilling" more than one (a prompt, or
//   prompt + generated after a preemption, which recomputes).
struct Request {
  RequestId id = 0;
  RequestSpec spec;
  OutputCallback on_output;
  RequestState state = RequestState::Queued;
  std::vector<int32_t> tokens;
  int num_prompt = 0;
  int num_computed = 0;
  int slot = -1;              // engine KV slot while running (see docs/runtime.md)
  uint64_t admitted_seq = 0;  // admission order: preemption evicts the largest
  int preemptions = 0;
  std::optional<Sampler> sampler;
  SteadyTime arrival, last_token;
  bool has_first_token = false;

  int num_generated() const { return int(tokens.size()) - num_prompt; }
  int pending() const { return int(tokens.size()) - num_computed; }  // tokens to feed before sampling
  bool running() const { return state == RequestState::Prefilling || state == RequestState::Decoding; }
};

// The limits a request is checked against before it is queued (read-only engine data, so any
// thread may call validate_spec).
struct RequestLimits {
  int max_input_len = 0, max_seq_len = 0, vocab_size = 0;
  int kv_tokens_capacity = 0;  // the most tokens one sequence can ever hold in the KV pool
};

// Throws RequestRejected(Invalid) with what to change.
void validate_spec(const RequestSpec& spec, const RequestLimits& lim);

}  // namespace lamina
