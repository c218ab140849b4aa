// GPU argmax and top-k/top-p sampling (backends/cuda/cuda_sampling.h) vs a CPU implementation of
// the same definition, written here in double precision. Where float rounding on the GPU can
// legitimately move a cut (a top-p boundary or a draw boundary within 1e-4 of the mass), the
// check accepts either side of it.
#include <algorithm>
#include <cmath>
#include <iostream>
#include <limits>
#include <numeric>

#include "backends/cuda/cuda_sampling.h"
#include "op_test_util.h"

namespace lamina::optest {
namespace {

using cuda::SampleParams;

int cpu_argmax(const float* z, int V) {
  int best = -1;
  for (int v = 0; v < V; ++v) {
    if (std::isnan(z[v])) continue;
    if (best < 0 || z[v] > z[best]) best = v;
  }
  return best < 0 ? 0 : best;
}

struct CpuDraw {
  std::vector<char> kept;                    // [V]
  std::vector<double> cum_before, cum_after;  // running kept mass in vocabulary order
  double total = 0, target = 0;
  bool cut_ambiguous = false;  // the top-p cut lies within rounding of the target mass
  int beyond_cut = -1;         // the most probable token left out by top-p
};

CpuDraw cpu_draw(const float* z, int V, const SampleParams& P) {
  CpuDraw d;
  const float inv_t = 1.0f / P.temperature;  // the same float arithmetic as the kernel
  std::vector<float> s(V);
  for (int v = 0; v < V; ++v) s[v] = (std::isnan(z[v]) ? -INFINITY : z[v]) * inv_t;
  d.kept.assign(V, 1);
  if (P.top_k > 0 && P.top_k < V) {
    std::vector<float> sorted = s;
    std::nth_element(sorted.begin(), sorted.begin() + (P.top_k - 1), sorted.end(), std::greater<float>());
    const float kth = sorted[P.top_k - 1];
    for (int v = 0; v < V; ++v) d.kept[v] = s[v] >= kth;
  }
  const double s_max = *std::max_element(s.begin(), s.end());
  std::vector<double> p(V, 0.0);
  for (int v = 0; v < V; ++v)
    if (d.kept[v]) p[v] = std::exp(double(s[v]) - s_max);
  if (P.top_p < 1.0f) {
    std::vector<int> order;
    for (int v = 0; v < V; ++v)
      if (d.kept[v]) order.push_back(v);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return p[a] > p[b]; });
    const double mass = std::accumulate(p.begin(), p.end(), 0.0), goal = double(P.top_p) * mass;
    double cum = 0;
    size_t j = 0;
    for (; j < order.size(); ++j) {
      const double before = cum;
      cum += p[order[j]];
      if (cum >= goal) {
        d.cut_ambiguous = std::abs(cum - goal) < 1e-4 * mass || std::abs(before - goal) < 1e-4 * mass;
        break;
      }
    }
    j = std::min(j, order.size() - 1);
    const float s_cut = s[order[j]];
    for (int v = 0; v < V; ++v) d.kept[v] = d.kept[v] && s[v] >= s_cut;
    for (size_t k = j + 1; k < order.size(); ++k)
      if (s[order[k]] < s_cut) {
        d.beyond_cut = order[k];
        break;
      }
  }
  d.cum_before.resize(V);
  d.cum_after.resize(V);
  double run = 0;
  for (int v = 0; v < V; ++v) {
    d.cum_before[v] = run;
    if (d.kept[v]) run += p[v];
    d.cum_after[v] = run;
  }
  d.total = run;
  d.target = double(P.uniform) * run;
  return d;
}

std::vector<SampleParams> make_params(std::mt19937_64& rng, int B) {
  const SampleParams configs[] = {
      {0.0f, 0, 1.0f, 0}, {1.0f, 0, 1.0f, 0},    {0.7f, 40, 1.0f, 0},  {1.0f, 0, 0.9f, 0},
      {0.8f, 50, 0.95f, 0}, {1.3f, 1, 1.0f, 0},  {1.0f, 0, 0.5f, 0},   {1.0f, 5000, 0.99f, 0},
  };
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<SampleParams> out(B);
  for (int b = 0; b < B; ++b) {
    out[b] = configs[b % 8];
    out[b].uniform = b == 9 ? 0.0f : b == 10 ? 0.99999994f : u(rng);
  }
  return out;
}

std::vector<float> make_logits(std::mt19937_64& rng, int B, int V, bool with_masked) {
  std::normal_distribution<float> n(0.0f, 3.0f);
  std::vector<float> z(size_t(B) * V);
  for (auto& x : z) x = n(rng);
  if (with_masked)
    for (size_t i = 0; i < z.size(); i += 7) z[i] = -INFINITY;
  return z;
}

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
        const float* row = &z[size_t(b) * V];
        const SampleParams& P = params[b];
        const int g = got[b];
        SCOPED_TRACE("V=" + std::to_string(V) + " row " + std::to_string(b) + " T=" + std::to_string(P.temperature) +
                     " k=" + std::to_string(P.top_k) + " p=" + std::to_string(P.top_p) +
                     " u=" + std::to_string(P.uniform));
        ASSERT_GE(g, 0);
        ASSERT_LT(g, V);
        if (P.temperature <= 0.0f || P.top_k == 1) {
          EXPECT_EQ(g, cpu_argmax(row, V));
          continue;
        }
        const CpuDraw d = cpu_draw(row, V, P);
        const bool kept = d.kept[g] || (d.cut_ambiguous && g == d.beyond_cut);
        EXPECT_TRUE(kept) << "token " << g << " is outside the top-k/top-p set";
        if (d.cut_ambiguous) continue;
        const double eps = 1e-4 * d.total;
        EXPECT_TRUE(d.cum_before[g] - eps <= d.target && d.target <= d.cum_after[g] + eps)
            << "token " << g << " covers [" << d.cum_before[g] << ", " << d.cum_after[g] << ") but the target is "
            << d.target << " of " << d.total;
      }
    }
  }
}

}  // namespace
}  // namespace lamina::optest
