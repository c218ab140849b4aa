#include <gtest/gtest.h>

#include "io/npy.h"
#include "test_support.h"

namespace lamina {

TEST(Npy, RoundTrip) {
  test::ScratchDir s("npy");
  const std::vector<float> f = {1, 2, 3, 4, 5, 6};
  write_npy_f32((s / "f.npy").string(), {2, 3}, f.data());
  NpyArray a = read_npy((s / "f.npy").string());
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.as_f32(), f);
  const std::vector<int32_t> ids = {7, 8, 9};
  write_npy_i32((s / "i.npy").string(), {3}, ids.data());
  EXPECT_EQ(read_npy((s / "i.npy").string()).as_i64(), (std::vector<int64_t>{7, 8, 9}));
}

TEST(Npy, ReadsTransformersFixture) {
  NpyArray a = read_npy(test::golden_dir("gqa_f32_hub").string() + "/context_logits.npy");
  EXPECT_EQ(a.shape, (std::vector<int64_t>{24, 512}));
}

}  // namespace lamina
