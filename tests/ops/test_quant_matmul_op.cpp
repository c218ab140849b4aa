// matmul over quantized weights (common/quant.h) on the CUDA backend vs the CPU reference, which
// dequantizes at upload: the quantized GEMV (M <= 8), the dequantize-then-GEMM path and, for FP8
// on FP8 tensor cores, the FP8 GEMM with dynamically quantized activations (M > 8). Weights are
// fresh random floats quantized on the host, so both backends see the same quantized numbers.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <string>
#include <tuple>

#include "backends/cuda/kernels.h"
#include "backends/cuda/quant_kernels.h"
#include "common/dtype.h"
#include "common/quant.h"
#include "op_test_util.h"
#include "paged_kv_util.h"

namespace lamina::optest {
namespace {

// A host-quantized copy of a random float weight in one format.
struct HostQuant {
  std::vector<uint8_t> data;
  std::vector<float> scales;
  QuantizedWeight view;
};

HostQuant quantize(WeightFormat f, const std::vector<float>& w, int N, int K) {
  HostQuant h;
  h.view.format = f;
  h.view.rows = N;
  h.view.cols = K;
  switch (f) {
    case WeightFormat::Int8PerChannel:
      h.data.resize(size_t(N) * K);
      h.scales.resize(N);
      quantize_int8_per_channel(w.data(), N, K, reinterpret_cast<int8_t*>(h.data.data()), h.scales.data());
      break;
    case WeightFormat::Fp8PerTensor:
      h.data.resize(size_t(N) * K);
      h.scales = {quantize_fp8_per_tensor(w.data(), w.size(), h.data.data())};
      break;
    case WeightFormat::Int4Group:
      h.view.group_size = kInt4GroupSize;
      h.data.resize(size_t(N) * K / 2);
      h.scales.resize(size_t(N) * (K / kInt4GroupSize));
      quantize_int4_groups(w.data(), N, K, kInt4GroupSize, h.data.data(), h.scales.data());
      break;
  }
  h.view.data = h.data.data();
  h.view.scales = h.scales.data();
  return h;
}

struct Param {
  DType dt;
  WeightFormat format;
};

std::string param_name(const ::testing::TestParamInfo<Param>& info) {
  const char* f = info.param.format == WeightFormat::Int8PerChannel ? "Int8"
                  : info.param.format == WeightFormat::Fp8PerTensor ? "Fp8"
                                                                    : "Int4";
  return std::string(f) + "_" + dtype_user_name(info.param.dt);
}

class QuantMatmulOp : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    LAMINA_SKIP_WITHOUT_GPU();
    seed_ = test_seed();
    rng_.seed(seed_);
    cpu_ = make_cpu_backend();
    gpu_ = make_cuda_backend(0, dt());
  }
  void TearDown() override {
    if (HasFailure()) std::printf("replay with LAMINA_TEST_SEED=%llu\n", static_cast<unsigned long long>(seed_));
  }
  DType dt() const { return GetParam().dt; }
  WeightFormat fmt() const { return GetParam().format; }
  std::vector<float> rnd(size_t n) { return rounded(dt(), random_floats(rng_, n)); }

  // Runs out = x · w^T on both backends with the same quantized w and compares.
  void check(const HostQuant& q, void* w_g, void* w_c, int M, int N, int K, double tol) {
    const auto x = rnd(size_t(M) * K);
    auto x_g = upload_act(*gpu_, x), x_c = upload_act(*cpu_, x);
    auto out_g = poisoned_act(*gpu_, size_t(M) * N), out_c = poisoned_act(*cpu_, size_t(M) * N);
    gpu_->matmul(out_g.get(), x_g.get(), w_g, M, N, K);
    cpu_->matmul(out_c.get(), x_c.get(), w_c, M, N, K);
    expect_close(read_act(*gpu_, out_g, size_t(M) * N), read_act(*cpu_, out_c, size_t(M) * N), tol,
                 weight_format_name(q.view.format) + " matmul M=" + std::to_string(M) + " N=" + std::to_string(N) +
                     " K=" + std::to_string(K));
  }

  // The fused qkv + rope + KV write against the CPU's matmul then rope_kv_write (test below).
  void check_qkv_rope_kv_write(int Hq, int Hkv, int D, int K);

  std::unique_ptr<Backend> cpu_, gpu_;
  std::mt19937_64 rng_;
  uint64_t seed_ = 0;
};

struct Shape {
  int N, K;
};

TEST_P(QuantMatmulOp, MatchesCpu) {
  // GEMV sizes (1, 3, kGemvMaxM) and batched sizes (just above, odd, larger).
  const int Ms[] = {1, 3, cuda::kGemvMaxM, cuda::kGemvMaxM + 1, 17, 130};
  // N x K: Llama-like K, tail rows (N odd, not a multiple of the 16 rows a block), small K. For
  // int4 in 16-bit activations, N % 16 == 0 with K % 64 == 0 takes the tile layout and its
  // tensor-core GEMV (96 x 4096; 32 x 14336: many chunks a warp; 64 x 192: fewer chunks than
  // warps), the other shapes the packed rows.
  std::vector<Shape> shapes = {{96, 4096}, {1000, 512}, {257, 1024}, {3, 128}, {32, 14336}, {64, 256}};
  // 8-bit formats also take K that is no multiple of 16 (the scalar GEMV) or of 128.
  if (fmt() != WeightFormat::Int4Group) shapes.push_back({37, 99}), shapes.push_back({64, 1000});
  for (const Shape& s : shapes) {
    const auto w = random_floats(rng_, size_t(s.N) * s.K);
    const HostQuant q = quantize(fmt(), w, s.N, s.K);
    DeviceBuffer w_g = DeviceBuffer::adopt(gpu_.get(), gpu_->upload_quantized_weight(q.view), q.data.size());
    DeviceBuffer w_c = DeviceBuffer::adopt(cpu_.get(), cpu_->upload_quantized_weight(q.view), q.data.size());
    for (int M : Ms) {
      // FP8 batched matmuls quantize the activations to e4m3 too (per token): ~3% relative error
      // on random data, against the CPU's unquantized activations.
      const bool fp8_acts = fmt() == WeightFormat::Fp8PerTensor && M > cuda::kGemvMaxM;
      check(q, w_g.get(), w_c.get(), M, s.N, s.K, fp8_acts ? 6e-2 : tolerance(dt()));
    }
  }
}

