// Row-wise and element-wise ops (embedding, rms_norm, add_rms_norm, add, silu_mul, gather_rows)
// on the CUDA backend vs the CPU reference, for each activation dtype.
#include <algorithm>

#include "op_test_util.h"

namespace lamina::optest {
namespace {

const int kTokens[] = {1, 3, 17, 130};

class ElementwiseOps : public OpTest {};

TEST_P(ElementwiseOps, Embedding) {
  for (int H : {96, 4096, 100}) {
    const int V = 1000;
    const auto table = rnd(size_t(V) * H);
    auto dev_table_gpu = upload_weight(*gpu_, table);
    auto dev_table_cpu = upload_weight(*cpu_, table);
    for (int T : kTokens) {
      std::vector<int32_t> ids(T);
      std::uniform_int_distribution<int> pick(0, V - 1);
      for (auto& id : ids) id = pick(rng_);
      ids[0] = V - 1;  // the last row is reachable
      auto ids_g = upload_i32(*gpu_, ids);
      auto ids_c = upload_i32(*cpu_, ids);
      auto out_g = poisoned_act(*gpu_, size_t(T) * H);
      auto out_c = poisoned_act(*cpu_, size_t(T) * H);
      gpu_->embedding(out_g.get(), ids_g.as<int32_t>(), dev_table_gpu.get(), T, H);
      cpu_->embedding(out_c.get(), ids_c.as<int32_t>(), dev_table_cpu.get(), T, H);
      // A copy: exact.
      expect_close(read_act(*gpu_, out_g, size_t(T) * H), read_act(*cpu_, out_c, size_t(T) * H), 0.0,
                   "embedding T=" + std::to_string(T) + " H=" + std::to_string(H));
    }
  }
}

TEST_P(ElementwiseOps, RmsNorm) {
  for (int H : {96, 4096, 100}) {
    const auto w = rnd(H, 0.5f, 1.5f);
    auto w_g = upload_weight(*gpu_, w);
    auto w_c = upload_weight(*cpu_, w);
    for (int T : kTokens) {
      const auto x = rnd(size_t(T) * H, -2.0f, 2.0f);
      auto x_g = upload_act(*gpu_, x);
      auto x_c = upload_act(*cpu_, x);
      auto out_g = poisoned_act(*gpu_, x.size());
      auto out_c = poisoned_act(*cpu_, x.size());
      gpu_->rms_norm(out_g.get(), x_g.get(), w_g.get(), T, H, 1e-5f);
      cpu_->rms_norm(out_c.get(), x_c.get(), w_c.get(), T, H, 1e-5f);
      expect_close(read_act(*gpu_, out_g, x.size()), read_act(*cpu_, out_c, x.size()), tol(),
                   "rms_norm T=" + std::to_string(T) + " H=" + std::to_string(H));
    }
  }
}

TEST_P(ElementwiseOps, AddRmsNorm) {
  for (int H : {96, 4096, 100}) {
    const auto w = rnd(H, 0.5f, 1.5f);
    auto w_g = upload_weight(*gpu_, w);
    auto w_c = upload_weight(*cpu_, w);
    for (int T : kTokens) {
      const size_t n = size_t(T) * H;
      const auto res = rnd(n, -2.0f, 2.0f), x = rnd(n);
      auto res_g = upload_act(*gpu_, res), res_c = upload_act(*cpu_, res);
      auto x_g = upload_act(*gpu_, x), x_c = upload_act(*cpu_, x);
      auto out_g = poisoned_act(*gpu_, n), out_c = poisoned_act(*cpu_, n);
      gpu_->add_rms_norm(res_g.get(), x_g.get(), out_g.get(), w_g.get(), T, H, 1e-6f);
      cpu_->add_rms_norm(res_c.get(), x_c.get(), out_c.get(), w_c.get(), T, H, 1e-6f);
      const std::string what = " T=" + std::to_string(T) + " H=" + std::to_string(H);
      expect_close(read_act(*gpu_, res_g, n), read_act(*cpu_, res_c, n), tol(), "add_rms_norm residual" + what);
      expect_close(read_act(*gpu_, out_g, n), read_act(*cpu_, out_c, n), tol(), "add_rms_norm out" + what);
    }
  }
}

TEST_P(ElementwiseOps, Add) {
  for (size_t n : {size_t(1), size_t(97), size_t(4096 * 3), size_t(1 << 20) + 5}) {
    const auto res = rnd(n), x = rnd(n);
    auto res_g = upload_act(*gpu_, res), res_c = upload_act(*cpu_, res);
    auto x_g = upload_act(*gpu_, x), x_c = upload_act(*cpu_, x);
    gpu_->add(res_g.get(), x_g.get(), n);
    cpu_->add(res_c.get(), x_c.get(), n);
    expect_close(read_act(*gpu_, res_g, n), read_act(*cpu_, res_c, n), tol(), "add n=" + std::to_string(n));
  }
}

TEST_P(ElementwiseOps, SiluMul) {
  for (int F : {96, 1000, 37, 14336}) {
    for (int T : kTokens) {
      const auto gu = rnd(size_t(T) * 2 * F, -4.0f, 4.0f);
      auto gu_g = upload_act(*gpu_, gu), gu_c = upload_act(*cpu_, gu);
      auto out_g = poisoned_act(*gpu_, size_t(T) * F), out_c = poisoned_act(*cpu_, size_t(T) * F);
      gpu_->silu_mul(out_g.get(), gu_g.get(), T, F);
      cpu_->silu_mul(out_c.get(), gu_c.get(), T, F);
      expect_close(read_act(*gpu_, out_g, size_t(T) * F), read_act(*cpu_, out_c, size_t(T) * F), tol(),
                   "silu_mul T=" + std::to_string(T) + " F=" + std::to_string(F));
    }
  }
}

TEST_P(ElementwiseOps, GatherRows) {
  for (int H : {96, 4096, 100}) {
    for (int T : kTokens) {
      const auto x = rnd(size_t(T) * H);
      auto x_g = upload_act(*gpu_, x), x_c = upload_act(*cpu_, x);
      const int R = std::max(1, T / 2 + 1);
      std::vector<int32_t> rows(R);
      std::uniform_int_distribution<int> pick(0, T - 1);
      for (auto& r : rows) r = pick(rng_);
      rows.back() = T - 1;
      auto rows_g = upload_i32(*gpu_, rows), rows_c = upload_i32(*cpu_, rows);
      auto out_g = poisoned_act(*gpu_, size_t(R) * H), out_c = poisoned_act(*cpu_, size_t(R) * H);
      gpu_->gather_rows(out_g.get(), x_g.get(), rows_g.as<int32_t>(), R, H);
      cpu_->gather_rows(out_c.get(), x_c.get(), rows_c.as<int32_t>(), R, H);
      expect_close(read_act(*gpu_, out_g, size_t(R) * H), read_act(*cpu_, out_c, size_t(R) * H), 0.0,
                   "gather_rows T=" + std::to_string(T) + " H=" + std::to_string(H));
    }
  }
}

LAMINA_INSTANTIATE_DTYPES(ElementwiseOps);

}  // namespace
}  // namespace lamina::optest
