// Backend::screened_argmax (the lm_head screen, backends/cuda/lm_head_screen.cu) against what it
// stands for: the logits that matmul writes for the same x and lm_head, then slice_argmax_rows over
// them. The (value, index) must be the same, not close: fresh random weights, rows made to nearly
// tie with the best one (the int8 copy cannot order them; the full products must), exact copies of
// the best row (ties: the lowest index), non-finite weights, large and zero activations.
#include <cmath>
#include <cstring>
#include <string>

#include "common/quant.h"
#include "op_test_util.h"

namespace lamina::optest {
namespace {

class LmHeadScreen : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override {
    LAMINA_SKIP_WITHOUT_GPU();
    seed_ = test_seed();
    rng_.seed(seed_);
    gpu_ = make_cuda_backend(0, GetParam());
  }
  void TearDown() override {
    if (HasFailure()) std::printf("replay with LAMINA_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed_));
  }

  // w: [V, H], x: [R, H] as floats (uploaded in the activation dtype).
  void check(const std::vector<float>& w, int V, int H, const std::vector<float>& x, int R, const std::string& what) {
    SCOPED_TRACE(what + " V=" + std::to_string(V) + " H=" + std::to_string(H) + " R=" + std::to_string(R));
    DeviceBuffer w_g = upload_weight(*gpu_, w);
    const size_t bytes = gpu_->lm_head_screen_bytes(w_g.get(), V, H);
    ASSERT_GT(bytes, 0u) << "no screen for a 16-bit lm_head";
    DeviceBuffer screen(gpu_.get(), bytes);
    gpu_->make_lm_head_screen(screen.get(), w_g.get(), V, H);
    DeviceBuffer x_g = upload_act(*gpu_, x);

    DeviceBuffer logits = poisoned_act(*gpu_, size_t(R) * V);
    gpu_->matmul(logits.get(), x_g.get(), w_g.get(), R, V, H);
    DeviceBuffer want_g(gpu_.get(), size_t(R) * sizeof(SliceArgmax));
    gpu_->slice_argmax_rows(want_g.as<SliceArgmax>(), logits.get(), R, V, V);

    DeviceBuffer scratch = poisoned_act(*gpu_, size_t(R) * V);
    DeviceBuffer got_g(gpu_.get(), size_t(R) * sizeof(SliceArgmax)), ids_g(gpu_.get(), size_t(R) * sizeof(int32_t));
    gpu_->screened_argmax(got_g.as<SliceArgmax>(), ids_g.as<int32_t>(), x_g.get(), w_g.get(), screen.get(),
                          scratch.get(), R, V, H);
    std::vector<SliceArgmax> want(static_cast<size_t>(R)), got(static_cast<size_t>(R));
    std::vector<int32_t> ids(static_cast<size_t>(R));
    gpu_->copy_to_host(want.data(), want_g.get(), want.size() * sizeof(SliceArgmax));
    gpu_->copy_to_host(got.data(), got_g.get(), got.size() * sizeof(SliceArgmax));
    gpu_->copy_to_host(ids.data(), ids_g.get(), ids.size() * sizeof(int32_t));
    for (int r = 0; r < R; ++r) {
      const SliceArgmax& a = want[size_t(r)];
      const SliceArgmax& b = got[size_t(r)];
      EXPECT_EQ(b.index, a.index) << "row " << r << ": logit " << b.value << " against " << a.value;
      if (std::isnan(a.value)) {
        EXPECT_TRUE(std::isnan(b.value)) << "row " << r;
      } else {
        EXPECT_EQ(b.value, a.value) << "row " << r;  // -0 and +0 compare equal, as logits tie
      }
      EXPECT_EQ(ids[size_t(r)], b.index) << "row " << r;
    }
  }

  // Rows k of w made to nearly tie with row `best` (its copy plus noise of relative size eps), or
  // exactly (eps 0).
  static void near_copies(std::vector<float>& w, int H, int best, const std::vector<int>& rows, float eps,
                          std::mt19937_64& rng) {
    std::uniform_real_distribution<float> noise(-1.0f, 1.0f);
    for (int k : rows)
      for (int h = 0; h < H; ++h) w[size_t(k) * H + h] = w[size_t(best) * H + h] * (1.0f + eps * noise(rng));
  }

  std::unique_ptr<Backend> gpu_;
  std::mt19937_64 rng_;
  uint64_t seed_ = 0;
};

TEST_P(LmHeadScreen, RandomWeightsGiveTheGemvArgmax) {
  for (const auto& [V, H] : {std::pair{20000, 512}, std::pair{4099, 4096}, std::pair{333, 64}}) {
    const auto w = random_floats(rng_, size_t(V) * H);
    for (int R : {1, 3, 8}) check(w, V, H, random_floats(rng_, size_t(R) * H, -2.0f, 2.0f), R, "random");
  }
}

TEST_P(LmHeadScreen, NearTiesAndExactTiesGiveTheGemvArgmax) {
  const int V = 8192, H = 1024, R = 4;
  auto w = random_floats(rng_, size_t(V) * H);
  const auto x = random_floats(rng_, size_t(R) * H);
  // Row 5000 is every x row's best by a wide margin. Rows around it copy it with noise of 1e-3
  // (logits a fraction of a unit apart, inside the int8 copy's bound: all are candidates, and the
  // full products order them), and rows 6000 and 7000 copy it exactly (ties, which the lowest
  // index of the largest logit wins).
  for (int r = 0; r < R; ++r)
    for (int h = 0; h < H; ++h) w[size_t(5000) * H + h] += 0.5f * x[size_t(r) * H + h];
  near_copies(w, H, 5000, {4990, 5001, 5002, 5003, 100, 8191}, 1e-3f, rng_);
  near_copies(w, H, 5000, {7000, 6000}, 0.0f, rng_);
  check(w, V, H, x, R, "near ties");
  // The same with the exact copies below the original: the lowest index is a copy.
  near_copies(w, H, 5000, {10, 20}, 0.0f, rng_);
  check(w, V, H, x, R, "ties below");
  // Large activations: logits in the hundreds, where a 16-bit logit's rounding step is large.
  std::vector<float> big = x;
  for (float& v : big) v *= 40.0f;
  check(w, V, H, big, R, "large x");
}

TEST_P(LmHeadScreen, NonFiniteWeightsAndZeroActivations) {
  const int V = 3000, H = 256, R = 2;
  auto w = random_floats(rng_, size_t(V) * H);
  const auto x = random_floats(rng_, size_t(R) * H);
  w[size_t(17) * H + 3] = std::nanf("");             // row 17's logit is NaN: never the argmax
  w[size_t(2999) * H + 7] = INFINITY;                 // row 2999's is +-inf
  w[size_t(1500) * H + 9] = -INFINITY;
  check(w, V, H, x, R, "non-finite rows");
  // x = 0: every logit is 0 (row 17: NaN), so the lowest index wins; every row is a candidate.
  auto finite = random_floats(rng_, size_t(V) * H);
  check(finite, V, H, std::vector<float>(size_t(R) * H, 0.0f), R, "zero x");
  // Every logit NaN: index 0 with a NaN value, as slice_argmax_rows.
  std::vector<float> nan_x(size_t(R) * H, 1.0f);
  nan_x[5] = std::nanf("");
  nan_x[size_t(H) + 9] = std::nanf("");
  check(finite, V, H, nan_x, R, "NaN x");
}

TEST_P(LmHeadScreen, NoScreenForFloat32OrAQuantizedLmHead) {
  auto f32 = make_cuda_backend(0, DType::F32);
  DeviceBuffer w = upload_weight(*f32, random_floats(rng_, size_t(64) * 128));
  EXPECT_EQ(f32->lm_head_screen_bytes(w.get(), 64, 128), 0u);
  EXPECT_EQ(gpu_->lm_head_screen_bytes(nullptr, 64, 100), 0u) << "H must be a multiple of 8";
  // An int8 lm_head (--quantize_lm_head) is read as stored.
  const auto wf = random_floats(rng_, size_t(64) * 128);
  std::vector<int8_t> q(wf.size());
  std::vector<float> scales(64);
  quantize_int8_per_channel(wf.data(), 64, 128, q.data(), scales.data());
  QuantizedWeight view;
  view.format = WeightFormat::Int8PerChannel;
  view.rows = 64;
  view.cols = 128;
  view.data = q.data();
  view.scales = scales.data();
  DeviceBuffer wq = DeviceBuffer::adopt(gpu_.get(), gpu_->upload_quantized_weight(view), q.size());
  EXPECT_EQ(gpu_->lm_head_screen_bytes(wq.get(), 64, 128), 0u);
}

std::string dtype_name(const ::testing::TestParamInfo<DType>& info) { return dtype_user_name(info.param); }

INSTANTIATE_TEST_SUITE_P(Dtypes, LmHeadScreen, ::testing::Values(DType::BF16, DType::F16), dtype_name);

}  // namespace
}  // namespace lamina::optest