// int4 in the tile layout (tensor-core GEMV, tiled dequantization) and in packed rows
// (LAMINA_INT4_TILES=0 at upload: the scalar-decode GEMV) give the same products.
TEST_P(QuantMatmulOp, Int4TilesMatchPackedRows) {
  if (fmt() != WeightFormat::Int4Group || dt() == DType::F32) GTEST_SKIP() << "int4 tiles: 16-bit activations";
  const int N = 128, K = 2048;
  const HostQuant q = quantize(fmt(), random_floats(rng_, size_t(N) * K), N, K);
  DeviceBuffer tiles = DeviceBuffer::adopt(gpu_.get(), gpu_->upload_quantized_weight(q.view), q.data.size());
  setenv("LAMINA_INT4_TILES", "0", 1);
  DeviceBuffer rows = DeviceBuffer::adopt(gpu_.get(), gpu_->upload_quantized_weight(q.view), q.data.size());
  unsetenv("LAMINA_INT4_TILES");
  for (int M : {1, 5, cuda::kGemvMaxM, 20}) {
    auto x = upload_act(*gpu_, rnd(size_t(M) * K));
    auto a = poisoned_act(*gpu_, size_t(M) * N), b = poisoned_act(*gpu_, size_t(M) * N);
    gpu_->matmul(a.get(), x.get(), tiles.get(), M, N, K);
    gpu_->matmul(b.get(), x.get(), rows.get(), M, N, K);
    expect_close(read_act(*gpu_, a, size_t(M) * N), read_act(*gpu_, b, size_t(M) * N), tolerance(dt()),
                 "int4 tiles vs packed rows M=" + std::to_string(M));
  }
}

// Every block shape of the streaming int4 tile GEMV (bench_kernels' sweep; the backend uses some)
// against the CPU's matmul, plain and gate_up + SwiGLU: chunks a warp fewer than, equal to and
// many times its pipeline depth (K = 256, 4096, 14336), 1 to 8 tokens, and the shapes whose shared
// memory does not fit, which decline.
TEST_P(QuantMatmulOp, Int4StreamVariantsMatchCpu) {
  if (fmt() != WeightFormat::Int4Group || dt() == DType::F32) GTEST_SKIP() << "int4 tiles: 16-bit activations";
  const std::vector<std::array<int, 2>> plain = {{4, 4}, {4, 8}, {8, 4}, {8, 8}, {16, 2}, {16, 4}, {16, 8}};
  const std::vector<std::array<int, 2>> gate_up = {{8, 4}, {8, 8}, {16, 4}, {16, 8}};  // {warps, depth}
  for (const Shape& s : {Shape{32, 256}, Shape{64, 4096}, Shape{32, 14336}}) {
    for (const bool fused : {false, true}) {
      const int F = s.N, rows = fused ? 2 * F : F, K = s.K;
      const HostQuant q = quantize(fmt(), random_floats(rng_, size_t(rows) * K), rows, K);
      DeviceBuffer w_g = DeviceBuffer::adopt(gpu_.get(), gpu_->upload_quantized_weight(q.view), q.data.size());
      DeviceBuffer w_c = DeviceBuffer::adopt(cpu_.get(), cpu_->upload_quantized_weight(q.view), q.data.size());
      void* scales = nullptr;  // the variant call takes the weight's parts: its scales on the device
      ASSERT_EQ(cudaMalloc(&scales, q.scales.size() * sizeof(float)), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(scales, q.scales.data(), q.scales.size() * sizeof(float), cudaMemcpyHostToDevice),
                cudaSuccess);
      const cuda::DeviceQuantWeight w{WeightFormat::Int4Group, w_g.get(), static_cast<const float*>(scales),
                                      kInt4GroupSize, true};
      for (int M : {1, 3, cuda::kGemvMaxM}) {
        const auto x = rnd(size_t(M) * K);
        auto x_g = upload_act(*gpu_, x), x_c = upload_act(*cpu_, x);
        auto ref = poisoned_act(*cpu_, size_t(M) * F), all = poisoned_act(*cpu_, size_t(M) * rows);
        cpu_->matmul(fused ? all.get() : ref.get(), x_c.get(), w_c.get(), M, rows, K);
        if (fused) cpu_->silu_mul(ref.get(), all.get(), M, F);
        const auto want = read_act(*cpu_, ref, size_t(M) * F);
        for (const auto& v : fused ? gate_up : plain) {
          auto out = poisoned_act(*gpu_, size_t(M) * F);
          gpu_->synchronize();  // the launch below is on the default stream
          const bool ran = cuda::launch_gemv_int4_stream_variant(v[0], v[1], fused, dt(), out.get(), x_g.get(), w, M,
                                                                 F, K, nullptr);
          const size_t smem = size_t(v[0]) * v[1] * 512 + (fused ? 2 : 1) * 16 * (K / kInt4GroupSize) * 4 +
                              size_t(M) * K * 2;
          const std::string what = std::string(fused ? "gate_up" : "plain") + " W=" + std::to_string(v[0]) +
                                   " P=" + std::to_string(v[1]) + " M=" + std::to_string(M) + " F=" +
                                   std::to_string(F) + " K=" + std::to_string(K);
          ASSERT_EQ(ran, smem <= 110 * 1024) << what;
          if (!ran) continue;
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess) << what;
          expect_close(read_act(*gpu_, out, size_t(M) * F), want, tolerance(dt()), "int4 stream " + what);
        }
      }
      cudaFree(scales);
    }
  }
}

