// An independent check of the token-choice definition (ops/token_choice.h), in double precision,
// shared by the CPU reference's test and the GPU kernels' test. Where float rounding can
// legitimately move a cut (a top-p boundary or a draw boundary within 1e-4 of the mass), a check
// accepts either side of it.
#pragma once
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "ops/token_choice.h"

namespace lamina::test {

inline int cpu_argmax(const float* z, int V) {
  int best = -1;
  for (int v = 0; v < V; ++v) {
    if (std::isnan(z[v])) continue;
    if (best < 0 || z[v] > z[best]) best = v;
  }
  return best < 0 ? 0 : best;
}

struct CpuDraw {
  std::vector<char> kept;                    // [V]
  std::vector<double> cum_before, cum_after;  // running kept mass in vocabulary order
  double total = 0, target = 0;
  bool cut_ambiguous = false;  // the top-p cut lies within rounding of the target mass
  int beyond_cut = -1;         // the most probable token left out by top-p
};

inline CpuDraw cpu_draw(const float* z, int V, const TokenChoice& P) {
  CpuDraw d;
  const float inv_t = 1.0f / P.temperature;  // the same float arithmetic as the kernel
  std::vector<float> s(V);
  for (int v = 0; v < V; ++v) s[v] = (std::isnan(z[v]) ? -INFINITY : z[v]) * inv_t;
  d.kept.assign(V, 1);
  if (P.top_k > 0 && P.top_k < V) {
    std::vector<float> sorted = s;
    std::nth_element(sorted.begin(), sorted.begin() + (P.top_k - 1), sorted.end(), std::greater<float>());
    const float kth = sorted[P.top_k - 1];
    for (int v = 0; v < V; ++v) d.kept[v] = s[v] >= kth;
  }
  const double s_max = *std::max_element(s.begin(), s.end());
  std::vector<double> p(V, 0.0);
  for (int v = 0; v < V; ++v)
    if (d.kept[v]) p[v] = std::exp(double(s[v]) - s_max);
  if (P.top_p < 1.0f) {
    std::vector<int> order;
    for (int v = 0; v < V; ++v)
      if (d.kept[v]) order.push_back(v);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
    const double mass = std::accumulate(p.begin(), p.end(), 0.0), goal = double(P.top_p) * mass;
    double cum = 0;
    size_t j = 0;
    for (; j < order.size(); ++j) {
      const double before = cum;
      cum += p[order[j]];
      if (cum >= goal) {
        d.cut_ambiguous = std::abs(cum - goal) < 1e-4 * mass || std::abs(before - goal) < 1e-4 * mass;
        break;
      }
    }
    j = std::min(j, order.size() - 1);
    const float s_cut = s[order[j]];
    for (int v = 0; v < V; ++v) d.kept[v] = d.kept[v] && s[v] >= s_cut;
    for (size_t k = j + 1; k < order.size(); ++k)
      if (s[order[k]] < s_cut) {
        d.beyond_cut = order[k];
        break;
      }
  }
  d.cum_before.resize(V);
  d.cum_after.resize(V);
  double run = 0;
  for (int v = 0; v < V; ++v) {
    d.cum_before[v] = run;
    if (d.kept[v]) run += p[v];
    d.cum_after[v] = run;
  }
  d.total = run;
  d.target = double(P.uniform) * run;
  return d;
}

inline std::vector<TokenChoice> make_params(std::mt19937_64& rng, int B) {
  const TokenChoice configs[] = {
      {0.0f, 0, 1.0f, 0}, {1.0f, 0, 1.0f, 0},    {0.7f, 40, 1.0f, 0},  {1.0f, 0, 0.9f, 0},
      {0.8f, 50, 0.95f, 0}, {1.3f, 1, 1.0f, 0},  {1.0f, 0, 0.5f, 0},   {1.0f, 5000, 0.99f, 0},
  };
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<TokenChoice> out(B);
  for (int b = 0; b < B; ++b) {
    out[b] = configs[b % 8];
    out[b].uniform = b == 9 ? 0.0f : b == 10 ? 0.99999994f : u(rng);
  }
  return out;
}

inline std::vector<float> make_logits(std::mt19937_64& rng, int B, int V, bool with_masked) {
  std::normal_distribution<float> n(0.0f, 3.0f);
  std::vector<float> z(size_t(B) * V);
  for (auto& x : z) x = n(rng);
  if (with_masked)
    for (size_t i = 0; i < z.size(); i += 7) z[i] = -INFINITY;
  return z;
}

// Checks that `got` is a token the definition allows for logits z[V] and choice P.
inline void expect_valid_choice(int got, const float* z, int V, const TokenChoice& P) {
  SCOPED_TRACE("T=" + std::to_string(P.temperature) + " k=" + std::to_string(P.top_k) +
               " p=" + std::to_string(P.top_p) + " u=" + std::to_string(P.uniform));
  ASSERT_GE(got, 0);
  ASSERT_LT(got, V);
  // Greedy only without temperature: top_k = 1 keeps every token tied for the largest logit
  // (ops/token_choice.h), and 16-bit logits tie often; the draw check below covers it.
  if (P.temperature <= 0.0f) {
    EXPECT_EQ(got, cpu_argmax(z, V));
    return;
  }
  const CpuDraw d = cpu_draw(z, V, P);
  const bool kept = d.kept[got] || (d.cut_ambiguous && got == d.beyond_cut);
  EXPECT_TRUE(kept) << "token " << got << " is outside the top-k/top-p set";
  if (d.cut_ambiguous) return;
  const double eps = 1e-4 * d.total;
  EXPECT_TRUE(d.cum_before[got] - eps <= d.target && d.target <= d.cum_after[got] + eps)
      << "token " << got << " covers [" << d.cum_before[got] << ", " << d.cum_after[got] << ") but the target is "
      << d.target << " of " << d.total;
}

}  // namespace lamina::test
