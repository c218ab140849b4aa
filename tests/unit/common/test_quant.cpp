// Host quantization codecs (common/quant.h): what every backend agrees a quantized weight means.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "common/dtype.h"
#include "common/error.h"
#include "common/quant.h"

namespace lamina {
namespace {

TEST(Quant, Fp8EncodesEveryFiniteCodeExactly) {
  for (int c = 0; c < 256; ++c) {
    if ((c & 0x7f) == 0x7f) continue;  // NaN
    const float v = f8e4m3_to_float(uint8_t(c));
    const uint8_t back = float_to_f8e4m3(v);
    if (v == 0.0f) EXPECT_EQ(back & 0x7f, 0) << c;
    else EXPECT_EQ(back, c) << "code " << c << " value " << v;
  }
  EXPECT_EQ(float_to_f8e4m3(1e6f), 0x7e);            // saturates at +448
  EXPECT_EQ(float_to_f8e4m3(-1e6f), 0xfe);           // and -448
  EXPECT_EQ(f8e4m3_to_float(float_to_f8e4m3(0.3f)), 0.3125f);  // nearest of 0.28125, 0.3125
}

TEST(Quant, Fp8RoundsToNearest) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-440.0f, 440.0f);
  for (int i = 0; i < 20000; ++i) {
    const float v = u(rng) * (i % 2 ? 1.0f : 1e-3f);
    const float q = f8e4m3_to_float(float_to_f8e4m3(v));
    // No finite code is closer to v than q.
    for (int c = 0; c < 256; ++c) {
      if ((c & 0x7f) == 0x7f) continue;
      EXPECT_LE(std::fabs(q - v), std::fabs(f8e4m3_to_float(uint8_t(c)) - v)) << v;
    }
    if (HasFailure()) break;
  }
}

// Halfway between two neighbouring codes the encoder picks the one with the even mantissa (ties
// to even), in the subnormal and normal ranges and across each exponent step; just off the
// midpoint it picks the nearer code.
TEST(Quant, Fp8TiesGoToTheEvenCode) {
  for (int c = 0; c < 0x7e; ++c) {
    const float lo = f8e4m3_to_float(uint8_t(c)), hi = f8e4m3_to_float(uint8_t(c + 1));
    const float mid = 0.5f * (lo + hi);  // exact: both codes have few mantissa bits
    const int even = (c % 2 == 0) ? c : c + 1;
    EXPECT_EQ(float_to_f8e4m3(mid), even) << "between codes " << c << " and " << c + 1;
    EXPECT_EQ(float_to_f8e4m3(-mid), 0x80 | even);
    EXPECT_EQ(float_to_f8e4m3(std::nextafter(mid, 0.0f)), c);
    EXPECT_EQ(float_to_f8e4m3(std::nextafter(mid, 1e9f)), c + 1);
  }
  EXPECT_EQ(float_to_f8e4m3(464.0f), 0x7e);  // halfway to 480 (not a code): saturates
  EXPECT_EQ(float_to_f8e4m3(std::numeric_limits<float>::infinity()), 0x7e);
  EXPECT_EQ(float_to_f8e4m3(std::nanf("")), 0);
  EXPECT_EQ(float_to_f8e4m3(-0.0f), 0x80);
}

