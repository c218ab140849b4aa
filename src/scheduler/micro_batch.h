// The micro-batch scheduler: which tokens of the running requests go into this step, within the
// engine's max_num_tokens. Decoding requests are served first (one token each, so a long prompt
// never stalls them), then prefill chunks, oldest request first, with what is left of the budget.
// In the step itself the prefill chunks come first (see micro_batch.cpp for why).
#pragma once
#include <vector>

#include "scheduler/request.h"

namespace lamina {

struct ScheduledChunk {
  Request* req = nullptr;
  int begin = 0, count = 0;  // feeds req->tokens[begin, begin + count)
  bool samples = false;      // reaches the end of req->tokens: its last row picks the next token
};

// running: in admission order. Returns chunks in the order their tokens go into the step: prefill
// chunks of a multiple of 64 tokens, other prefill chunks, then decode tokens (each group oldest
// first).
std::vector<ScheduledChunk> plan_micro_batch(const std::vector<Request*>& running, int max_num_tokens);

}  // namespace lamina
