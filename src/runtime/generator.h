// Generation for one request on a loaded engine: chunked prefill, then decode token by token,
// stopping at max_new_tokens, an end id (any of the eos list) or a stop sequence.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "sampling/sampler.h"

namespace lamina {

struct GenerationRequest {
  std::vector<int32_t> prompt;
  int max_new_tokens = 16;
  SamplingParams sampling;
  std::vector<int32_t> end_ids;                  // any ends generation (not included in output)
  std::vector<std::vector<int32_t>> stop_words;  // token sequences that end generation (included)
  bool return_context_logits = false;
  bool return_generation_logits = false;
};

enum class FinishReason { Length, EndId, StopWord };
const char* finish_reason_name(FinishReason r);  // "length" / "stop"

struct GenerationResult {
  std::vector<int32_t> output_ids;  // generated tokens only
  FinishReason finish_reason = FinishReason::Length;
  std::vector<float> context_logits;     // [prompt_len, vocab] if asked
  std::vector<float> generation_logits;  // [generated, vocab] if asked
};

// Called with each new token as soon as it is chosen; return false to stop early.
using TokenCallback = std::function<bool(int32_t token)>;

// Checks the request against the engine's limits (prompt length, max_seq_len, vocab) and
// throws lamina::Error with what to change.
void validate_request(const Engine& engine, const GenerationRequest& req);

// `slot` picks the KV blocks the request uses: the contiguous run [slot * max_blocks_per_seq,
// slot * max_blocks_per_seq + blocks needed) of the engine's pool.
GenerationResult generate(Engine& engine, const GenerationRequest& req, const TokenCallback& on_token = nullptr,
                          int slot = 0);

}  // namespace lamina
