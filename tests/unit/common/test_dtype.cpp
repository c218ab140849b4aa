#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "common/dtype.h"
#include "common/error.h"

namespace lamina {

TEST(DType, Bf16RoundTripAndRounding) {
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f)), 1.0f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(-2.5f)), -2.5f);
  // 1 + 2^-8 lies exactly between two bf16 values: ties go to even (1.0).
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
}

TEST(DType, F16MatchesIeeeOnRandomValues) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> d(-70000.0f, 70000.0f);
  for (int i = 0; i < 10000; ++i) {
    const float x = d(rng) * (i % 3 == 0 ? 1e-5f : 1.0f);
    const float y = f16_to_float(float_to_f16(x));
    if (std::fabs(x) >= 65520.0f) EXPECT_TRUE(std::isinf(y)) << x;  // IEEE: below 65520 rounds to 65504
    else EXPECT_LE(std::fabs(y - x), std::max(std::fabs(x) * 0x1p-11f, 0x1p-25f)) << x;
  }
  EXPECT_EQ(f16_to_float(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_float(0x0001), 0x1p-24f);  // smallest subnormal
  EXPECT_EQ(float_to_f16(65504.0f), 0x7bff);
}

TEST(DType, F8E4M3Decodes) {
  EXPECT_EQ(f8e4m3_to_float(0x38), 1.0f);
  EXPECT_EQ(f8e4m3_to_float(0x7e), 448.0f);
  EXPECT_EQ(f8e4m3_to_float(0xb8), -1.0f);
  EXPECT_TRUE(std::isnan(f8e4m3_to_float(0x7f)));
}

TEST(DType, Names) {
  EXPECT_EQ(dtype_from_user_name("bf16"), DType::BF16);
  EXPECT_EQ(dtype_from_safetensors_name("F16"), DType::F16);
  EXPECT_THROW(dtype_from_user_name("float8"), Error);
  EXPECT_THROW(dtype_from_safetensors_name("C64"), Error);
}

}  // namespace lamina
