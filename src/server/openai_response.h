// Response bodies in OpenAI's schema: streamed chunks (SSE `data:` payloads), whole responses,
// usage and logprobs, for both the completions and the chat endpoint.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/json.h"
#include "server/completion_job.h"
#include "server/openai_request.h"
#include "tokenizer/tokenizer.h"

namespace lamina::server {

struct ResponseMeta {
  Endpoint endpoint = Endpoint::Completions;
  std::string id;     // "cmpl-…" / "chatcmpl-…"
  std::string model;
  int64_t created = 0;
  bool logprobs = false;
};

std::string new_response_id(Endpoint endpoint);  // random, unique enough for logs

// A choice accumulated over the whole request (non-streaming responses).
struct ChoiceResult {
  std::string text;
  std::vector<GeneratedToken> tokens;
  std::string finish_reason = "length";
};

Json usage_json(int prompt_tokens, int completion_tokens);

// One streamed chunk for one choice's delta.
Json chunk_json(const ResponseMeta& meta, const ChoiceDelta& d, const Tokenizer& tok);
// The chat stream's opening chunk for choice `index`: {"delta": {"role": "assistant", "content": ""}}.
Json chat_role_chunk_json(const ResponseMeta& meta, int index);
// The final usage chunk of a stream (choices: []), when stream_options.include_usage is set.
Json usage_chunk_json(const ResponseMeta& meta, int prompt_tokens, int completion_tokens);
// A whole non-streamed response.
Json response_json(const ResponseMeta& meta, const std::vector<ChoiceResult>& choices, const Tokenizer& tok,
                   int prompt_tokens, int completion_tokens);

// SSE framing: "data: <json>\n\n"; the stream ends with "data: [DONE]\n\n".
std::string sse_event(const Json& payload);
inline constexpr const char* kSseDone = "data: [DONE]\n\n";

}  // namespace lamina::server