// The gate_up GEMV with its SwiGLU over quantized weights (decode) against the CPU's matmul then
// silu_mul on the same quantized numbers. Weights are scaled so gate values span roughly [-6, 6].
// F = 48 with K = 4096 takes int4's tile kernel in 16-bit activations; F = 40 (2F = 80 rows) is
// tiled too but has no tile kernel (a gate tile needs 16 rows), so the backend declines; F = 129
// and K = 99 take the packed-rows and scalar kernels.
TEST_P(QuantMatmulOp, GateUpSwigluMatchesCpu) {
  std::vector<Shape> shapes = {{48, 4096}, {40, 256}, {129, 1024}};
  if (fmt() != WeightFormat::Int4Group) shapes.push_back({37, 99});
  for (const Shape& s : shapes) {
    const int F = s.N, K = s.K;
    const float span = 6.0f * std::sqrt(3.0f / float(K));
    const HostQuant q = quantize(fmt(), random_floats(rng_, size_t(2) * F * K, -span, span), 2 * F, K);
    DeviceBuffer w_g = DeviceBuffer::adopt(gpu_.get(), gpu_->upload_quantized_weight(q.view), q.data.size());
    DeviceBuffer w_c = DeviceBuffer::adopt(cpu_.get(), cpu_->upload_quantized_weight(q.view), q.data.size());
    const bool declines = fmt() == WeightFormat::Int4Group && dt() != DType::F32 && F == 40;
    for (int M : {1, 3, cuda::kGemvMaxM}) {
      const auto x = rnd(size_t(M) * K);
      auto x_g = upload_act(*gpu_, x), x_c = upload_act(*cpu_, x);
      auto out_g = poisoned_act(*gpu_, size_t(M) * F), out_c = poisoned_act(*cpu_, size_t(M) * F);
      auto gu_c = poisoned_act(*cpu_, size_t(M) * 2 * F);
      const bool fused = gpu_->gate_up_swiglu(out_g.get(), x_g.get(), w_g.get(), M, F, K);
      ASSERT_EQ(fused, !declines) << "F=" << F << " K=" << K << " M=" << M;
      if (!fused) continue;
      cpu_->matmul(gu_c.get(), x_c.get(), w_c.get(), M, 2 * F, K);
      cpu_->silu_mul(out_c.get(), gu_c.get(), M, F);
      expect_close(read_act(*gpu_, out_g, size_t(M) * F), read_act(*cpu_, out_c, size_t(M) * F), tolerance(dt()),
                   weight_format_name(fmt()) + " gate_up_swiglu M=" + std::to_string(M) + " F=" + std::to_string(F) +
                       " K=" + std::to_string(K));
    }
  }
}

// The GPU quantized GEMV for row m alone agrees with the batched path's row m.
TEST_P(QuantMatmulOp, GemvAgreesWithBatchedPath) {
  const int N = 1536, K = 4096, M = 33;
  const HostQuant q = quantize(fmt(), random_floats(rng_, size_t(N) * K), N, K);
  DeviceBuffer w_g = DeviceBuffer::adopt(gpu_.get(), gpu_->upload_quantized_weight(q.view), q.data.size());
  const double tol = fmt() == WeightFormat::Fp8PerTensor ? 6e-2 : tolerance(dt());
  expect_last_row_alone_matches_batched(*gpu_, w_g.get(), rnd(size_t(M) * K), M, N, K, tol,
                                        "quantized gemv row vs batched row");
}

// Quantized matmuls inside a recorded step (CUDA graph) give the same answer as direct calls.
TEST_P(QuantMatmulOp, RecordedMatchesDirect) {
  const int N = 512, K = 1024;
  const HostQuant q = quantize(fmt(), random_floats(rng_, size_t(N) * K), N, K);
  DeviceBuffer w_g = DeviceBuffer::adopt(gpu_.get(), gpu_->upload_quantized_weight(q.view), q.data.size());
  for (int M : {1, 24}) {
    auto x_g = upload_act(*gpu_, rnd(size_t(M) * K));
    auto direct = poisoned_act(*gpu_, size_t(M) * N), rec = poisoned_act(*gpu_, size_t(M) * N);
    gpu_->matmul(direct.get(), x_g.get(), w_g.get(), M, N, K);
    for (int i = 0; i < 3; ++i)  // direct, capture, replay
      gpu_->run_recorded(uint64_t(1000 + M), [&] { gpu_->matmul(rec.get(), x_g.get(), w_g.get(), M, N, K); });
    gpu_->synchronize();
    expect_close(read_act(*gpu_, rec, size_t(M) * N), read_act(*gpu_, direct, size_t(M) * N), 1e-6,
                 "recorded quantized matmul M=" + std::to_string(M));
  }
}

// The decode qkv GEMV over int8 / fp8 / int4 (tile layout: a block pairs each tile of a head's
// first half with the tile D/2 rows below) weights with rope and the KV write fused in, against
// the CPU's matmul (dequantized weights) then rope_kv_write, on qkv and both caches (bf16 caches
// and an FP8 cache).
TEST_P(QuantMatmulOp, QkvRopeKvWriteMatchesMatmulThenRope) {
  if (dt() == DType::F32) GTEST_SKIP() << "16-bit activations (an FP8 cache needs them)";
  // Small heads, and Llama-3-8B's (32 q and 8 kv heads of 128: the engine's qkv at that shape).
  for (const std::array<int, 4>& heads : {std::array<int, 4>{8, 2, 64, 512}, std::array<int, 4>{32, 8, 128, 256}})
    check_qkv_rope_kv_write(heads[0], heads[1], heads[2], heads[3]);
}

