// choose_token(): the readable reference of the definition in ops/token_choice.h, in double
// precision after the per-token float scaling (the CUDA kernels work in float).
#include "ops/token_choice.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <vector>

namespace lamina {

namespace {
float sanitize(float v) { return std::isnan(v) ? -INFINITY : v; }

int32_t greedy(const float* z, int V) {
  int32_t best = -1;
  for (int v = 0; v < V; ++v) {
    if (std::isnan(z[v])) continue;
    if (best < 0 || z[v] > z[best]) best = v;
  }
  return best < 0 ? 0 : best;
}
}  // namespace

int32_t choose_token(const float* z, int V, const TokenChoice& c) {
  if (V <= 0) return 0;
  if (!(c.temperature > 0.0f)) return greedy(z, V);
  const float inv_t = 1.0f / c.temperature;
  std::vector<float> s(static_cast<size_t>(V));
  for (int v = 0; v < V; ++v) s[size_t(v)] = sanitize(z[v]) * inv_t;

  std::vector<char> kept(static_cast<size_t>(V), 1);
  if (c.top_k > 0 && c.top_k < V) {
    std::vector<float> sorted = s;
    std::nth_element(sorted.begin(), sorted.begin() + (c.top_k - 1), sorted.end(), std::greater<float>());
    const float kth = sorted[size_t(c.top_k - 1)];
    for (int v = 0; v < V; ++v) kept[size_t(v)] = s[size_t(v)] >= kth;
  }
  const double s_max = *std::max_element(s.begin(), s.end());
  if (std::isinf(s_max) && s_max < 0) return greedy(z, V);  // every logit is -inf or NaN
  std::vector<double> p(static_cast<size_t>(V), 0.0);
  for (int v = 0; v < V; ++v)
    if (kept[size_t(v)]) p[size_t(v)] = std::exp(double(s[size_t(v)]) - s_max);

  if (c.top_p < 1.0f) {
    // The smallest most-probable set reaching top_p of the kept mass; ties with its last member stay.
    std::vector<int> order;
    for (int v = 0; v < V; ++v)
      if (kept[size_t(v)]) order.push_back(v);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return p[size_t(a)] > p[size_t(b)]; });
    const double goal = double(c.top_p) * std::accumulate(p.begin(), p.end(), 0.0);
    double cum = 0, cut = 0;
    for (int v : order) {
      cum += p[size_t(v)];
      cut = p[size_t(v)];
      if (cum >= goal) break;
    }
    for (int v = 0; v < V; ++v)
      if (p[size_t(v)] < cut) p[size_t(v)] = 0.0;
  }

  const double mass = std::accumulate(p.begin(), p.end(), 0.0);
  const double target = double(c.uniform) * mass;
  double run = 0;
  int32_t last = -1;
  for (int v = 0; v < V; ++v) {
    if (p[size_t(v)] <= 0.0) continue;
    last = v;
    run += p[size_t(v)];
    if (run > target) return v;
  }
  return last < 0 ? greedy(z, V) : last;
}

int32_t combine_slice_argmax(const SliceArgmax* slices, int tp, int64_t vocab_per_rank) {
  // A slice's argmax is NaN only when the whole slice is NaN: it has no candidate. Ranks are
  // visited in vocabulary order, so keeping the first of equal values keeps the lowest index.
  int64_t best = -1;
  float best_v = -INFINITY;
  for (int r = 0; r < tp; ++r) {
    const float v = slices[r].value;
    if (std::isnan(v)) continue;
    if (best < 0 || v > best_v) best = int64_t(r) * vocab_per_rank + slices[r].index, best_v = v;
  }
  return best < 0 ? 0 : static_cast<int32_t>(best);
}

}  // namespace lamina