// Large tensors are quantized on several threads: the result must not depend on how the work was
// split (compared with a single-row-at-a-time run of the same rows).
TEST(Quant, ParallelQuantizationEqualsRowByRow) {
  const int64_t rows = 700, cols = 1024;  // 716,800 weights: over the parallel threshold
  std::mt19937 rng(11);
  std::normal_distribution<float> g(0.0f, 0.05f);
  std::vector<float> w(size_t(rows * cols));
  for (auto& v : w) v = g(rng);
  std::vector<uint8_t> q4(w.size() / 2), q4_row(cols / 2);
  std::vector<float> s4(size_t(rows) * (cols / kInt4GroupSize)), s4_row(cols / kInt4GroupSize);
  quantize_int4_groups(w.data(), rows, cols, kInt4GroupSize, q4.data(), s4.data());
  std::vector<int8_t> q8(w.size()), q8_row(cols);
  std::vector<float> s8(rows), s8_row(1);
  quantize_int8_per_channel(w.data(), rows, cols, q8.data(), s8.data());
  for (int64_t r = 0; r < rows; ++r) {
    quantize_int4_groups(w.data() + r * cols, 1, cols, kInt4GroupSize, q4_row.data(), s4_row.data());
    ASSERT_EQ(0, std::memcmp(q4_row.data(), q4.data() + r * cols / 2, q4_row.size())) << "int4 row " << r;
    quantize_int8_per_channel(w.data() + r * cols, 1, cols, q8_row.data(), s8_row.data());
    ASSERT_EQ(0, std::memcmp(q8_row.data(), q8.data() + r * cols, q8_row.size())) << "int8 row " << r;
    ASSERT_EQ(s8_row[0], s8[size_t(r)]);
  }
  std::vector<uint8_t> f8(w.size());
  const float scale = quantize_fp8_per_tensor(w.data(), w.size(), f8.data());
  float amax = 0.0f;
  for (float v : w) amax = std::max(amax, std::fabs(v));
  EXPECT_EQ(scale, amax / kFp8E4M3Max);
  for (size_t i = 0; i < w.size(); i += 997) EXPECT_EQ(f8[i], float_to_f8e4m3(w[i] / scale)) << i;
}

TEST(Quant, EachFormatDequantizesCloseToTheOriginal) {
  const int N = 5, K = 256;
  std::mt19937 rng(3);
  std::normal_distribution<float> g(0.0f, 0.02f);
  std::vector<float> w(size_t(N) * K), back(w.size());
  for (auto& v : w) v = g(rng);
  auto rel = [&] {
    double e = 0, s = 0;
    for (size_t i = 0; i < w.size(); ++i) e += double(back[i] - w[i]) * (back[i] - w[i]), s += double(w[i]) * w[i];
    return std::sqrt(e / s);
  };
  std::vector<uint8_t> q(size_t(N) * K);
  std::vector<float> scales(size_t(N) * K);
  QuantizedWeight v{WeightFormat::Int8PerChannel, q.data(), scales.data(), N, K, 0};

  quantize_int8_per_channel(w.data(), N, K, reinterpret_cast<int8_t*>(q.data()), scales.data());
  dequantize(v, back.data());
  EXPECT_LT(rel(), 0.01);

  v.format = WeightFormat::Fp8PerTensor;
  scales[0] = quantize_fp8_per_tensor(w.data(), w.size(), q.data());
  dequantize(v, back.data());
  EXPECT_LT(rel(), 0.05);

  v.format = WeightFormat::Int4Group;
  v.group_size = 128;
  quantize_int4_groups(w.data(), N, K, 128, q.data(), scales.data());
  dequantize(v, back.data());
  EXPECT_LT(rel(), 0.15);
  // Packing: element 2j is byte j's low nibble, 2j+1 its high nibble, each stored as q + 8.
  const int q0 = int(q[0] & 0xf) - 8, q1 = int(q[0] >> 4) - 8;
  EXPECT_FLOAT_EQ(back[0], float(q0) * scales[0]);
  EXPECT_FLOAT_EQ(back[1], float(q1) * scales[0]);
  EXPECT_FLOAT_EQ(back[128], float(int(q[64] & 0xf) - 8) * scales[1]);
}

TEST(Quant, Int4RefusesKNotAMultipleOfTheGroup) {
  std::vector<float> w(2 * 192, 0.5f), s(4);
  std::vector<uint8_t> q(192);
  try {
    quantize_int4_groups(w.data(), 2, 192, 128, q.data(), s.data());
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a multiple of the group size 128"), std::string::npos) << e.what();
  }
}

TEST(Quant, RequantizeFp8KeepsValuesAtTheLargerScale) {
  std::vector<float> w = {0.1f, -0.25f, 0.05f, 0.0f};
  std::vector<uint8_t> q(w.size());
  const float s = quantize_fp8_per_tensor(w.data(), w.size(), q.data());
  requantize_fp8(q.data(), q.size(), s, 2 * s);
  for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(f8e4m3_to_float(q[i]) * 2 * s, w[i], std::fabs(w[i]) * 0.07 + 1e-6);
}

}  // namespace
}  // namespace lamina
