// matmul on the CUDA backend (GEMV for M <= 8, cuBLASLt above) vs the CPU reference.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/gemv_tuner.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/matmul.h"
#include "op_test_util.h"

namespace lamina::optest {
namespace {

class MatmulOp : public OpTest {};

struct Shape {
  int N, K;
};

TEST_P(MatmulOp, MatchesCpu) {
  // Rows: GEMV sizes (1, 3, kGemvMaxM) and cuBLASLt sizes (just above, odd, larger).
  const int Ms[] = {1, 3, cuda::kGemvMaxM, cuda::kGemvMaxM + 1, 17, 130};
  // N x K: Llama-like K, a head-sized N, odd K (scalar GEMV path, unaligned cuBLASLt rows), tiny.
  const Shape shapes[] = {{96, 4096}, {1000, 512}, {257, 1000}, {37, 99}, {3, 8}};
  for (const Shape& s : shapes) {
    const auto w = rnd(size_t(s.N) * s.K);
    auto w_g = upload_weight(*gpu_, w), w_c = upload_weight(*cpu_, w);
    for (int M : Ms) {
      const auto x = rnd(size_t(M) * s.K);
      auto x_g = upload_act(*gpu_, x), x_c = upload_act(*cpu_, x);
      auto out_g = poisoned_act(*gpu_, size_t(M) * s.N), out_c = poisoned_act(*cpu_, size_t(M) * s.N);
      gpu_->matmul(out_g.get(), x_g.get(), w_g.get(), M, s.N, s.K);
      cpu_->matmul(out_c.get(), x_c.get(), w_c.get(), M, s.N, s.K);
      expect_close(read_act(*gpu_, out_g, size_t(M) * s.N), read_act(*cpu_, out_c, size_t(M) * s.N), tol(),
                   "matmul M=" + std::to_string(M) + " N=" + std::to_string(s.N) + " K=" + std::to_string(s.K));
    }
  }
}

// cuBLASLt's algorithms are chosen per bucket of rows: the bucket's top M (powers of two to 256,
// multiples of 256 above), and bucket_rows names one M of each bucket in a range, largest first.
TEST(GemmRowBuckets, RowsMapToTheirBucketsAndEveryBucketIsNamedOnce) {
  if (std::getenv("LAMINA_GEMM_ROW_BUCKETS") && std::string(std::getenv("LAMINA_GEMM_ROW_BUCKETS")) == "0")
    GTEST_SKIP() << "row buckets off";
  using cuda::LtGemm;
  EXPECT_EQ(LtGemm::algorithm_rows(1), 1);
  EXPECT_EQ(LtGemm::algorithm_rows(8), 8);
  EXPECT_EQ(LtGemm::algorithm_rows(9), 16);
  EXPECT_EQ(LtGemm::algorithm_rows(104), 128);
  EXPECT_EQ(LtGemm::algorithm_rows(256), 256);
  EXPECT_EQ(LtGemm::algorithm_rows(257), 512);
  EXPECT_EQ(LtGemm::algorithm_rows(1000), 1024);
  EXPECT_EQ(LtGemm::algorithm_rows(1024), 1024);
  EXPECT_EQ(LtGemm::algorithm_rows(8191), 8192);
  EXPECT_EQ(LtGemm::bucket_rows(9, 1000), (std::vector<int>{1000, 768, 512, 256, 128, 64, 32, 16}));
  for (int hi : {9, 100, 300, 4097, 8192}) {
    const std::vector<int> rows = LtGemm::bucket_rows(9, hi);
    std::vector<int> buckets;
    for (int M = 9; M <= hi; ++M)
      if (buckets.empty() || buckets.back() != LtGemm::algorithm_rows(M)) buckets.push_back(LtGemm::algorithm_rows(M));
    ASSERT_EQ(rows.size(), buckets.size()) << "hi " << hi;
    for (size_t i = 0; i < rows.size(); ++i) {
      EXPECT_EQ(LtGemm::algorithm_rows(rows[i]), buckets[buckets.size() - 1 - i]) << "hi " << hi;
      EXPECT_LE(rows[i], hi);
    }
  }
}

// After one matmul at each bucket (Backend::prepare_matmul's pass), every M up to the top runs
// the bucket's algorithm with no new heuristic call, and the product stays right at Ms that are
// not a bucket's top (the algorithm chosen for 128 rows at 104, for 1024 at 1000).
TEST_P(MatmulOp, BucketAlgorithmsServeEveryRowCountWithoutNewPlans) {
  if (std::getenv("LAMINA_GEMM_ROW_BUCKETS") && std::string(std::getenv("LAMINA_GEMM_ROW_BUCKETS")) == "0")
    GTEST_SKIP() << "row buckets off";
  const int N = 1000, K = 512, max_M = 1000;
  const auto w = rnd(size_t(N) * K), x = rnd(size_t(max_M) * K);
  auto w_g = upload_weight(*gpu_, w), w_c = upload_weight(*cpu_, w);
  auto x_g = upload_act(*gpu_, x), x_c = upload_act(*cpu_, x);
  auto out_g = poisoned_act(*gpu_, size_t(max_M) * N), out_c = poisoned_act(*cpu_, size_t(max_M) * N);
  cuda::LtGemm gemm;
  const cudaStream_t stream = cuda_stream_of(*gpu_);
  for (int M : cuda::LtGemm::bucket_rows(cuda::kGemvMaxM + 1, max_M))
    gemm.run(dt(), out_g.get(), x_g.get(), w_g.get(), M, N, K, stream);
  const int planned = gemm.heuristic_calls();
  EXPECT_EQ(planned, int(cuda::LtGemm::bucket_rows(cuda::kGemvMaxM + 1, max_M).size()));
  for (int M : {9, 13, 104, 129, 300, 777, 1000}) {
    gemm.run(dt(), out_g.get(), x_g.get(), w_g.get(), M, N, K, stream);
    cpu_->matmul(out_c.get(), x_c.get(), w_c.get(), M, N, K);
    expect_close(read_act(*gpu_, out_g, size_t(M) * N), read_act(*cpu_, out_c, size_t(M) * N), tol(),
                 "bucketed matmul M=" + std::to_string(M));
  }
  EXPECT_EQ(gemm.heuristic_calls(), planned) << "an M inside a planned bucket asked the heuristic again";
}

// The same weights through both GPU paths: GEMV for row m alone must agree with the GEMM's row m.
TEST_P(MatmulOp, GemvAgreesWithGemm) {
  const int N = 1536, K = 4096, M = 33;
  const auto w = rnd(size_t(N) * K), x = rnd(size_t(M) * K);
  auto w_g = upload_weight(*gpu_, w);
  expect_last_row_alone_matches_batched(*gpu_, w_g.get(), x, M, N, K, tol(), "gemv row vs gemm row");
}

// The gate_up projection with its SwiGLU (decode): the GPU's one-pass kernel against the CPU's
// matmul then silu_mul. Weights are scaled so gate values span roughly [-6, 6]: silu's curved
// part and both tails are hit. Odd F covers the last block's missing pair, K = 99 the scalar kernel.
TEST_P(MatmulOp, GateUpSwigluMatchesCpu) {
  const Shape shapes[] = {{96, 4096}, {1000, 512}, {257, 1000}, {37, 99}};
  for (const Shape& s : shapes) {
    const int F = s.N, K = s.K;
    const float span = 6.0f * std::sqrt(3.0f / float(K));  // x, w ~ U(-1, 1)·span: dot ~ N(0, ~2²)
    const auto w = rnd(size_t(2) * F * K, -span, span);
    auto w_g = upload_weight(*gpu_, w), w_c = upload_weight(*cpu_, w);
    for (int M : {1, 3, cuda::kGemvMaxM}) {
      const auto x = rnd(size_t(M) * K, -1.0f, 1.0f);
      auto x_g = upload_act(*gpu_, x), x_c = upload_act(*cpu_, x);
      auto out_g = poisoned_act(*gpu_, size_t(M) * F), out_c = poisoned_act(*cpu_, size_t(M) * F);
      auto gu_c = poisoned_act(*cpu_, size_t(M) * 2 * F);
      ASSERT_TRUE(gpu_->gate_up_swiglu(out_g.get(), x_g.get(), w_g.get(), M, F, K)) << "no fused path for M=" << M;
      ASSERT_FALSE(cpu_->gate_up_swiglu(out_c.get(), x_c.get(), w_c.get(), M, F, K));
      cpu_->matmul(gu_c.get(), x_c.get(), w_c.get(), M, 2 * F, K);
      cpu_->silu_mul(out_c.get(), gu_c.get(), M, F);
      expect_close(read_act(*gpu_, out_g, size_t(M) * F), read_act(*cpu_, out_c, size_t(M) * F), tol(),
                   "gate_up_swiglu M=" + std::to_string(M) + " F=" + std::to_string(F) + " K=" + std::to_string(K));
    }
  }
  // Above the GEMV's rows the backend declines and the caller takes the two-op path.
  EXPECT_FALSE(gpu_->gate_up_swiglu(nullptr, nullptr, nullptr, cuda::kGemvMaxM + 1, 8, 8));
}

// The one-token GEMV's launch shapes (the candidates its tuning times, gemv_tuner.h) compute the
// same bits, so the shape a GPU's tuning picks changes speed only; the backend's tuned launch
// gives those bits too, and the tuning left a choice for the shape behind.
TEST_P(MatmulOp, EveryOneTokenGemvShapeGivesTheSameBits) {
  const int K = 4096, N = 1000;  // N: blocks past the last row at R = 8; F = N for gate_up
  cudaStream_t stream = cuda_stream_of(*gpu_);
  for (bool gate_up : {false, true}) {
    const auto w = rnd(size_t(gate_up ? 2 : 1) * N * K), x = rnd(K);
    auto w_g = upload_weight(*gpu_, w);
    auto x_g = upload_act(*gpu_, x);
    auto tuned_g = poisoned_act(*gpu_, N);
    if (gate_up)
      ASSERT_TRUE(gpu_->gate_up_swiglu(tuned_g.get(), x_g.get(), w_g.get(), 1, N, K));
    else
      gpu_->matmul(tuned_g.get(), x_g.get(), w_g.get(), 1, N, K);
    const auto tuned = read_act(*gpu_, tuned_g, N);
    const auto shapes = cuda::gemv_one_token_shapes(gate_up);
    ASSERT_GE(shapes.size(), 2u);
    for (int s = 0; s < static_cast<int>(shapes.size()); ++s) {
      auto out_g = poisoned_act(*gpu_, N);
      cuda::launch_gemv_one_token_shape(dt(), s, gate_up, out_g.get(), x_g.get(), w_g.get(), N, K, stream);
      const auto out = read_act(*gpu_, out_g, N);
      for (int n = 0; n < N; ++n)
        ASSERT_EQ(out[n], tuned[n]) << (gate_up ? "gate_up+swiglu " : "gemv ") << shapes[s] << " row " << n;
    }
  }
  if (const char* e = std::getenv("LAMINA_GEMV_TUNING"); e && std::string(e) == "0") return;  // tuning off
  const auto choices = cuda::gemv_tuning_choices();
  const std::string dt_name = dt() == DType::F32 ? "f32" : dt() == DType::F16 ? "f16" : "bf16";
  for (const std::string what : {" gemv N1000 K4096: ", " gate_up+swiglu N1000 K4096: "}) {
    const std::string want = " " + dt_name + what;
    EXPECT_TRUE(std::any_of(choices.begin(), choices.end(),
                            [&](const std::string& c) { return c.find(want) != std::string::npos; }))
        << "no tuning choice recorded for " << want;
  }
}

// matmul_accumulate (the GEMM adding its product to the residual as its C input) at batched M:
// the GPU's residual against the CPU's residual + product; the GEMV sizes decline it (false, the
// residual untouched), and LlamaForward then runs matmul and the add in the norm.
TEST_P(MatmulOp, AccumulateAddsTheProductToTheResidual) {
  const Shape shapes[] = {{96, 4096}, {1000, 512}, {257, 1000}};
  for (const Shape& s : shapes) {
    const auto w = rnd(size_t(s.N) * s.K);
    auto w_g = upload_weight(*gpu_, w), w_c = upload_weight(*cpu_, w);
    for (int M : {cuda::kGemvMaxM + 1, 130}) {
      const auto x = rnd(size_t(M) * s.K), residual = rnd(size_t(M) * s.N, -4.0f, 4.0f);
      auto x_g = upload_act(*gpu_, x), x_c = upload_act(*cpu_, x);
      auto r_g = upload_act(*gpu_, residual), r_c = upload_act(*cpu_, residual);
      const std::string what = "matmul_accumulate M=" + std::to_string(M) + " N=" + std::to_string(s.N) +
                               " K=" + std::to_string(s.K);
      if (std::getenv("LAMINA_RESIDUAL_IN_GEMM") && std::string(std::getenv("LAMINA_RESIDUAL_IN_GEMM")) == "0") {
        ASSERT_FALSE(gpu_->matmul_accumulate(r_g.get(), x_g.get(), w_g.get(), M, s.N, s.K)) << what;
        continue;
      }
      ASSERT_TRUE(gpu_->matmul_accumulate(r_g.get(), x_g.get(), w_g.get(), M, s.N, s.K)) << what;
      ASSERT_TRUE(cpu_->matmul_accumulate(r_c.get(), x_c.get(), w_c.get(), M, s.N, s.K)) << what;
      expect_close(read_act(*gpu_, r_g, size_t(M) * s.N), read_act(*cpu_, r_c, size_t(M) * s.N), tol(), what);
    }
  }
  const int M = cuda::kGemvMaxM, N = 64, K = 256;
  const auto residual = rnd(size_t(M) * N);
  auto w_g = upload_weight(*gpu_, rnd(size_t(N) * K));
  auto x_g = upload_act(*gpu_, rnd(size_t(M) * K)), r_g = upload_act(*gpu_, residual);
  EXPECT_FALSE(gpu_->matmul_accumulate(r_g.get(), x_g.get(), w_g.get(), M, N, K)) << "the GEMV sizes";
  const auto after = read_act(*gpu_, r_g, size_t(M) * N);
  const auto before = read_act(*gpu_, upload_act(*gpu_, residual), size_t(M) * N);
  EXPECT_EQ(after, before) << "a declined matmul_accumulate changed the residual";
}

LAMINA_INSTANTIATE_DTYPES(MatmulOp);

}  // namespace
}  // namespace lamina::optest
