// After a step: turns one request's logits row into its next token and applies the stop rules in
// generate()'s order (end id → not emitted; stop word → emitted, then stop; max_tokens → stop).
#pragma once
#include <optional>
#include <vector>

#include "scheduler/request.h"

namespace lamina {

struct SampleOutcome {
  std::optional<GeneratedToken> token;  // appended to r.tokens and to be sent to the caller
  std::optional<EndReason> end;         // r is done
};

// logits: [vocab] for r's last fed token. Samples with r's own Sampler (seeded per request).
SampleOutcome sample_next(Request& r, const float* logits, int vocab);

// log-softmax of the logits the sampler works on: penalties applied, divided by the temperature
// unless greedy. Fills the chosen token's logprob and the k best (k = r.spec.top_logprobs).
void fill_logprobs(const Request& r, const float* logits, int vocab, GeneratedToken& out);

}  // namespace lamina
