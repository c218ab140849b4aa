// GPU argmax and top-k/top-p sampling (backends/cuda/cuda_sampling.h) checked against the
// definition of ops/token_choice.h by the double-precision oracle of tests/support.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <numeric>

#include "backends/cuda/cuda_sampling.h"
#include "op_test_util.h"
#include "token_choice_oracle.h"

namespace lamina::optest {
namespace {

using cuda::SampleParams;
using test::cpu_argmax;
using test::expect_valid_choice;
using test::make_logits;
using test::make_params;

class Sampling : public ::testing::Test {
 protected:
  void SetUp() override {
    LAMINA_SKIP_WITHOUT_GPU();
    seed_ = test_seed();
    rng_.seed(seed_);
    gpu_ = make_cuda_backend(0, DType::F32);
  }
  void TearDown() override {
    if (HasFailure()) std::cerr << "  replay this draw with LAMINA_TEST_SEED=" << seed_ << "\n";
  }
  std::unique_ptr<Backend> gpu_;
  std::mt19937_64 rng_;
  uint64_t seed_ = 0;
};

TEST_F(Sampling, Argmax) {
  for (int V : {7, 1000, 50257, 128256}) {
    const int B = 33;
    auto z = make_logits(rng_, B, V, V > 7);
    z[size_t(1) * V + V - 1] = 100.0f;                                // the last index wins
    z[size_t(2) * V + 3] = z[size_t(2) * V + 5] = 100.0f;             // a tie: the lower index wins
    z[size_t(3) * V + 0] = std::numeric_limits<float>::quiet_NaN();  // NaN never wins
    auto z_g = upload_f32(*gpu_, z);
    DeviceBuffer ids(gpu_.get(), B * 4);
    cuda::launch_argmax(z_g.as<float>(), B, V, ids.as<int32_t>(), cuda_stream_of(*gpu_));
    std::vector<int32_t> got(B);
    gpu_->copy_to_host(got.data(), ids.get(), B * 4);
    for (int b = 0; b < B; ++b) EXPECT_EQ(got[b], cpu_argmax(&z[size_t(b) * V], V)) << "V=" << V << " row " << b;
  }
}

// Backend::slice_argmax_rows (a tensor-parallel rank's greedy share): rows row_stride apart of which
// only the first V count (the padding after them holds larger values, which must not win), ties,
// a NaN that must not win, a row of NaN only; float32 and bfloat16 logits, each against the CPU
// backend on the same (rounded) values.
TEST_F(Sampling, SliceArgmaxRowsMatchesCpu) {
  auto cpu = make_cpu_backend();
  for (DType dt : {DType::F32, DType::BF16}) {
    auto gpu = make_cuda_backend(0, dt);
    for (int V : {7, 1000, 64128}) {
      const int R = 9, stride = V + 37;
      auto z = make_logits(rng_, R, stride, true);
      for (int r = 0; r < R; ++r)
        for (int v = V; v < stride; ++v) z[size_t(r) * stride + v] = 1000.0f;  // padding: never counts
      z[size_t(1) * stride + V - 1] = 100.0f;                                // the last valid index wins
      z[size_t(2) * stride + 3] = z[size_t(2) * stride + 5] = 100.0f;        // a tie: the lower index wins
      z[size_t(3) * stride + 0] = std::numeric_limits<float>::quiet_NaN();  // NaN never wins
      for (int v = 0; v < V; ++v) z[size_t(4) * stride + v] = std::numeric_limits<float>::quiet_NaN();
      auto z_g = upload_act(*gpu, z);
      const std::vector<float> rounded = read_act(*gpu, z_g, z.size());
      DeviceBuffer out_g(gpu.get(), R * sizeof(SliceArgmax));
      gpu->slice_argmax_rows(out_g.as<SliceArgmax>(), z_g.get(), R, V, stride);
      std::vector<SliceArgmax> got(R), want(R);
      gpu->copy_to_host(got.data(), out_g.get(), R * sizeof(SliceArgmax));
      cpu->slice_argmax_rows(want.data(), rounded.data(), R, V, stride);
      for (int r = 0; r < R; ++r) {
        const std::string what = std::string(dtype_user_name(dt)) + " V=" + std::to_string(V) + " row " + std::to_string(r);
        EXPECT_EQ(got[r].index, want[r].index) << what;
        if (std::isnan(want[r].value)) {
          EXPECT_TRUE(std::isnan(got[r].value)) << what;
        } else {
          EXPECT_EQ(got[r].value, want[r].value) << what;
        }
      }
      EXPECT_EQ(want[1].index, V - 1);
      EXPECT_EQ(want[2].index, 3);
      EXPECT_TRUE(std::isnan(want[4].value) && want[4].index == 0);
    }
  }
}

// The device join of a split vocabulary's greedy choice (pipelined decoding at tp > 1): each
// rank's spread_slice_argmax into its slot of [R, tp, 2], the slots summed as the all-reduce sums
// them (in rank order, float32), then join_slice_argmax; against the CPU backend and against
// combine_slice_argmax over the same pairs. Random pairs, a tie across ranks (the lower rank
// wins), NaN slices (never win), a row of NaN slices only (0), indices up to 2^24 - 1.
TEST_F(Sampling, SplitGreedyJoinMatchesCpu) {
  auto cpu = make_cpu_backend();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int tp : {2, 3, 8}) {
    const int R = 7;
    const int64_t vocab_per_rank = 16777215;
    std::uniform_real_distribution<float> value(-20.0f, 20.0f);
    std::uniform_int_distribution<int32_t> index(0, int32_t(vocab_per_rank - 1));
    std::vector<std::vector<SliceArgmax>> ranks(static_cast<size_t>(tp), std::vector<SliceArgmax>(R));
    for (auto& rows : ranks)
      for (auto& p : rows) p = SliceArgmax{value(rng_), index(rng_)};
    ranks[0][1].value = ranks[size_t(tp - 1)][1].value = 50.0f;  // a tie: rank 0 wins
    ranks[1][2].value = nan;                                      // a NaN slice never wins
    for (auto& rows : ranks) rows[3].value = nan;                 // no candidate at all: 0
    ranks[size_t(tp - 1)][4] = SliceArgmax{60.0f, int32_t(vocab_per_rank - 1)};

    std::vector<float> sum_g(size_t(R) * tp * 2, 0.0f), sum_c = sum_g;
    for (int k = 0; k < tp; ++k) {
      const bool empty = k == 1 && tp == 3;  // a slice of padding only: its pairs are not passed
      DeviceBuffer mine(gpu_.get(), R * sizeof(SliceArgmax)), out(gpu_.get(), sum_g.size() * sizeof(float));
      gpu_->copy_to_device(mine.get(), ranks[size_t(k)].data(), R * sizeof(SliceArgmax));
      gpu_->spread_slice_argmax(out.as<float>(), empty ? nullptr : mine.as<SliceArgmax>(), R, k, tp);
      std::vector<float> part(sum_g.size()), part_c(sum_g.size());
      gpu_->copy_to_host(part.data(), out.get(), part.size() * sizeof(float));
      cpu->spread_slice_argmax(part_c.data(), empty ? nullptr : ranks[size_t(k)].data(), R, k, tp);
      for (size_t i = 0; i < part.size(); ++i) sum_g[i] += part[i], sum_c[i] += part_c[i];
      if (empty)
        for (auto& p : ranks[size_t(k)]) p.value = nan;
    }
    DeviceBuffer gathered(gpu_.get(), sum_g.size() * sizeof(float)), ids(gpu_.get(), R * sizeof(int32_t));
    gpu_->copy_to_device(gathered.get(), sum_g.data(), sum_g.size() * sizeof(float));
    gpu_->join_slice_argmax(ids.as<int32_t>(), gathered.as<float>(), R, tp, vocab_per_rank);
    std::vector<int32_t> got(R), want(R);
    gpu_->copy_to_host(got.data(), ids.get(), R * sizeof(int32_t));
    cpu->join_slice_argmax(want.data(), sum_c.data(), R, tp, vocab_per_rank);
    for (int r = 0; r < R; ++r) {
      std::vector<SliceArgmax> row;
      for (int k = 0; k < tp; ++k) row.push_back(ranks[size_t(k)][size_t(r)]);
      const int32_t oracle = combine_slice_argmax(row.data(), tp, vocab_per_rank);
      EXPECT_EQ(got[r], oracle) << "tp " << tp << " row " << r;
      EXPECT_EQ(want[r], oracle) << "tp " << tp << " row " << r << " (cpu)";
    }
    EXPECT_EQ(want[1], ranks[0][1].index);
    EXPECT_EQ(want[3], 0);
  }
}

// A fed step's inputs advanced on the device (advance_fed_inputs) against the CPU backend: ids from
// the chosen ids, each position one past its logit row's, in place, with rows that move (logit
// row t != t).
TEST_F(Sampling, AdvanceFedInputsMatchesCpu) {
  auto cpu = make_cpu_backend();
  for (int T : {1, 5, 33, 1024}) {
    std::uniform_int_distribution<int32_t> pos(0, 100000), id(0, 128255), row(0, T - 1);
    std::vector<int32_t> ids(T), positions(T), logit_rows(T), chosen(T);
    for (int t = 0; t < T; ++t) ids[t] = -1, positions[t] = pos(rng_), logit_rows[t] = row(rng_), chosen[t] = id(rng_);
    DeviceBuffer ids_g(gpu_.get(), T * 4), pos_g(gpu_.get(), T * 4), rows_g(gpu_.get(), T * 4), chosen_g(gpu_.get(), T * 4);
    gpu_->copy_to_device(ids_g.get(), ids.data(), T * 4);
    gpu_->copy_to_device(pos_g.get(), positions.data(), T * 4);
    gpu_->copy_to_device(rows_g.get(), logit_rows.data(), T * 4);
    gpu_->copy_to_device(chosen_g.get(), chosen.data(), T * 4);
    gpu_->advance_fed_inputs(ids_g.as<int32_t>(), pos_g.as<int32_t>(), rows_g.as<int32_t>(), chosen_g.as<int32_t>(), T);
    std::vector<int32_t> got_ids(T), got_pos(T);
    gpu_->copy_to_host(got_ids.data(), ids_g.get(), T * 4);
    gpu_->copy_to_host(got_pos.data(), pos_g.get(), T * 4);
    std::vector<int32_t> want_pos = positions;
    cpu->advance_fed_inputs(ids.data(), want_pos.data(), logit_rows.data(), chosen.data(), T);
    EXPECT_EQ(got_ids, chosen) << "T " << T;
    EXPECT_EQ(ids, chosen) << "T " << T << " (cpu)";
    EXPECT_EQ(got_pos, want_pos) << "T " << T;
    for (int t = 0; t < T; ++t) ASSERT_EQ(want_pos[t], positions[logit_rows[t]] + 1) << "T " << T << " token " << t;
  }
}

// Greedy rows' argmax split over blocks (launch_sample_split, what select_tokens runs for up to 8
// rows), among sampled rows: the split greedy rows give exactly cpu_argmax (the last index, a tie
// across two chunks, a NaN, a row of NaN only: 0), sampled rows a valid choice; splits that leave
// chunks empty (64 over V = 7) or uneven (7 over 1000) included.
TEST_F(Sampling, SplitGreedyArgmaxMatchesCpu) {
  for (int V : {7, 1000, 128256}) {
    for (int split : {1, 7, 64}) {
      const int B = 6;
      auto z = make_logits(rng_, B, V, V > 7);
      auto params = make_params(rng_, B);
      for (int b : {0, 1, 2, 3, 4}) params[size_t(b)].temperature = 0.0f;  // row 5 samples
      z[size_t(1) * V + V - 1] = 100.0f;
      z[size_t(2) * V + 0] = z[size_t(2) * V + V - 1] = 100.0f;  // first and last chunk tie: 0 wins
      z[size_t(3) * V + V / 2] = std::numeric_limits<float>::quiet_NaN();
      for (int v = 0; v < V; ++v) z[size_t(4) * V + v] = std::numeric_limits<float>::quiet_NaN();
      auto z_g = upload_f32(*gpu_, z);
      DeviceBuffer p_g(gpu_.get(), B * sizeof(SampleParams)), ids(gpu_.get(), B * 4);
      DeviceBuffer partials(gpu_.get(), size_t(B) * split * sizeof(SliceArgmax));
      gpu_->copy_to_device(p_g.get(), params.data(), B * sizeof(SampleParams));
      cuda::launch_sample_split(DType::F32, z_g.get(), B, V, p_g.as<SampleParams>(), ids.as<int32_t>(),
                                partials.as<SliceArgmax>(), split, cuda_stream_of(*gpu_));
      std::vector<int32_t> got(B);
      gpu_->copy_to_host(got.data(), ids.get(), B * 4);
      for (int b = 0; b < B; ++b) {
        SCOPED_TRACE("V=" + std::to_string(V) + " split " + std::to_string(split) + " row " + std::to_string(b));
        if (b < 5) EXPECT_EQ(got[b], cpu_argmax(&z[size_t(b) * V], V));
        else expect_valid_choice(got[b], &z[size_t(b) * V], V, params[b]);
      }
      EXPECT_EQ(got[1], V - 1);
      EXPECT_EQ(got[2], 0);
      EXPECT_EQ(got[4], 0);
    }
  }
}

TEST_F(Sampling, TopKTopPMatchesCpu) {
  for (int V : {1000, 50257, 128256}) {
    for (bool masked : {false, true}) {
      const int B = 64;
      const auto z = make_logits(rng_, B, V, masked);
      const auto params = make_params(rng_, B);
      auto z_g = upload_f32(*gpu_, z);
      DeviceBuffer p_g(gpu_.get(), B * sizeof(SampleParams));
      gpu_->copy_to_device(p_g.get(), params.data(), B * sizeof(SampleParams));
      DeviceBuffer ids(gpu_.get(), B * 4);
      cuda::launch_sample(z_g.as<float>(), B, V, p_g.as<SampleParams>(), ids.as<int32_t>(), cuda_stream_of(*gpu_));
      std::vector<int32_t> got(B);
      gpu_->copy_to_host(got.data(), ids.get(), B * 4);
      for (int b = 0; b < B; ++b) {
        SCOPED_TRACE("V=" + std::to_string(V) + " row " + std::to_string(b));
        expect_valid_choice(got[b], &z[size_t(b) * V], V, params[b]);
      }
    }
  }
}

// The engine's path: logits in the activation dtype (bf16 / f16) read directly, checked against
// the definition over the same rounded values.
TEST_F(Sampling, LowPrecisionLogitsMatchDefinition) {
  for (DType dt : {DType::BF16, DType::F16}) {
    auto gpu = make_cuda_backend(0, dt);
    const int V = 128256, B = 40;
    const auto z = rounded(dt, make_logits(rng_, B, V, true));
    const auto params = make_params(rng_, B);
    DeviceBuffer z_g(gpu.get(), z.size() * dtype_size(dt));
    std::vector<char> raw(z.size() * dtype_size(dt));
    convert_dtype(z.data(), DType::F32, raw.data(), dt, z.size());
    gpu->copy_to_device(z_g.get(), raw.data(), raw.size());
    DeviceBuffer p_g(gpu.get(), B * sizeof(TokenChoice)), ids(gpu.get(), B * 4);
    gpu->copy_to_device(p_g.get(), params.data(), B * sizeof(TokenChoice));
    gpu->select_tokens(ids.as<int32_t>(), z_g.get(), B, V, p_g.as<TokenChoice>());
    std::vector<int32_t> got(B);
    gpu->copy_to_host(got.data(), ids.get(), B * 4);
    for (int b = 0; b < B; ++b) {
      SCOPED_TRACE(std::string(dtype_user_name(dt)) + " row " + std::to_string(b));
      expect_valid_choice(got[b], &z[size_t(b) * V], V, params[b]);
    }
  }
}

}  // namespace
}  // namespace lamina::optest
