#include "scheduler/token_processor.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace lamina {

namespace {
bool ends_with(const std::vector<int32_t>& seq, size_t from, const std::vector<int32_t>& suffix) {
  return !suffix.empty() && seq.size() - from >= suffix.size() &&
         std::equal(suffix.rbegin(), suffix.rend(), seq.rbegin());
}
}  // namespace

void fill_logprobs(const Request& r, const float* logits, int vocab, GeneratedToken& out) {
  std::vector<float> x(logits, logits + vocab);
  const SamplingParams& p = r.spec.sampling;
  apply_penalties(x, r.tokens, p);
  const bool greedy = p.top_k == 1 || p.temperature == 0.0f;
  if (!greedy)
    for (float& v : x) v /= p.temperature;
  const float mx = *std::max_element(x.begin(), x.end());
  double sum = 0;
  for (float v : x) sum += std::exp(double(v) - mx);
  const float log_z = mx + float(std::log(sum));
  out.logprob = x[size_t(out.id)] - log_z;
  const int k = std::min(r.spec.top_logprobs, vocab);
  if (k <= 0) return;
  std::vector<int32_t> idx(static_cast<size_t>(vocab));
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(),
                    [&](int32_t a, int32_t b) { return x[size_t(a)] > x[size_t(b)] || (x[size_t(a)] == x[size_t(b)] && a < b); });
  for (int i = 0; i < k; ++i) out.top.push_back({idx[size_t(i)], x[size_t(idx[size_t(i)])] - log_z});
}

bool samples_on_host(const Request& r) { return r.sampler->has_penalties() || r.spec.top_logprobs >= 0; }

SampleOutcome sample_next(Request& r, const float* logits, int vocab) {
  return accept_token(r, r.sampler->sample(logits, size_t(vocab), r.tokens), logits, vocab);
}

SampleOutcome accept_token(Request& r, int32_t tok, const float* logits, int vocab) {
  SampleOutcome out;
  const auto& ends = r.spec.end_ids;
  if (std::find(ends.begin(), ends.end(), tok) != ends.end()) {
    out.end = EndReason::EndId;
    return out;
  }
  GeneratedToken g;
  g.id = tok;
  if (r.spec.top_logprobs >= 0 && logits) fill_logprobs(r, logits, vocab, g);  // before tok joins the history
  r.tokens.push_back(tok);
  out.token = std::move(g);
  for (const auto& w : r.spec.stop_words)
    if (ends_with(r.tokens, size_t(r.num_prompt), w)) out.end = EndReason::StopWord;
  if (!out.end && r.num_generated() >= r.spec.max_tokens) out.end = EndReason::Length;
  return out;
}

}  // namespace lamina
