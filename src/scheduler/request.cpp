#include "scheduler/request.h"

#include <sstream>

namespace lamina {

const char* request_state_name(RequestState s) {
  switch (s) {
    case RequestState::Queued: return "queued";
    case RequestState::Prefilling: return "prefilling";
    case RequestState::Decoding: return "decoding";
    case RequestState::Finished: return "finished";
    case RequestState::Cancelled: return "cancelled";
  }
  return "?";
}

const char* end_reason_name(EndReason r) {
  switch (r) {
    case EndReason::Length: return "length";
    case EndReason::EndId: return "end_id";
    case EndReason::StopWord: return "stop_word";
    case EndReason::Cancelled: return "cancelled";
    case EndReason::Error: return "error";
  }
  return "?";
}

namespace {
template <typename... Parts>
[[noreturn]] void reject(const std::string& param, const std::string& code, const Parts&... parts) {
  std::ostringstream os;
  (os << ... << parts);
  throw RequestRejected(RequestRejected::Kind::Invalid, os.str(), param, code);
}
}  // namespace

void validate_spec(const RequestSpec& spec, const RequestLimits& lim) {
  const int64_t n = int64_t(spec.prompt.size());
  if (n == 0) reject("prompt", "", "the prompt is empty: give at least one token");
  if (n > lim.max_input_len)
    reject("prompt", "context_length_exceeded", "the prompt has ", n, " tokens but the engine takes at most ",
           lim.max_input_len, " (its max_input_len): shorten the prompt");
  if (spec.max_tokens < 1) reject("max_tokens", "", "max_tokens must be at least 1 (got ", spec.max_tokens, ")");
  if (n + spec.max_tokens > lim.max_seq_len)
    reject("max_tokens", "context_length_exceeded", "this model's maximum context length is ", lim.max_seq_len,
           " tokens, but ", n + spec.max_tokens, " were requested (", n, " in the prompt, ", spec.max_tokens,
           " for the completion): lower max_tokens or shorten the prompt");
  if (lim.kv_tokens_capacity > 0 && n + spec.max_tokens > lim.kv_tokens_capacity)
    reject("max_tokens", "context_length_exceeded", "prompt + max_tokens (", n + spec.max_tokens,
           " tokens) is more than the whole KV cache holds (", lim.kv_tokens_capacity,
           " tokens): lower max_tokens or give the server more KV blocks");
  for (int32_t t : spec.prompt)
    if (t < 0 || t >= lim.vocab_size)
      reject("prompt", "", "prompt token id ", t, " is outside the vocabulary [0, ", lim.vocab_size, ")");
  for (int32_t t : spec.end_ids)
    if (t < 0 || t >= lim.vocab_size) reject("end_ids", "", "end id ", t, " is outside the vocabulary");
  for (const auto& w : spec.stop_words)
    if (w.empty()) reject("stop", "", "a stop word is empty");
  if (spec.top_logprobs > 20) reject("top_logprobs", "", "top_logprobs must be at most 20 (got ", spec.top_logprobs, ")");
  try {
    spec.sampling.validate();
  } catch (const Error& e) {
    reject("", "", e.what());
  }
}

}  // namespace lamina
