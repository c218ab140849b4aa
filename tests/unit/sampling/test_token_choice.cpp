// The CPU reference of the token-choice definition (choose_token, used by the CPU backend and by
// multi-rank engines) against the double-precision oracle the GPU kernels are checked with, and
// the mapping from a request's sampling parameters to a choice.
#include <gtest/gtest.h>

#include <algorithm>
#include <limits>
#include <random>

#include "ops/token_choice.h"
#include "sampling/sampler.h"
#include "token_choice_oracle.h"

namespace lamina {
namespace {

TEST(TokenChoice, ReferenceFollowsTheDefinition) {
  std::mt19937_64 rng(20261125);
  for (int V : {7, 1000, 32000}) {
    for (bool masked : {false, true}) {
      const int B = 48;
      const auto z = test::make_logits(rng, B, V, masked);
      const auto params = test::make_params(rng, B);
      for (int b = 0; b < B; ++b) {
        SCOPED_TRACE("V=" + std::to_string(V) + " row " + std::to_string(b));
        test::expect_valid_choice(choose_token(&z[size_t(b) * V], V, params[size_t(b)]), &z[size_t(b) * V], V,
                                  params[size_t(b)]);
      }
    }
  }
}

TEST(TokenChoice, GreedyTiesAndNaN) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> z = {nan, 1.0f, 3.0f, 3.0f, -INFINITY};
  TokenChoice greedy;
  greedy.temperature = 0.0f;
  EXPECT_EQ(choose_token(z.data(), 5, greedy), 2);  // the lowest index wins a tie; NaN never wins
  TokenChoice top1;
  top1.top_k = 1;  // keeps both tied tokens; the draw walks them in vocabulary order
  top1.uniform = 0.2f;
  EXPECT_EQ(choose_token(z.data(), 5, top1), 2);
  top1.uniform = 0.99f;
  EXPECT_EQ(choose_token(z.data(), 5, top1), 3);
}

// A vocabulary split over tp ranks (padding in the last slice, as the lm_head has when tp does
// not divide the vocabulary): combining each slice's argmax gives choose_token's greedy over the
// whole row, including ties across slices, -inf and NaN slices.
TEST(TokenChoice, SliceArgmaxCombinesToTheWholeRowGreedy) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::mt19937_64 rng(8);
  TokenChoice greedy;
  greedy.temperature = 0.0f;
  auto check = [&](const std::vector<float>& row, int tp) {
    const int V = int(row.size());
    const int64_t Vr = (V + tp - 1) / tp;
    std::vector<SliceArgmax> slices(static_cast<size_t>(tp));
    for (int r = 0; r < tp; ++r) {
      // What a rank's device argmax reports: choose_token's greedy over its valid tokens.
      const int64_t begin = std::min<int64_t>(int64_t(r) * Vr, V), n = std::min<int64_t>(Vr, V - begin);
      SliceArgmax& s = slices[size_t(r)];
      s.index = n > 0 ? choose_token(row.data() + begin, int(n), greedy) : 0;
      s.value = n > 0 ? row[size_t(begin + s.index)] : nan;
    }
    EXPECT_EQ(combine_slice_argmax(slices.data(), tp, Vr), choose_token(row.data(), V, greedy)) << "tp " << tp;
  };
  for (int tp : {1, 2, 3, 4, 8}) {
    for (int V : {1, 5, 384, 1001}) {
      std::uniform_int_distribution<int> small(-3, 3);  // few distinct values: many ties
      for (int trial = 0; trial < 20; ++trial) {
        std::vector<float> row(static_cast<size_t>(V));
        for (float& x : row) x = float(small(rng));
        if (trial % 4 == 1)
          for (float& x : row) x = small(rng) < -1 ? nan : x;
        if (trial % 4 == 2)
          for (float& x : row) x = small(rng) < 0 ? -inf : x;
        if (trial % 4 == 3) std::fill(row.begin(), row.begin() + (V + 1) / 2, nan);
        check(row, tp);
      }
      check(std::vector<float>(size_t(V), nan), tp);
      check(std::vector<float>(size_t(V), -inf), tp);
    }
  }
}

TEST(TokenChoice, UniformWalksTheVocabularyInOrder) {
  // Three equally likely tokens: u in [0, 1/3) picks the first, [1/3, 2/3) the second, ...
  const std::vector<float> z = {0.0f, -INFINITY, 0.0f, 0.0f};
  TokenChoice c;
  for (auto [u, want] : {std::pair{0.1f, 0}, {0.5f, 2}, {0.9f, 3}}) {
    c.uniform = u;
    EXPECT_EQ(choose_token(z.data(), 4, c), want) << "u=" << u;
  }
}

TEST(TokenChoice, SamplerMapsRequestParameters) {
  SamplingParams p;  // TensorRT-LLM's default: top_k 1, greedy
  EXPECT_LE(Sampler(p).next_choice().temperature, 0.0f);
  p.top_k = 0;
  p.temperature = 0.0f;
  EXPECT_LE(Sampler(p).next_choice().temperature, 0.0f);
  p.temperature = 0.8f;
  p.top_k = 40;
  p.top_p = 0.0f;  // 0: off
  p.seed = 7;
  Sampler a(p), b(p);
  for (int i = 0; i < 100; ++i) {
    const TokenChoice ca = a.next_choice(), cb = b.next_choice();
    EXPECT_FLOAT_EQ(ca.temperature, 0.8f);
    EXPECT_EQ(ca.top_k, 40);
    EXPECT_FLOAT_EQ(ca.top_p, 1.0f);
    EXPECT_GE(ca.uniform, 0.0f);
    EXPECT_LT(ca.uniform, 1.0f);
    EXPECT_EQ(ca.uniform, cb.uniform);  // same seed, same draws
  }
  p.top_p = 0.9f;
  EXPECT_FLOAT_EQ(Sampler(p).next_choice().top_p, 0.9f);
}

}  // namespace
}  // namespace lamina