void QuantMatmulOp::check_qkv_rope_kv_write(int Hq, int Hkv, int D, int K) {
  const int N = (Hq + 2 * Hkv) * D;
  SCOPED_TRACE("Hq=" + std::to_string(Hq) + " Hkv=" + std::to_string(Hkv) + " D=" + std::to_string(D));
  const HostQuant q = quantize(fmt(), random_floats(rng_, size_t(N) * K), N, K);
  DeviceBuffer w_g = DeviceBuffer::adopt(gpu_.get(), gpu_->upload_quantized_weight(q.view), q.data.size());
  DeviceBuffer w_c = DeviceBuffer::adopt(cpu_.get(), cpu_->upload_quantized_weight(q.view), q.data.size());
  PagedKV pk = make_paged_kv(rng_, Hq, Hkv, D, 200, 2, 16, /*shuffled=*/true);
  const std::vector<float> inv_freq = llama3_inv_freq(D);
  auto f_g = upload_f32(*gpu_, inv_freq), f_c = upload_f32(*cpu_, inv_freq);
  const size_t cache_n = pk.pool_elems();
  // inputs_ready_before_step as LlamaForward's steps promise it (the rotation and cache rows are
  // prepared before the GEMV's wait) and without it (after).
  for (bool fp8_cache : {false, true}) {
    pk.shape.inputs_ready_before_step = fp8_cache;
    for (int T : {1, 5}) {
      std::vector<int32_t> pos, slot;
      for (int t = 0; t < T; ++t) slot.push_back(t % 2), pos.push_back(10 * t + int32_t(rng_() % 10));  // distinct rows
      const auto x = rounded(dt(), random_floats(rng_, size_t(T) * K));
      auto x_g = upload_act(*gpu_, x), x_c = upload_act(*cpu_, x);
      auto qkv_g = poisoned_act(*gpu_, size_t(T) * N), qkv_c = poisoned_act(*cpu_, size_t(T) * N);
      // Caches start as zeros on both sides (in their element types); 1 byte an element for FP8.
      const size_t elem = fp8_cache ? 1 : dtype_size(dt());
      DeviceBuffer k_g(gpu_.get(), cache_n * elem), v_g(gpu_.get(), cache_n * elem);
      const std::vector<uint8_t> zeros(cache_n * elem, 0);
      gpu_->copy_to_device(k_g.get(), zeros.data(), zeros.size());
      gpu_->copy_to_device(v_g.get(), zeros.data(), zeros.size());
      auto k_c = upload_f32(*cpu_, std::vector<float>(cache_n)), v_c = upload_f32(*cpu_, std::vector<float>(cache_n));
      auto tables_g = upload_i32(*gpu_, pk.tables), tables_c = upload_i32(*cpu_, pk.tables);
      const KVCacheLayer kv_g{k_g.get(), v_g.get(), tables_g.as<int32_t>(), fp8_cache, 1.0f, 0.5f};
      const KVCacheLayer kv_c{k_c.get(), v_c.get(), tables_c.as<int32_t>(), fp8_cache, 1.0f, 0.5f};
      auto pos_g = upload_i32(*gpu_, pos), pos_c = upload_i32(*cpu_, pos);
      auto slot_g = upload_i32(*gpu_, slot), slot_c = upload_i32(*cpu_, slot);
      const bool fused = gpu_->qkv_rope_kv_write(qkv_g.get(), x_g.get(), w_g.get(), T, K, pos_g.as<int32_t>(),
                                                 slot_g.as<int32_t>(), f_g.as<float>(), kv_g, pk.shape);
      ASSERT_TRUE(fused);
      cpu_->matmul(qkv_c.get(), x_c.get(), w_c.get(), T, N, K);
      cpu_->rope_kv_write(qkv_c.get(), pos_c.as<int32_t>(), slot_c.as<int32_t>(), f_c.as<float>(), kv_c, pk.shape, T);
      const std::string what = std::string(fp8_cache ? "fp8 cache, inputs ready" : "16-bit cache") +
                               " T=" + std::to_string(T);
      expect_close(read_act(*gpu_, qkv_g, size_t(T) * N), read_act(*cpu_, qkv_c, size_t(T) * N), tolerance(dt()),
                   "fused quantized qkv " + what);
      const auto cache_values = [&](const DeviceBuffer& b, float scale) {
        if (!fp8_cache) return read_act(*gpu_, b, cache_n);
        std::vector<uint8_t> raw(cache_n);
        gpu_->copy_to_host(raw.data(), b.get(), cache_n);
        std::vector<float> v(cache_n);
        for (size_t i = 0; i < cache_n; ++i) v[i] = f8e4m3_to_float(raw[i]) * scale;
        return v;
      };
      // An FP8 cache: the same e4m3 codes but where the two sums round to either side of a code.
      const double cache_tol = fp8_cache ? 2e-2 : tolerance(dt());
      expect_close(cache_values(k_g, 1.0f), read_act(*cpu_, k_c, cache_n), cache_tol, "fused k cache " + what);
      expect_close(cache_values(v_g, 0.5f), read_act(*cpu_, v_c, cache_n), cache_tol, "fused v cache " + what);
    }
  }
}

