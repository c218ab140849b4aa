// matmul on the CUDA backend (GEMV for M <= 8, cuBLASLt above) vs the CPU reference.
#include "backends/cuda/kernels.h"
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

// The same weights through both GPU paths: GEMV for row m alone must agree with the GEMM's row m.
TEST_P(MatmulOp, GemvAgreesWithGemm) {
  const int N = 1536, K = 4096, M = 33;
  const auto w = rnd(size_t(N) * K), x = rnd(size_t(M) * K);
  auto w_g = upload_weight(*gpu_, w);
  expect_last_row_alone_matches_batched(*gpu_, w_g.get(), x, M, N, K, tol(), "gemv row vs gemm row");
}

// The SwiGLU fused into the down projection (decode): the GPU's one-pass kernel against the CPU's
// silu_mul then matmul. Gate values span [-6, 6] so silu's curved part and both tails are hit.
TEST_P(MatmulOp, SwigluMatmulMatchesCpu) {
  const Shape shapes[] = {{96, 4096}, {1000, 512}, {257, 1000}, {37, 99}};
  for (const Shape& s : shapes) {
    const int N = s.N, F = s.K;
    const auto w = rnd(size_t(N) * F);
    auto w_g = upload_weight(*gpu_, w), w_c = upload_weight(*cpu_, w);
    for (int M : {1, 3, cuda::kGemvMaxM}) {
      const auto gu = rnd(size_t(M) * 2 * F, -6.0f, 6.0f);
      auto gu_g = upload_act(*gpu_, gu), gu_c = upload_act(*cpu_, gu);
      auto out_g = poisoned_act(*gpu_, size_t(M) * N), out_c = poisoned_act(*cpu_, size_t(M) * N);
      auto mid_c = poisoned_act(*cpu_, size_t(M) * F);
      ASSERT_TRUE(gpu_->swiglu_matmul(out_g.get(), gu_g.get(), w_g.get(), M, N, F)) << "no fused path for M=" << M;
      ASSERT_FALSE(cpu_->swiglu_matmul(out_c.get(), gu_c.get(), w_c.get(), M, N, F));
      cpu_->silu_mul(mid_c.get(), gu_c.get(), M, F);
      cpu_->matmul(out_c.get(), mid_c.get(), w_c.get(), M, N, F);
      expect_close(read_act(*gpu_, out_g, size_t(M) * N), read_act(*cpu_, out_c, size_t(M) * N), tol(),
                   "swiglu_matmul M=" + std::to_string(M) + " N=" + std::to_string(N) + " F=" + std::to_string(F));
    }
  }
  // Above the GEMV's rows the backend declines and the caller takes the two-op path.
  EXPECT_FALSE(gpu_->swiglu_matmul(nullptr, nullptr, nullptr, cuda::kGemvMaxM + 1, 8, 8));
}

LAMINA_INSTANTIATE_DTYPES(MatmulOp);

}  // namespace
}  // namespace lamina::optest
