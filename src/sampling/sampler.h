// Token sampling on float32 logits, in TensorRT-LLM's order:
// penalties (repetition, presence, frequency) → temperature → top-k → top-p → draw.
// Greedy when top_k == 1 or temperature == 0. Seeded per request, so a seed reproduces output.
#pragma once
#include <cstdint>
#include <random>
#include <vector>

#include "ops/token_choice.h"

namespace lamina {

struct SamplingParams {
  float temperature = 1.0f;
  int top_k = 1;             // TensorRT-LLM's default: greedy. 0 = no top-k limit.
  float top_p = 0.0f;        // 0 or 1 = no top-p limit
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  uint64_t seed = 0;
  void validate() const;  // throws lamina::Error on out-of-range values
};

class Sampler {
 public:
  explicit Sampler(const SamplingParams& p);
  // history: the prompt and the tokens generated so far (for penalties).
  int32_t sample(std::vector<float> logits, const std::vector<int32_t>& history);
  // The same over logits[vocab] in place: greedy without penalties reads them without a copy
  // (a batch of 256 rows of 128k logits is 128 MB a step).
  int32_t sample(const float* logits, size_t vocab, const std::vector<int32_t>& history);
  bool greedy() const;
  bool has_penalties() const;
  // This step's choice for the device (ops/token_choice.h): the request's temperature, top-k and
  // top-p, and a fresh number from the seeded generator (none is drawn when greedy). Penalties
  // need the history: a sampler with penalties samples on the host (sample()) instead.
  TokenChoice next_choice();

 private:
  SamplingParams p_;
  std::mt19937_64 rng_;
};

// Applies the three penalties in place (exposed for tests).
void apply_penalties(std::vector<float>& logits, const std::vector<int32_t>& history, const SamplingParams& p);
int32_t argmax(const std::vector<float>& logits);
int32_t argmax(const float* logits, size_t vocab);  // lowest index wins ties

}  // namespace lamina