// Batched FP8 matmuls over token rows of very different magnitudes (1e3 and 1e-3 alternating):
// each row keeps e4m3's ~3% relative error, as per-token activation scales (or the dequantizing
// path) give; one scale for the whole activation would flush the small rows to zero. On Hopper
// the per-token FP8 GEMM must run (no warning that it is unavailable).
TEST_P(QuantMatmulOp, Fp8BatchedRowsKeepTheirOwnScale) {
  if (fmt() != WeightFormat::Fp8PerTensor || dt() == DType::F32) GTEST_SKIP() << "FP8 weights, 16-bit activations";
  int major = 0, minor = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0);
  // Ada (8.9) has FP8 tensor cores, but cuBLASLt documents its outer-vector scales for Hopper
  // (sm_90): there the backend falls back to one scale per tensor, which this test is built to catch.
  if (major * 10 + minor == 89) GTEST_SKIP() << "per-token FP8 scales need compute capability 9.0 (cuBLASLt)";
  const int M = 32, N = 256, K = 1024;
  const HostQuant q = quantize(fmt(), random_floats(rng_, size_t(N) * K), N, K);
  DeviceBuffer w_g = DeviceBuffer::adopt(gpu_.get(), gpu_->upload_quantized_weight(q.view), q.data.size());
  DeviceBuffer w_c = DeviceBuffer::adopt(cpu_.get(), cpu_->upload_quantized_weight(q.view), q.data.size());
  std::vector<float> x = random_floats(rng_, size_t(M) * K);
  for (int m = 0; m < M; ++m)
    for (int k = 0; k < K; ++k) x[size_t(m) * K + k] *= m % 2 ? 1e-3f : 1e3f;
  x = rounded(dt(), x);
  auto x_g = upload_act(*gpu_, x), x_c = upload_act(*cpu_, x);
  auto out_g = poisoned_act(*gpu_, size_t(M) * N), out_c = poisoned_act(*cpu_, size_t(M) * N);
  ::testing::internal::CaptureStderr();
  gpu_->matmul(out_g.get(), x_g.get(), w_g.get(), M, N, K);
  gpu_->synchronize();
  const std::string warnings = ::testing::internal::GetCapturedStderr();
  cpu_->matmul(out_c.get(), x_c.get(), w_c.get(), M, N, K);
  const auto got = read_act(*gpu_, out_g, size_t(M) * N), want = read_act(*cpu_, out_c, size_t(M) * N);
  for (int m = 0; m < M; ++m) {
    const auto row = [&](const std::vector<float>& v) {
      return std::vector<float>(v.begin() + ptrdiff_t(m) * N, v.begin() + ptrdiff_t(m + 1) * N);
    };
    expect_close(row(got), row(want), 6e-2, "fp8 batched matmul row " + std::to_string(m));
  }
  if (major * 10 + minor >= 90) {
    EXPECT_EQ(warnings.find("FP8 GEMM"), std::string::npos) << warnings;
  }
}

// The FP8 GEMM at the longest Llama-3-8B rows (the down projection's K = 14336) against the exact
// product of the same e4m3 operands: the activations quantized per token on the host as the GPU
// does (scale = max|x[m, :]| / 448), the sums in double. What is left is the GPU's accumulation
// and the output's rounding to the 16-bit dtype. Run with cuBLASLt's fast accumulation (the
// default) and without (LAMINA_FP8_FAST_ACCUM=0); both figures printed. H100: fast 3.1e-3 (bf16)
// and 2.7e-3 (fp16) at K = 14336, promoted 1.7e-3 and 2.3e-4; e4m3's own rounding of the
// activations is ~10x larger than either.
TEST_P(QuantMatmulOp, Fp8GemmLongRowsMatchTheExactProduct) {
  if (fmt() != WeightFormat::Fp8PerTensor || dt() == DType::F32) GTEST_SKIP() << "FP8 weights, 16-bit activations";
  const int M = 64, N = 512;
  for (const int K : {4096, 14336}) {
    const HostQuant q = quantize(fmt(), random_floats(rng_, size_t(N) * K), N, K);
    const std::vector<float> x = rnd(size_t(M) * K);
    std::vector<float> wq(q.data.size());
    for (size_t i = 0; i < wq.size(); ++i) wq[i] = f8e4m3_to_float(q.data[i]);
    std::vector<float> want(size_t(M) * N);
    std::vector<float> xq(K);
    for (int m = 0; m < M; ++m) {
      float amax = 0.0f;
      for (int k = 0; k < K; ++k) amax = std::max(amax, std::fabs(x[size_t(m) * K + k]));
      amax = std::max(amax, 1e-12f);
      const float inv = 448.0f / amax, x_scale = amax / 448.0f;
      for (int k = 0; k < K; ++k) xq[k] = f8e4m3_to_float(float_to_f8e4m3(x[size_t(m) * K + k] * inv));
      for (int n = 0; n < N; ++n) {
        double sum = 0;
        for (int k = 0; k < K; ++k) sum += double(xq[k]) * wq[size_t(n) * K + k];
        want[size_t(m) * N + n] = float(sum * x_scale * q.scales[0]);
      }
    }
    for (const bool fast : {true, false}) {
      if (!fast) setenv("LAMINA_FP8_FAST_ACCUM", "0", 1);
      const auto backend = make_cuda_backend(0, dt());  // reads the switch as its GEMMs are made
      unsetenv("LAMINA_FP8_FAST_ACCUM");
      DeviceBuffer w = DeviceBuffer::adopt(backend.get(), backend->upload_quantized_weight(q.view), q.data.size());
      auto x_g = upload_act(*backend, x);
      auto out = poisoned_act(*backend, size_t(M) * N);
      backend->matmul(out.get(), x_g.get(), w.get(), M, N, K);
      const auto got = read_act(*backend, out, size_t(M) * N);
      const std::string what = std::string("fp8 gemm, ") + (fast ? "fast" : "promoted") + " accumulation, K=" +
                               std::to_string(K) + " " + dtype_user_name(dt());
      std::printf("[ metric   ] %s: rel_l2 %.2e against the exact product\n", what.c_str(), rel_l2(got, want));
      expect_close(got, want, 5e-3, what);
    }
  }
}

