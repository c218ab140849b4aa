#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <unordered_map>

#include "common/error.h"

namespace lamina {

void SamplingParams::validate() const {
  if (!(temperature >= 0.0f)) fail("temperature must be >= 0 (got ", temperature, ")");
  if (top_k < 0) fail("top_k must be >= 0 (got ", top_k, ")");
  if (!(top_p >= 0.0f && top_p <= 1.0f)) fail("top_p must be in [0, 1] (got ", top_p, ")");
  if (!(repetition_penalty > 0.0f)) fail("repetition_penalty must be > 0 (got ", repetition_penalty, ")");
}

Sampler::Sampler(const SamplingParams& p) : p_(p), rng_(p.seed) { p_.validate(); }

bool Sampler::greedy() const { return p_.top_k == 1 || p_.temperature == 0.0f; }

int32_t argmax(const float* logits, size_t vocab) {
  return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
}

int32_t argmax(const std::vector<float>& logits) { return argmax(logits.data(), logits.size()); }

bool Sampler::has_penalties() const {
  return p_.repetition_penalty != 1.0f || p_.presence_penalty != 0.0f || p_.frequency_penalty != 0.0f;
}

int32_t Sampler::sample(const float* logits, size_t vocab, const std::vector<int32_t>& history) {
  if (greedy() && !has_penalties()) return argmax(logits, vocab);
  return sample(std::vector<float>(logits, logits + vocab), history);
}

TokenChoice Sampler::next_choice() {
  TokenChoice c;
  if (greedy()) {
    c.temperature = 0.0f;
    return c;
  }
  c.temperature = p_.temperature;
  c.top_k = p_.top_k;                                       // 0: off in both
  c.top_p = p_.top_p > 0.0f && p_.top_p < 1.0f ? p_.top_p : 1.0f;  // 0 or 1: off
  // Drawn in double and narrowed: a float distribution can round up to 1.0.
  c.uniform = std::min(float(std::uniform_real_distribution<double>(0.0, 1.0)(rng_)), 0.99999994f);
  return c;
}

void apply_penalties(std::vector<float>& logits, const std::vector<int32_t>& history, const SamplingParams& p) {
  if (p.repetition_penalty == 1.0f && p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f) return;
  std::unordered_map<int32_t, int> counts;
  for (int32_t t : history)
    if (t >= 0 && size_t(t) < logits.size()) ++counts[t];
  for (const auto& [tok, n] : counts) {
    float& l = logits[size_t(tok)];
    // Repetition penalty (CTRL): shrink positive logits, grow negative ones.
    if (p.repetition_penalty != 1.0f) l = l > 0 ? l / p.repetition_penalty : l * p.repetition_penalty;
    l -= p.presence_penalty + p.frequency_penalty * float(n);
  }
}

int32_t Sampler::sample(std::vector<float> logits, const std::vector<int32_t>& history) {
  apply_penalties(logits, history, p_);
  if (greedy()) return argmax(logits);

  // Candidates sorted by logit, cut to top-k.
  std::vector<int32_t> idx(logits.size());
  std::iota(idx.begin(), idx.end(), 0);
  const size_t k = p_.top_k > 0 ? std::min<size_t>(size_t(p_.top_k), idx.size()) : idx.size();
  std::partial_sort(idx.begin(), idx.begin() + static_cast<long>(k), idx.end(),
                    [&](int32_t a, int32_t b) { return logits[size_t(a)] > logits[size_t(b)]; });
  idx.resize(k);
  // Softmax with temperature over the candidates.
  std::vector<double> prob(k);
  const double mx = logits[size_t(idx[0])];
  double sum = 0;
  for (size_t i = 0; i < k; ++i) sum += prob[i] = std::exp((logits[size_t(idx[i])] - mx) / p_.temperature);
  for (double& q : prob) q /= sum;
  // Top-p: the smallest prefix whose mass reaches top_p.
  size_t keep = k;
  if (p_.top_p > 0.0f && p_.top_p < 1.0f) {
    double acc = 0;
    for (size_t i = 0; i < k; ++i) {
      acc += prob[i];
      if (acc >= p_.top_p) {
        keep = i + 1;
        break;
      }
    }
  }
  double mass = 0;
  for (size_t i = 0; i < keep; ++i) mass += prob[i];
  double r = std::uniform_real_distribution<double>(0.0, mass)(rng_);
  for (size_t i = 0; i < keep; ++i) {
    r -= prob[i];
    if (r <= 0) return idx[i];
  }
  return idx[keep - 1];
}

}  // namespace lamina
