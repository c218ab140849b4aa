// Shared pieces of the op tests: the CPU reference backend and a CUDA backend side by side, fresh
// random inputs (rounded to the activation dtype so both backends see the same numbers),
// poisoned outputs, and relative-L2 comparison with per-dtype tolerances.
#pragma once
#include <gtest/gtest.h>

#include <cstdint>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/cuda_backend.h"
#include "ops/backend.h"

namespace lamina::optest {

bool have_gpu();

#define LAMINA_SKIP_WITHOUT_GPU()                                                          \
  do {                                                                                     \
    if (!::lamina::optest::have_gpu())                                                     \
      GTEST_SKIP() << "no CUDA device (cuda_device_count() == 0): GPU op test skipped";    \
  } while (0)

// Seed for this test: LAMINA_TEST_SEED if set, else fresh from std::random_device (printed on
// failure through a SCOPED_TRACE by the fixture, so a failing draw can be replayed).
uint64_t test_seed();

std::vector<float> random_floats(std::mt19937_64& rng, size_t n, float lo = -1.0f, float hi = 1.0f);
// Values as the dtype stores them (f32 → dt → f32).
std::vector<float> rounded(DType dt, std::vector<float> v);

// ‖got − want‖ / ‖want‖ in double; infinity when got has a non-finite value.
double rel_l2(const std::vector<float>& got, const std::vector<float>& want);
double tolerance(DType dt);  // f32: 1e-5, f16/bf16: 1e-2

// Checks every element is finite (i.e. written: outputs are poisoned with NaN first) and that the
// relative L2 error is within tol.
void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what);

// ---- buffers on a backend ----
// Runs matmul over weight w (already on `gpu`) for x [M, K] (a batched path when M > kGemvMaxM),
// then for x's last row alone (the GEMV): the lone row must equal the batched one within tol.
void expect_last_row_alone_matches_batched(Backend& gpu, const void* w, const std::vector<float>& x, int M, int N,
                                           int K, double tol, const std::string& what);

DeviceBuffer upload_act(Backend& b, const std::vector<float>& v);      // in b.activation_dtype()
DeviceBuffer upload_weight(Backend& b, const std::vector<float>& v);   // through upload_weight(F32)
DeviceBuffer upload_i32(Backend& b, const std::vector<int32_t>& v);
DeviceBuffer upload_f32(Backend& b, const std::vector<float>& v);      // raw float32 bytes
DeviceBuffer poisoned_act(Backend& b, size_t n);                      // NaN in every dtype
std::vector<float> read_act(Backend& b, const DeviceBuffer& buf, size_t n);

// Fixture for op tests parametrised by the CUDA backend's activation dtype.
class OpTest : public ::testing::TestWithParam<DType> {
 protected:
  void SetUp() override;
  void TearDown() override;  // on failure: prints the seed to replay with LAMINA_TEST_SEED
  DType dt() const { return GetParam(); }
  double tol() const { return tolerance(dt()); }
  std::vector<float> rnd(size_t n, float lo = -1.0f, float hi = 1.0f) { return rounded(dt(), random_floats(rng_, n, lo, hi)); }

  std::unique_ptr<Backend> cpu_, gpu_;
  std::mt19937_64 rng_;
  uint64_t seed_ = 0;
};

std::string dtype_param_name(const ::testing::TestParamInfo<DType>& info);

#define LAMINA_INSTANTIATE_DTYPES(Suite)                                                              \
  INSTANTIATE_TEST_SUITE_P(Dtypes, Suite, ::testing::Values(DType::F32, DType::F16, DType::BF16), \
                           ::lamina::optest::dtype_param_name)

}  // namespace lamina::optest