// Over FP8 weights at batched M, silu_mul_matmul quantizes the SwiGLU product for the FP8 GEMM as
// it forms it (one pass over gate_up, no [M, F] round trip): the same bits as silu_mul and then
// matmul on the same backend, where it takes the fused kernel (F % 16 == 0, rows <= 16384) and
// where it falls back to the two ops (F = 520, 16400); and within FP8's tolerance of the CPU.
TEST_P(QuantMatmulOp, Fp8SiluMulMatmulIsSiluMulThenMatmul) {
  if (fmt() != WeightFormat::Fp8PerTensor || dt() == DType::F32) GTEST_SKIP() << "FP8 weights, 16-bit activations";
  const std::array<std::array<int, 3>, 5> cases = {{{33, 64, 1024}, {128, 40, 14336}, {9, 8, 16384},
                                                    {17, 24, 520}, {12, 16, 16400}}};  // M, N, F
  for (const auto& [M, N, F] : cases) {
    const HostQuant q = quantize(fmt(), random_floats(rng_, size_t(N) * F), N, F);
    DeviceBuffer w_g = DeviceBuffer::adopt(gpu_.get(), gpu_->upload_quantized_weight(q.view), q.data.size());
    DeviceBuffer w_c = DeviceBuffer::adopt(cpu_.get(), cpu_->upload_quantized_weight(q.view), q.data.size());
    const auto gate_up = rounded(dt(), random_floats(rng_, size_t(M) * 2 * F, -6.0f, 6.0f));  // silu's curve
    auto gu_g = upload_act(*gpu_, gate_up), gu_c = upload_act(*cpu_, gate_up);
    auto fused = poisoned_act(*gpu_, size_t(M) * N), mlp = poisoned_act(*gpu_, size_t(M) * F);
    gpu_->silu_mul_matmul(fused.get(), mlp.get(), gu_g.get(), w_g.get(), M, N, F);
    auto two = poisoned_act(*gpu_, size_t(M) * N), mlp2 = poisoned_act(*gpu_, size_t(M) * F);
    gpu_->silu_mul(mlp2.get(), gu_g.get(), M, F);
    gpu_->matmul(two.get(), mlp2.get(), w_g.get(), M, N, F);
    const std::string what = "silu_mul_matmul M=" + std::to_string(M) + " N=" + std::to_string(N) +
                             " F=" + std::to_string(F);
    const auto got = read_act(*gpu_, fused, size_t(M) * N), want = read_act(*gpu_, two, size_t(M) * N);
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_TRUE(std::isfinite(got[i])) << what << " output " << i << " not written";
      ASSERT_EQ(got[i], want[i]) << what << " output " << i;
    }
    auto out_c = poisoned_act(*cpu_, size_t(M) * N), mlp_c = poisoned_act(*cpu_, size_t(M) * F);
    cpu_->silu_mul_matmul(out_c.get(), mlp_c.get(), gu_c.get(), w_c.get(), M, N, F);
    expect_close(got, read_act(*cpu_, out_c, size_t(M) * N), 6e-2, what + " against the CPU");
  }
}

// add_rms_norm_before_matmul then matmul over an FP8 weight: where the backend quantizes the norm's
// output in the norm's pass (batched M, rows of at most 8192), the same bits as add_rms_norm then
// matmul, for the residual and the product, and the norm's output is left unwritten (only that
// matmul reads it; once a per-token FP8 GEMM has run); the same bits for all three where it cannot
// (M <= 8: the GEMV; H = 9216: rows too long for one block's registers). A matmul by another
// weight of an unwritten output fails with an error instead of reading it.
TEST_P(QuantMatmulOp, Fp8NormBeforeMatmulIsNormThenMatmul) {
  if (fmt() != WeightFormat::Fp8PerTensor || dt() == DType::F32) GTEST_SKIP() << "FP8 weights, 16-bit activations";
  const std::array<std::array<int, 3>, 4> cases = {{{33, 64, 4096}, {300, 40, 1024}, {5, 24, 4096}, {17, 16, 9216}}};
  for (const auto& [M, N, H] : cases) {
    const HostQuant q = quantize(fmt(), random_floats(rng_, size_t(N) * H), N, H);
    const HostQuant q2 = quantize(fmt(), random_floats(rng_, size_t(N) * H), N, H);
    DeviceBuffer w = DeviceBuffer::adopt(gpu_.get(), gpu_->upload_quantized_weight(q.view), q.data.size());
    DeviceBuffer w2 = DeviceBuffer::adopt(gpu_.get(), gpu_->upload_quantized_weight(q2.view), q2.data.size());
    const auto residual = rnd(size_t(M) * H), x = rnd(size_t(M) * H), norm_w = rnd(H);
    auto nw = upload_act(*gpu_, norm_w);
    const std::string what = "M=" + std::to_string(M) + " N=" + std::to_string(N) + " H=" + std::to_string(H);
    struct Run {
      std::vector<float> residual, normed, product;
    };
    // fused: add_rms_norm_before_matmul(next = w); then matmul by `by`.
    const auto run = [&](bool fused, const DeviceBuffer& by) {
      auto r = upload_act(*gpu_, residual), xb = upload_act(*gpu_, x);
      auto normed = poisoned_act(*gpu_, size_t(M) * H), y = poisoned_act(*gpu_, size_t(M) * N);
      if (fused)
        gpu_->add_rms_norm_before_matmul(r.get(), xb.get(), normed.get(), nw.get(), M, H, 1e-5f, w.get());
      else
        gpu_->add_rms_norm(r.get(), xb.get(), normed.get(), nw.get(), M, H, 1e-5f);
      gpu_->matmul(y.get(), normed.get(), by.get(), M, N, H);
      return Run{read_act(*gpu_, r, size_t(M) * H), read_act(*gpu_, normed, size_t(M) * H),
                 read_act(*gpu_, y, size_t(M) * N)};
    };
    const auto expect_same = [&](const Run& a, const Run& b, const std::string& how, bool normed_too) {
      for (const auto& [got, want, name] : {std::tuple{&a.residual, &b.residual, "residual"},
                                            std::tuple{&a.normed, &b.normed, "normed"},
                                            std::tuple{&a.product, &b.product, "product"}}) {
        if (got == &a.normed && !normed_too) continue;
        for (size_t i = 0; i < got->size(); ++i) {
          ASSERT_TRUE(std::isfinite((*got)[i])) << how << " " << what << " " << name << " " << i << " not written";
          ASSERT_EQ((*got)[i], (*want)[i]) << how << " " << what << " " << name << " " << i;
        }
      }
    };
    run(false, w);  // a per-token FP8 GEMM has run on this backend
    // (Where the A/B switches ask for the two passes or for the output, it is written.)
    const char* two_passes = std::getenv("LAMINA_FUSED_NORM_QUANT");
    const char* keeps = std::getenv("LAMINA_NORM_QUANT_KEEPS_OUTPUT");
    const bool prepared = M > cuda::kGemvMaxM && H <= 8192 && !(two_passes && std::string(two_passes) == "0") &&
                          !(keeps && std::string(keeps) == "1");
    const Run fused = run(true, w);
    expect_same(fused, run(false, w), "prepared for its matmul", !prepared);
    if (prepared) {
      ASSERT_TRUE(std::all_of(fused.normed.begin(), fused.normed.end(), [](float v) { return std::isnan(v); }))
          << what << ": the norm's output was written";
      EXPECT_THROW(run(true, w2), Error) << what << ": a matmul by another weight read the unwritten output";
    } else {
      expect_same(run(true, w2), run(false, w2), "not prepared, matmul by another weight", true);
    }
  }
}

