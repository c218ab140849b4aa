#include "op_test_util.h"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <iostream>

#include "common/dtype.h"

namespace lamina::optest {

bool have_gpu() {
  static const bool yes = cuda_device_count() > 0;
  return yes;
}

uint64_t test_seed() {
  if (const char* s = std::getenv("LAMINA_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  std::random_device rd;
  return (uint64_t{rd()} << 32) ^ rd();
}

std::vector<float> random_floats(std::mt19937_64& rng, size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng);
  return v;
}

std::vector<float> rounded(DType dt, std::vector<float> v) {
  if (dt == DType::F32) return v;
  std::vector<uint16_t> tmp(v.size());
  convert_from_f32(v.data(), tmp.data(), dt, v.size());
  convert_to_f32(tmp.data(), dt, v.data(), v.size());
  return v;
}

double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * want[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

double tolerance(DType dt) { return dt == DType::F32 ? 1e-5 : 1e-2; }

void expect_close(const std::vector<float>& got, const std::vector<float>& want, double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i)
    if (!std::isfinite(got[i]) && bad++ == 0) first = i;
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size()
                     << " outputs not finite (unwritten?), first at index " << first;
  const double err = rel_l2(got, want);
  EXPECT_LE(err, tol) << what << ": relative L2 error " << err << " > " << tol;
}

DeviceBuffer upload_act(Backend& b, const std::vector<float>& v) {
  const DType dt = b.activation_dtype();
  DeviceBuffer buf(&b, v.size() * dtype_size(dt));
  std::vector<char> raw(v.size() * dtype_size(dt));
  convert_from_f32(v.data(), raw.data(), dt, v.size());
  b.copy_to_device(buf.get(), raw.data(), raw.size());
  return buf;
}

DeviceBuffer upload_weight(Backend& b, const std::vector<float>& v) {
  void* p = b.upload_weight(v.data(), DType::F32, v.size());
  return DeviceBuffer::adopt(&b, p, v.size() * dtype_size(b.activation_dtype()));
}

DeviceBuffer upload_i32(Backend& b, const std::vector<int32_t>& v) {
  DeviceBuffer buf(&b, v.size() * 4);
  b.copy_to_device(buf.get(), v.data(), v.size() * 4);
  return buf;
}

DeviceBuffer upload_f32(Backend& b, const std::vector<float>& v) {
  DeviceBuffer buf(&b, v.size() * 4);
  b.copy_to_device(buf.get(), v.data(), v.size() * 4);
  return buf;
}

DeviceBuffer poisoned_act(Backend& b, size_t n) {
  const size_t bytes = n * dtype_size(b.activation_dtype());
  DeviceBuffer buf(&b, bytes);
  std::vector<unsigned char> nan_bytes(bytes, 0xFF);  // all-ones is NaN in f32, f16 and bf16
  b.copy_to_device(buf.get(), nan_bytes.data(), bytes);
  return buf;
}

std::vector<float> read_act(Backend& b, const DeviceBuffer& buf, size_t n) {
  std::vector<float> v(n);
  b.activations_to_host_f32(v.data(), buf.get(), n);
  return v;
}

void OpTest::SetUp() {
  LAMINA_SKIP_WITHOUT_GPU();
  seed_ = test_seed();
  rng_.seed(seed_);
  RecordProperty("seed", std::to_string(seed_));
  cpu_ = make_cpu_backend();
  gpu_ = make_cuda_backend(0, dt());
}

void OpTest::TearDown() {
  if (HasFailure()) std::cerr << "  replay this draw with LAMINA_TEST_SEED=" << seed_ << "\n";
}

std::string dtype_param_name(const ::testing::TestParamInfo<DType>& info) { return dtype_user_name(info.param); }

void expect_last_row_alone_matches_batched(Backend& gpu, const void* w, const std::vector<float>& x, int M, int N,
                                           int K, double tol, const std::string& what) {
  auto x_g = upload_act(gpu, x);
  auto full = poisoned_act(gpu, size_t(M) * N);
  gpu.matmul(full.get(), x_g.get(), w, M, N, K);
  const auto all = read_act(gpu, full, size_t(M) * N);
  const int row = M - 1;
  auto x_row = upload_act(gpu, std::vector<float>(x.begin() + size_t(row) * K, x.begin() + size_t(row + 1) * K));
  auto one = poisoned_act(gpu, N);
  gpu.matmul(one.get(), x_row.get(), w, 1, N, K);
  expect_close(read_act(gpu, one, N), std::vector<float>(all.begin() + size_t(row) * N, all.end()), tol, what);
}

}  // namespace lamina::optest
