#include <gtest/gtest.h>

#include <map>

#include "common/error.h"
#include "sampling/sampler.h"

namespace lamina {

TEST(Sampler, GreedyByDefault) {
  Sampler s(SamplingParams{});
  EXPECT_EQ(s.sample({0.1f, 3.0f, 2.0f}, {}), 1);
}

TEST(Sampler, SeedReproducesAndTopKLimits) {
  SamplingParams p;
  p.top_k = 2;
  p.temperature = 1.0f;
  p.seed = 42;
  const std::vector<float> logits = {1.0f, 1.1f, 0.9f, -5.0f};
  Sampler a(p), b(p);
  std::map<int, int> seen;
  for (int i = 0; i < 500; ++i) {
    const int x = a.sample(logits, {});
    EXPECT_EQ(x, b.sample(logits, {}));
    ++seen[x];
  }
  EXPECT_EQ(seen.size(), 2u);  // only the two best logits
  EXPECT_TRUE(seen.count(0) && seen.count(1));
}

TEST(Sampler, TopPKeepsSmallestNucleus) {
  SamplingParams p;
  p.top_k = 0;
  p.top_p = 0.5f;
  p.seed = 1;
  Sampler s(p);
  for (int i = 0; i < 200; ++i) EXPECT_EQ(s.sample({5.0f, 1.0f, 0.0f}, {}), 0);  // token 0 holds > 50%
}

TEST(Sampler, TemperatureDistribution) {
  SamplingParams p;
  p.top_k = 0;
  p.temperature = 1.0f;
  p.seed = 9;
  Sampler s(p);
  int ones = 0;
  const int n = 20000;
  for (int i = 0; i < n; ++i) ones += s.sample({0.0f, std::log(3.0f)}, {}) == 1;
  EXPECT_NEAR(double(ones) / n, 0.75, 0.02);
}

TEST(Sampler, Penalties) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 0.5f;
  p.frequency_penalty = 0.25f;
  std::vector<float> l = {4.0f, -1.0f, 1.0f};
  apply_penalties(l, {0, 0, 1}, p);
  EXPECT_FLOAT_EQ(l[0], 4.0f / 2 - 0.5f - 0.5f);
  EXPECT_FLOAT_EQ(l[1], -1.0f * 2 - 0.5f - 0.25f);
  EXPECT_FLOAT_EQ(l[2], 1.0f);
}

TEST(Sampler, PointerOverloadMatchesVectorPath) {
  const std::vector<float> logits = {0.5f, 2.0f, 2.0f, -1.0f, 1.9f};
  Sampler greedy(SamplingParams{});
  EXPECT_EQ(greedy.sample(logits.data(), logits.size(), {}), 1);  // lowest index wins the tie
  SamplingParams p;
  p.repetition_penalty = 4.0f;  // penalties take the copying path: token 1 and 2 drop below 4
  Sampler penalised(p);
  EXPECT_EQ(penalised.sample(logits.data(), logits.size(), {1, 2}), 4);
  EXPECT_EQ(logits[1], 2.0f);  // the caller's logits are untouched
}

TEST(Sampler, RejectsBadParams) {
  SamplingParams p;
  p.top_p = 1.5f;
  EXPECT_THROW(Sampler{p}, Error);
  p = {};
  p.temperature = -1;
  EXPECT_THROW(Sampler{p}, Error);
}

}  // namespace lamina