// The GEMM adding its product to the residual (matmul_accumulate, silu_mul_matmul_accumulate) over
// quantized weights at batched M, and the norm after it quantizing the next FP8 GEMM's input
// without an add (rms_norm_before_matmul): against the two-step path on the same backend (matmul,
// then add; rms_norm, then matmul), within one rounding of the residual (the GEMM rounds the sum
// once); the norm's product the same bits; and against the CPU.
TEST_P(QuantMatmulOp, AccumulateThenNormMatchesTheTwoSteps) {
  const char* off = std::getenv("LAMINA_RESIDUAL_IN_GEMM");
  if (off && std::string(off) == "0") GTEST_SKIP() << "LAMINA_RESIDUAL_IN_GEMM=0";
  if (dt() == DType::F32 && fmt() == WeightFormat::Fp8PerTensor) GTEST_SKIP() << "FP8 GEMMs take 16-bit activations";
  const int M = 40, N = 256, K = 1024, F = 1024, N2 = 96;
  const HostQuant q = quantize(fmt(), random_floats(rng_, size_t(N) * K), N, K);
  const HostQuant qd = quantize(fmt(), random_floats(rng_, size_t(N) * F), N, F);
  const HostQuant qn = quantize(fmt(), random_floats(rng_, size_t(N2) * N), N2, N);
  auto up = [&](Backend& b, const HostQuant& h) {
    return DeviceBuffer::adopt(&b, b.upload_quantized_weight(h.view), h.data.size());
  };
  DeviceBuffer w_g = up(*gpu_, q), wd_g = up(*gpu_, qd), wn_g = up(*gpu_, qn);
  DeviceBuffer w_c = up(*cpu_, q), wd_c = up(*cpu_, qd);
  const auto x = rnd(size_t(M) * K), norm_w = rnd(N);
  const auto residual = rounded(dt(), random_floats(rng_, size_t(M) * N, -4.0f, 4.0f));
  const auto gate_up = rounded(dt(), random_floats(rng_, size_t(M) * 2 * F, -6.0f, 6.0f));
  auto nw = upload_act(*gpu_, norm_w);
  // A per-token FP8 GEMM first: FP8's accumulating form waits for one (per_token_fp8_ready).
  {
    auto warm = poisoned_act(*gpu_, size_t(M) * N);
    gpu_->matmul(warm.get(), upload_act(*gpu_, x).get(), w_g.get(), M, N, K);
  }
  // matmul_accumulate, then the norm feeding the next matmul (by wn).
  auto r1 = upload_act(*gpu_, residual), x_g = upload_act(*gpu_, x);
  ASSERT_TRUE(gpu_->matmul_accumulate(r1.get(), x_g.get(), w_g.get(), M, N, K));
  auto normed1 = poisoned_act(*gpu_, size_t(M) * N), y1 = poisoned_act(*gpu_, size_t(M) * N2);
  gpu_->rms_norm_before_matmul(normed1.get(), r1.get(), nw.get(), M, N, 1e-5f, wn_g.get());
  gpu_->matmul(y1.get(), normed1.get(), wn_g.get(), M, N2, N);
  // Two steps: matmul, add, then rms_norm and matmul of the same residual.
  auto r2 = upload_act(*gpu_, residual), prod = poisoned_act(*gpu_, size_t(M) * N);
  gpu_->matmul(prod.get(), x_g.get(), w_g.get(), M, N, K);
  gpu_->add(r2.get(), prod.get(), size_t(M) * N);
  const auto got_r = read_act(*gpu_, r1, size_t(M) * N), two_r = read_act(*gpu_, r2, size_t(M) * N);
  expect_close(got_r, two_r, dt() == DType::F32 ? 1e-5 : 1e-2, "matmul_accumulate against matmul + add");
  auto r1_again = upload_act(*gpu_, got_r);  // the norm of the accumulated residual, the two-step way
  auto normed2 = poisoned_act(*gpu_, size_t(M) * N), y2 = poisoned_act(*gpu_, size_t(M) * N2);
  gpu_->rms_norm(normed2.get(), r1_again.get(), nw.get(), M, N, 1e-5f);
  gpu_->matmul(y2.get(), normed2.get(), wn_g.get(), M, N2, N);
  const auto got_y = read_act(*gpu_, y1, size_t(M) * N2), want_y = read_act(*gpu_, y2, size_t(M) * N2);
  for (size_t i = 0; i < got_y.size(); ++i) ASSERT_EQ(got_y[i], want_y[i]) << "rms_norm_before_matmul product " << i;
  // Against the CPU.
  auto r_c = upload_act(*cpu_, residual), x_c = upload_act(*cpu_, x);
  ASSERT_TRUE(cpu_->matmul_accumulate(r_c.get(), x_c.get(), w_c.get(), M, N, K));
  expect_close(got_r, read_act(*cpu_, r_c, size_t(M) * N), 6e-2, "matmul_accumulate against the CPU");
  // The SwiGLU and the down projection adding to the residual.
  auto gu_g = upload_act(*gpu_, gate_up), gu_c = upload_act(*cpu_, gate_up);
  auto r3 = upload_act(*gpu_, residual), mlp = poisoned_act(*gpu_, size_t(M) * F);
  ASSERT_TRUE(gpu_->silu_mul_matmul_accumulate(r3.get(), mlp.get(), gu_g.get(), wd_g.get(), M, N, F));
  auto r4 = upload_act(*gpu_, residual), mlp2 = poisoned_act(*gpu_, size_t(M) * F);
  auto down = poisoned_act(*gpu_, size_t(M) * N);
  gpu_->silu_mul_matmul(down.get(), mlp2.get(), gu_g.get(), wd_g.get(), M, N, F);
  gpu_->add(r4.get(), down.get(), size_t(M) * N);
  expect_close(read_act(*gpu_, r3, size_t(M) * N), read_act(*gpu_, r4, size_t(M) * N),
               dt() == DType::F32 ? 1e-5 : 1e-2, "silu_mul_matmul_accumulate against silu_mul_matmul + add");
  auto r_c2 = upload_act(*cpu_, residual), mlp_c = poisoned_act(*cpu_, size_t(M) * F);
  ASSERT_TRUE(cpu_->silu_mul_matmul_accumulate(r_c2.get(), mlp_c.get(), gu_c.get(), wd_c.get(), M, N, F));
  expect_close(read_act(*gpu_, r3, size_t(M) * N), read_act(*cpu_, r_c2, size_t(M) * N), 6e-2,
               "silu_mul_matmul_accumulate against the CPU");
}

