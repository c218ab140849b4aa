// After a step: turns one request's next token (chosen on the device, or sampled here from its
// logits row) into output and applies the stop rules in generate()'s order (end id → not emitted; stop word → emitted, then stop; max_tokens → stop).
#pragma once
#include <optional>
#include <vector>

#include "scheduler/request.h"

namespace lamina {

struct SampleOutcome {
  std::optional<GeneratedToken> token;  // appended to r.tokens and to be sent to the caller
  std::optional<EndReason> end;         // r is done
};

// Whether r's next token must be sampled on the host from its logits: penalties read the token
// history and logprobs need the distribution. Every other request's token is chosen on the device.
bool samples_on_host(const Request& r);

// logits: [vocab] for r's last fed token. Samples with r's own Sampler (seeded per request).
SampleOutcome sample_next(Request& r, const float* logits, int vocab);

// Takes `tok` as r's next token (chosen on the device by r.sampler->next_choice()); logits: the
// host row when r wants logprobs, else null.
SampleOutcome accept_token(Request& r, int32_t tok, const float* logits, int vocab);

// log-softmax of the logits the sampler works on: penalties applied, divided by the temperature
// unless greedy. Fills the chosen token's logprob and the k best (k = r.spec.top_logprobs).
void fill_logprobs(const Request& r, const float* logits, int vocab, GeneratedToken& out);

}  // namespace lamina
