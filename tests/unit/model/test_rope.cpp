#include <gtest/gtest.h>

#include <cmath>

#include "model/rope.h"

namespace lamina {

TEST(Rope, PlainFrequencies) {
  ModelConfig c;
  c.head_size = 8;
  c.rotary_base = 10000;
  const auto f = rope_inv_freq(c);
  ASSERT_EQ(f.size(), 4u);
  EXPECT_FLOAT_EQ(f[0], 1.0f);
  EXPECT_FLOAT_EQ(f[1], float(1.0 / std::pow(10000.0, 0.25)));
}

// Llama 3.1 scaling: high frequencies untouched, low ones divided by factor, a smooth band between.
TEST(Rope, Llama3Scaling) {
  ModelConfig c;
  c.head_size = 128;
  c.rotary_base = 500000;
  const auto plain = rope_inv_freq(c);
  c.rotary_scaling = {"llama3", 8.0, 1.0, 4.0, 8192};
  const auto scaled = rope_inv_freq(c);
  for (size_t i = 0; i < plain.size(); ++i) {
    const double wavelen = 2 * M_PI / plain[i];
    if (wavelen < 8192 / 4.0) EXPECT_FLOAT_EQ(scaled[i], plain[i]);
    else if (wavelen > 8192) EXPECT_FLOAT_EQ(scaled[i], plain[i] / 8.0f);
    else {
      EXPECT_LT(scaled[i], plain[i]);
      EXPECT_GT(scaled[i], plain[i] / 8.0f);
    }
  }
}

}  // namespace lamina