// The per-token FP8 quantization of 16-bit activations keeps rows of up to 16384 elements in
// registers (one read, 16-byte loads) where x is 16-byte aligned; the same rows one element off
// alignment take the scalar kernel. Both must give the same scales and the same bytes. (With
// LAMINA_FP8_QUANT_IN_REGISTERS=0 both take the scalar kernel.)
TEST_P(QuantMatmulOp, Fp8PerTokenQuantizationKernelsAgree) {
  if (fmt() != WeightFormat::Fp8PerTensor || dt() == DType::F32) GTEST_SKIP() << "16-bit activations";
  cudaStream_t stream = cuda_stream_of(*gpu_);
  const size_t es = dtype_size(dt());
  for (const int K : {4096, 14336, 16384, 64}) {
    const int M = 37;
    std::vector<float> x = random_floats(rng_, size_t(M) * K);
    for (int m = 0; m < M; ++m)  // rows of very different ranges, each with its own scale
      for (int k = 0; k < K; ++k) x[size_t(m) * K + k] *= std::pow(10.0f, float(m % 7) - 3.0f);
    x = rounded(dt(), x);
    auto aligned = upload_act(*gpu_, x);
    auto shifted = poisoned_act(*gpu_, size_t(M) * K + 1);  // x one element past a 16-byte boundary
    ASSERT_EQ(cudaMemcpy(static_cast<char*>(shifted.get()) + es, aligned.get(), size_t(M) * K * es,
                         cudaMemcpyDeviceToDevice), cudaSuccess);
    void *q1 = nullptr, *q2 = nullptr;
    float *s1 = nullptr, *s2 = nullptr;
    ASSERT_EQ(cudaMalloc(&q1, size_t(M) * K), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&q2, size_t(M) * K), cudaSuccess);
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&s1), M * sizeof(float)), cudaSuccess);
    ASSERT_EQ(cudaMalloc(reinterpret_cast<void**>(&s2), M * sizeof(float)), cudaSuccess);
    cuda::launch_quantize_fp8_per_token(dt(), aligned.get(), M, K, q1, s1, stream);
    cuda::launch_quantize_fp8_per_token(dt(), static_cast<char*>(shifted.get()) + es, M, K, q2, s2, stream);
    ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
    std::vector<uint8_t> b1(size_t(M) * K), b2(size_t(M) * K);
    std::vector<float> sc1(M), sc2(M);
    ASSERT_EQ(cudaMemcpy(b1.data(), q1, b1.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(b2.data(), q2, b2.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(sc1.data(), s1, M * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    ASSERT_EQ(cudaMemcpy(sc2.data(), s2, M * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    cudaFree(q1);
    cudaFree(q2);
    cudaFree(s1);
    cudaFree(s2);
    for (int m = 0; m < M; ++m) {
      ASSERT_GT(sc1[m], 0.0f) << "K=" << K << " row " << m;
      ASSERT_EQ(sc1[m], sc2[m]) << "K=" << K << " row " << m << " scale";
    }
    for (size_t i = 0; i < b1.size(); ++i) ASSERT_EQ(b1[i], b2[i]) << "K=" << K << " byte " << i;
  }
}

std::vector<Param> all_params() {
  std::vector<Param> ps;
  for (WeightFormat f : {WeightFormat::Int8PerChannel, WeightFormat::Fp8PerTensor, WeightFormat::Int4Group})
    for (DType dt : {DType::F32, DType::F16, DType::BF16}) ps.push_back({dt, f});
  return ps;
}

INSTANTIATE_TEST_SUITE_P(Formats, QuantMatmulOp, ::testing::ValuesIn(all_params()), param_name);

}  // namespace
}  // namespace lamina::optest
