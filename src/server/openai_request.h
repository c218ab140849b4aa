// Request bodies of /v1/completions and /v1/chat/completions → checked parameters. Pure parsing:
// no tokenizer, no engine (completion_job.h turns these into scheduler requests).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "sampling/sampler.h"

namespace lamina::server {

enum class Endpoint { Completions, Chat };

// One prompt as the client gave it: text, or token ids (completions only).
struct PromptInput {
  std::string text;
  std::vector<int32_t> ids;
  bool is_ids = false;
};

struct CompletionParams {
  Endpoint endpoint = Endpoint::Completions;
  std::string model;                      // "" when absent
  std::vector<PromptInput> prompts;       // completions: one or more prompts
  nlohmann::ordered_json messages;        // chat: the conversation, contents flattened to strings
  int n = 1;                              // choices per prompt
  std::optional<int> max_tokens;          // absent: 16 for completions, the rest of the context for chat
  float temperature = 1.0f, top_p = 1.0f;
  int top_k = 0;                          // extension (as vLLM): 0 = no limit
  float presence_penalty = 0.0f, frequency_penalty = 0.0f, repetition_penalty = 1.0f;
  std::optional<uint64_t> seed;           // choice i uses seed + i
  std::vector<std::string> stop;          // strings that end a choice (not part of its text)
  int logprobs = -1;                      // -1: none; else how many top alternatives per token
  bool stream = false, include_usage = false;
  bool ignore_eos = false;                // extension (as vLLM): run to max_tokens
};

// Parses and checks a body; throws ApiError (400, invalid_request_error) naming the bad field.
CompletionParams parse_completion_params(const std::string& body, Endpoint endpoint);

// The sampler settings for one choice (temperature 0 = greedy).
SamplingParams sampling_for_choice(const CompletionParams& p, int choice, uint64_t random_seed);

}  // namespace lamina::server
