// Kernel micro-benchmarks of the CUDA backend (bf16), printed as a table and written as JSON
// ($OUT/bench_kernels.json when OUT is set, or --json PATH):
//   copy       device-to-device memcpy bandwidth (bytes read + written): the memory ceiling
//   gemm       cuBLASLt bf16 TFLOP/s at 8192^3 and at Llama-3-8B prefill shapes (M = 2048)
//   gemv       the backend's M <= 8 matmul on the same weights, GB/s and % of the copy bandwidth
//   gemv-q     the same over quantized weights (int8 W8A16, fp8 FP8, int4 W4A16_AWQ) at M = 1 and 8,
//              bytes = the quantized weight + its scales + x + out
//   gemv-fp8-shape  the fp8 GEMV at M = 1 for each block shape (rows, threads)
//   gemm-q     the M = 2048 matmuls over quantized weights (FP8 GEMM; int8/int4 dequantize + GEMM)
//   attention  decode: GB/s over the KV cache (% of copy) at batch 1 (seq 512, 2048, 4096), 4 and 8
//              (512), 16 (512, 2048), 256 and 1024 (256), shuffled block tables;
//              LAMINA_ATTN_DECODE=latency|pipelined times one kernel at every batch. Prefill TFLOP/s
//              at T=512 and 2048 through the op; prompts: 16 and 64 prompts of 128 tokens in one
//              step (a serving prefill step), the op and each of its two kernels alone.
//   overlap    the decode attention of 512 sequences beside a 512-token GEMM on a second stream,
//              alone and together, with the GEMM's plan aimed at fewer SMs (bench_overlap; only
//              with --only overlap)
//   split      the same with the FP8 cache's bulk-copy attention held to a few SMs beside an FP8 GEMM
//              aimed at the others (bench_split_step; only with --only split)
//   fp8-act-quant  the FP8 GEMM's per-token activation quantization (and SwiGLU + quantization) at
//              serving step sizes, against the copy bandwidth
//   norm-quant the add + RMSNorm with that quantization in its pass, with and without its bf16 output
// --only WORD runs only the cases whose name holds WORD (e.g. "attention"), plus copy; "W1|W2" any of them.
// Inputs are random (never zeros) and rotate over copies larger than L2 so DRAM is measured.
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <array>
#include <random>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "backends/cuda/attention_common.cuh"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_sampling.h"
#include "backends/cuda/gemv_tuner.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/matmul.h"
#include "backends/cuda/quant_kernels.h"
#include "bench_util.h"
#include "common/quant.h"

using namespace lamina;
using namespace lamina::bench;
using Json = nlohmann::json;

namespace {

struct Gemm {
  const char* name;
  int M, N, K;
};

// Llama-3-8B projections (N x K) at a 2048-token prefill, and the 8192^3 reference.
const Gemm kGemms[] = {
    {"square", 8192, 8192, 8192},    {"qkv", 2048, 6144, 4096},  {"o", 2048, 4096, 4096},
    {"gate_up", 2048, 28672, 4096},  {"down", 2048, 4096, 14336}, {"lm_head", 2048, 128256, 4096},
};
// The projections at the serving benchmark's step sizes (1024 decode tokens; 8192-token prefill
// steps), for the batched GEMMs and their algorithm tuning (`--only serve`).
const Gemm kServingGemms[] = {
    {"serve qkv", 1024, 6144, 4096},     {"serve o", 1024, 4096, 4096},     {"serve gate_up", 1024, 28672, 4096},
    {"serve down", 1024, 4096, 14336},   {"serve qkv", 8192, 6144, 4096},   {"serve o", 8192, 4096, 4096},
    {"serve gate_up", 8192, 28672, 4096}, {"serve down", 8192, 4096, 14336},
};
// One GPU's projections of Llama-3-70B at tp 4 (column splits of qkv, gate_up and lm_head, row
// splits of o and down), for the decode GEMVs (`--only 70b`).
const Gemm kGemms70bTp4[] = {
    {"70b-tp4 qkv", 1, 2560, 8192},     {"70b-tp4 o", 1, 8192, 2048},       {"70b-tp4 gate_up", 1, 14336, 8192},
    {"70b-tp4 down", 1, 8192, 7168},    {"70b-tp4 lm_head", 1, 32064, 8192},
};

struct Ctx {
  Backend* be;
  cudaStream_t stream;
  size_t min_total;  // rotation sets exceed this many bytes (> L2)
  double copy_gbs = 0;
  Json out = Json::object();
  std::string only;  // --only WORD[|WORD...]: run the cases whose name holds one of the words (and copy)
};

// Marks timings that could not be taken from graph replays.
const char* tag(const Timing& t) { return t.graph ? "" : "  [direct launches]"; }

void* dmalloc(size_t bytes) {
  void* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, bytes));
  return p;
}

void bench_copy(Ctx& c) {
  const size_t bytes = size_t(1) << 30;
  Rotation src(bytes, 0, 1, c.stream);
  void* dst = dmalloc(bytes);
  const Timing tm = time_ms(c.stream, [&](int) {
    CUDA_CHECK(cudaMemcpyAsync(dst, src.at(0), bytes, cudaMemcpyDeviceToDevice, c.stream));
  }, 15, 2.0, /*try_graph=*/false);  // a captured memcpy node measured ~20% slower on an H100
  cudaFree(dst);
  const double ms = tm.ms;
  c.copy_gbs = 2.0 * bytes / (ms * 1e-3) / 1e9;
  std::printf("%-28s %10.3f ms %10.1f GB/s (read + write of 1 GiB)%s\n", "copy d2d", ms, c.copy_gbs, tag(tm));
  c.out["copy"] = {{"bytes", bytes}, {"ms", ms}, {"gb_per_s", c.copy_gbs}, {"graph", tm.graph}};
}

void bench_gemm(Ctx& c, const Gemm& g) {
  Rotation w(size_t(g.N) * g.K * 2, c.min_total, 10, c.stream, 0.05f);
  Rotation x(size_t(g.M) * g.K * 2, c.min_total, 20, c.stream);
  void* out = dmalloc(size_t(g.M) * g.N * 2);
  const Timing tm = time_ms(c.stream, [&](int i) { c.be->matmul(out, x.at(i), w.at(i), g.M, g.N, g.K); }, 9);
  cudaFree(out);
  const double ms = tm.ms;
  const double tflops = 2.0 * g.M * g.N * g.K / (ms * 1e-3) / 1e12;
  std::printf("gemm %-13s M=%-5d N=%-6d K=%-5d %8.3f ms %8.1f TFLOP/s%s\n", g.name, g.M, g.N, g.K, ms, tflops,
              tag(tm));
  c.out["gemm"].push_back({{"name", g.name}, {"M", g.M}, {"N", g.N}, {"K", g.K}, {"ms", ms}, {"tflops", tflops}, {"graph", tm.graph}});
}

void bench_gemv(Ctx& c, const Gemm& g, int M) {
  const size_t wbytes = size_t(g.N) * g.K * 2;
  Rotation w(wbytes, c.min_total, 30, c.stream, 0.05f);
  Rotation x(size_t(M) * g.K * 2, 0, 40, c.stream);
  void* out = dmalloc(size_t(M) * g.N * 2);
  const Timing tm = time_ms(c.stream, [&](int i) { c.be->matmul(out, x.at(0), w.at(i), M, g.N, g.K); });
  cudaFree(out);
  const double ms = tm.ms;
  const double bytes = double(wbytes) + 2.0 * M * (g.K + g.N);
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  std::printf("gemv %-9s M=%-2d N=%-6d K=%-5d %8.4f ms %8.1f GB/s %5.1f%% of copy%s\n", g.name, M, g.N, g.K, ms,
              gbs, 100.0 * gbs / c.copy_gbs, tag(tm));
  c.out["gemv"].push_back({{"name", g.name}, {"M", M}, {"N", g.N}, {"K", g.K}, {"ms", ms}, {"gb_per_s", gbs},
                           {"fraction_of_copy", gbs / c.copy_gbs}, {"graph", tm.graph}});
}

// The GEMV's M = 1 launch shapes (rows a block R, chunks a row per load group U: the candidates its
// tuning times, gemv_tuner.h) on the decode projections, bf16, and those of the gate_up GEMV with its
// SwiGLU, so one run shows how far apart they are on this GPU.
void bench_gemv_variants(Ctx& c, const Gemm& g) {
  const size_t wbytes = size_t(g.N) * g.K * 2;
  Rotation w(wbytes, c.min_total, 30, c.stream, 0.05f);
  Rotation x(size_t(2) * g.K * 2, 0, 40, c.stream);
  void* out = dmalloc(size_t(g.N) * 2);
  const auto shapes = lamina::cuda::gemv_one_token_shapes(false);
  for (int s = 0; s < static_cast<int>(shapes.size()); ++s) {
    const Timing tm = time_ms(c.stream, [&](int i) {
      lamina::cuda::launch_gemv_one_token_shape(DType::BF16, s, false, out, x.at(0), w.at(i), g.N, g.K, c.stream);
    });
    const double gbs = (double(wbytes) + 2.0 * (g.K + g.N)) / (tm.ms * 1e-3) / 1e9;
    std::printf("gemv-shape %-8s %s N=%-6d K=%-5d %8.4f ms %8.1f GB/s %5.1f%% of copy%s\n", g.name, shapes[s].c_str(),
                g.N, g.K, tm.ms, gbs, 100.0 * gbs / c.copy_gbs, tag(tm));
    c.out["gemv_shapes"].push_back({{"name", g.name}, {"shape", shapes[s]}, {"ms", tm.ms}, {"gb_per_s", gbs},
                                    {"fraction_of_copy", gbs / c.copy_gbs}});
  }
  const std::string name = g.name;
  if (name.size() >= 7 && name.compare(name.size() - 7, 7, "gate_up") == 0) {  // w = [gate; up], N/2 outputs silu(gate) * up
    const int F = g.N / 2;
    const double bytes = double(wbytes) + 2.0 * (g.K + F);
    const auto gu_shapes = lamina::cuda::gemv_one_token_shapes(true);
    for (int s = 0; s < static_cast<int>(gu_shapes.size()); ++s) {
      const Timing tv = time_ms(c.stream, [&](int i) {
        lamina::cuda::launch_gemv_one_token_shape(DType::BF16, s, true, out, x.at(0), w.at(i), F, g.K, c.stream);
      });
      const double gv = bytes / (tv.ms * 1e-3) / 1e9;
      std::printf("gemv-shape gate_up+swiglu %s F=%-6d K=%-5d %8.4f ms %8.1f GB/s %5.1f%% of copy%s\n",
                  gu_shapes[s].c_str(), F, g.K, tv.ms, gv, 100.0 * gv / c.copy_gbs, tag(tv));
    }
    const Timing tm = time_ms(c.stream, [&](int i) { c.be->gate_up_swiglu(out, x.at(0), w.at(i), 1, F, g.K); });
    const double gbs = bytes / (tm.ms * 1e-3) / 1e9;
    std::printf("gemv-swiglu %s F=%-6d K=%-5d %8.4f ms %8.1f GB/s %5.1f%% of copy%s\n", g.name, F, g.K, tm.ms, gbs,
                100.0 * gbs / c.copy_gbs, tag(tm));
    c.out["gemv_gate_up_swiglu"].push_back(
        {{"name", g.name}, {"ms", tm.ms}, {"gb_per_s", gbs}, {"fraction_of_copy", gbs / c.copy_gbs}});
  }
  cudaFree(out);
}

// Quantized weights: `copies` device copies of one random [N, K] weight (enough to exceed L2),
// uploaded through upload_quantized_weight so the backend dispatches on their format.
struct QuantCopies {
  Backend* be;
  std::vector<void*> ptrs;
  size_t bytes = 0;  // data + scales of one copy
  QuantCopies(Backend* b, WeightFormat f, int N, int K, size_t min_total) : be(b) {
    QuantizedWeight q;
    q.format = f;
    q.rows = N;
    q.cols = K;
    q.group_size = f == WeightFormat::Int4Group ? kInt4GroupSize : 0;
    std::vector<uint8_t> data(size_t(N) * K / (f == WeightFormat::Int4Group ? 2 : 1));
    uint32_t h = 12345u;
    for (auto& d : data) {
      h = h * 1664525u + 1013904223u;
      d = uint8_t(h >> 24);
      if (f == WeightFormat::Fp8PerTensor && (d & 0x7f) == 0x7f) d = 0x38;  // no NaN codes
    }
    q.data = data.data();
    std::vector<float> scales(f == WeightFormat::Fp8PerTensor ? 1 : f == WeightFormat::Int8PerChannel ? size_t(N)
                                                                     : size_t(N) * (K / kInt4GroupSize),
                              1e-3f);
    q.scales = scales.data();
    bytes = data.size() + scales.size() * sizeof(float);
    const size_t copies = std::max<size_t>(1, std::min<size_t>(16, (min_total + data.size() - 1) / data.size()));
    for (size_t i = 0; i < copies; ++i) ptrs.push_back(be->upload_quantized_weight(q));
  }
  ~QuantCopies() {
    for (void* p : ptrs) be->free(p);
  }
  void* at(int i) const { return ptrs[size_t(i) % ptrs.size()]; }
};

const char* format_tag(WeightFormat f) {
  return f == WeightFormat::Int8PerChannel ? "int8" : f == WeightFormat::Fp8PerTensor ? "fp8" : "int4";
}

void bench_gemv_quant(Ctx& c, const Gemm& g, WeightFormat f, int M, const char* label = nullptr) {
  QuantCopies w(c.be, f, g.N, g.K, c.min_total);
  Rotation x(size_t(M) * g.K * 2, 0, 45, c.stream);
  void* out = dmalloc(size_t(M) * g.N * 2);
  const Timing tm = time_ms(c.stream, [&](int i) { c.be->matmul(out, x.at(0), w.at(i), M, g.N, g.K); });
  if (std::string(g.name) == "gate_up" && !label) {  // the same weights as gate_up with its SwiGLU
    const Timing ts = time_ms(c.stream, [&](int i) { c.be->gate_up_swiglu(out, x.at(0), w.at(i), M, g.N / 2, g.K); });
    const double gbs = (double(w.bytes) + 2.0 * M * (g.K + g.N / 2)) / (ts.ms * 1e-3) / 1e9;
    std::printf("gemv-%-4s gate_up+swiglu M=%-2d F=%-6d K=%-5d %8.4f ms %8.1f GB/s %5.1f%% of copy%s\n", format_tag(f), M,
                g.N / 2, g.K, ts.ms, gbs, 100.0 * gbs / c.copy_gbs, tag(ts));
  }
  cudaFree(out);
  const double ms = tm.ms;
  const double bytes = double(w.bytes) + 2.0 * M * (g.K + g.N);
  const double gbs = bytes / (ms * 1e-3) / 1e9;
  if (!label) label = format_tag(f);
  std::printf("gemv-%-4s %-9s M=%-2d N=%-6d K=%-5d %8.4f ms %8.1f GB/s %5.1f%% of copy%s\n", label, g.name, M, g.N,
              g.K, ms, gbs, 100.0 * gbs / c.copy_gbs, tag(tm));
  c.out["gemv_quant"].push_back({{"format", label}, {"name", g.name}, {"M", M}, {"N", g.N}, {"K", g.K},
                                 {"ms", ms}, {"gb_per_s", gbs}, {"fraction_of_copy", gbs / c.copy_gbs},
                                 {"graph", tm.graph}});
}

// The int4 GEMV at M = 1 on the tile layout, each block shape (W warps a 16-row tile, U 64-column
// chunks a lane per load group), against the packed-rows kernel it replaced (LAMINA_INT4_TILES=0 at
// upload). Tile data and scales are random bytes: any pattern is valid and the time does not
// depend on the values.
void bench_int4_tiles(Ctx& c, const Gemm& g) {
  const size_t data_bytes = size_t(g.N) * g.K / 2, scale_bytes = size_t(g.N) * (g.K / kInt4GroupSize) * 4;
  const double bytes = double(data_bytes + scale_bytes) + 2.0 * (g.K + g.N);
  Rotation data(data_bytes, c.min_total, 50, c.stream), scales(scale_bytes, c.min_total / 16, 51, c.stream);
  Rotation x(size_t(g.K) * 2, 0, 52, c.stream);
  void* out = dmalloc(size_t(g.N) * 2);
  // {warps, chunks a group, x in shared memory}
  const int shapes[][3] = {{4, 1, 0}, {4, 2, 0}, {4, 4, 0}, {8, 1, 0}, {8, 2, 0}, {8, 4, 0},
                           {4, 2, 1}, {4, 4, 1}, {4, 8, 1}, {8, 2, 1}, {8, 4, 1}, {8, 8, 1},
                           {16, 2, 1}, {16, 4, 1}};
  for (const auto& wu : shapes) {
    const Timing tm = time_ms(c.stream, [&](int i) {
      cuda::DeviceQuantWeight w{WeightFormat::Int4Group, data.at(i), static_cast<const float*>(scales.at(i)),
                                kInt4GroupSize, true};
      cuda::launch_gemv_int4_tiles_variant(wu[0], wu[1], wu[2] != 0, DType::BF16, out, x.at(0), w, 1, g.N, g.K,
                                           c.stream);
    });
    const double gbs = bytes / (tm.ms * 1e-3) / 1e9;
    std::printf("gemv-int4-tiles %-8s W=%d U=%d x=%s N=%-6d K=%-5d %8.4f ms %8.1f GB/s %5.1f%% of copy%s\n", g.name,
                wu[0], wu[1], wu[2] ? "smem" : "regs", g.N, g.K, tm.ms, gbs, 100.0 * gbs / c.copy_gbs, tag(tm));
    c.out["gemv_int4_tiles"].push_back({{"name", g.name}, {"W", wu[0]}, {"U", wu[1]}, {"shared_x", wu[2] != 0},
                                        {"ms", tm.ms}, {"gb_per_s", gbs}, {"fraction_of_copy", gbs / c.copy_gbs}});
  }
  // gate_up with its SwiGLU in one kernel: a block's warps split between a gate tile and its up tile.
  if (std::string(g.name) == "gate_up") {
    const int F = g.N / 2;
    for (const auto& wu : {std::array<int, 2>{4, 2}, {4, 4}, {4, 8}, {8, 2}, {8, 4}, {8, 8}, {16, 2}, {16, 4}}) {
      const Timing tm = time_ms(c.stream, [&](int i) {
        cuda::DeviceQuantWeight w{WeightFormat::Int4Group, data.at(i), static_cast<const float*>(scales.at(i)),
                                  kInt4GroupSize, true};
        cuda::launch_gemv_int4_tiles_gate_up_variant(wu[0], wu[1], DType::BF16, out, x.at(0), w, 1, F, g.K, c.stream);
      });
      const double gbs = bytes / (tm.ms * 1e-3) / 1e9;
      std::printf("gemv-int4-tiles gate_up+swiglu W=%d U=%d x=smem F=%-6d K=%-5d %8.4f ms %8.1f GB/s %5.1f%% of copy%s\n",
                  wu[0], wu[1], F, g.K, tm.ms, gbs, 100.0 * gbs / c.copy_gbs, tag(tm));
      c.out["gemv_int4_tiles_gate_up"].push_back(
          {{"W", wu[0]}, {"U", wu[1]}, {"ms", tm.ms}, {"gb_per_s", gbs}, {"fraction_of_copy", gbs / c.copy_gbs}});
    }
  }
  // The streaming kernel (chunks copied into shared memory, `depth` in flight a warp).
  const bool gate_up = std::string(g.name) == "gate_up";
  for (const bool fused : {false, true}) {
    if (fused && !gate_up) continue;
    const int n = fused ? g.N / 2 : g.N;
    for (const auto& wp : {std::array<int, 2>{4, 4}, {4, 8}, {8, 4}, {8, 8}, {16, 2}, {16, 4}, {16, 8}}) {
      bool ran = true;
      const Timing tm = time_ms(c.stream, [&](int i) {
        cuda::DeviceQuantWeight w{WeightFormat::Int4Group, data.at(i), static_cast<const float*>(scales.at(i)),
                                  kInt4GroupSize, true};
        ran = cuda::launch_gemv_int4_stream_variant(wp[0], wp[1], fused, DType::BF16, out, x.at(0), w, 1, n, g.K,
                                                    c.stream);
      });
      if (!ran) continue;
      const double gbs = bytes / (tm.ms * 1e-3) / 1e9;
      std::printf("gemv-int4-stream %-8s%s W=%-2d P=%d N=%-6d K=%-5d %8.4f ms %8.1f GB/s %5.1f%% of copy%s\n", g.name,
                  fused ? "+swiglu" : "", wp[0], wp[1], n, g.K, tm.ms, gbs, 100.0 * gbs / c.copy_gbs, tag(tm));
      c.out["gemv_int4_stream"].push_back({{"name", g.name}, {"swiglu", fused}, {"W", wp[0]}, {"P", wp[1]},
                                           {"ms", tm.ms}, {"gb_per_s", gbs}, {"fraction_of_copy", gbs / c.copy_gbs}});
    }
  }
  cudaFree(out);
  bench_gemv_quant(c, g, WeightFormat::Int4Group, 1, "int4tiles");  // the backend's choice
  setenv("LAMINA_INT4_TILES", "0", 1);
  try {
    bench_gemv_quant(c, g, WeightFormat::Int4Group, 1, "int4rows");
  } catch (...) {
    unsetenv("LAMINA_INT4_TILES");
    throw;
  }
  unsetenv("LAMINA_INT4_TILES");
}

// The FP8 GEMM's activation quantization at serving step sizes: per token over a [M, K] bf16
// activation (qkv, o, gate_up inputs), and the SwiGLU of a [M, 2F] gate_up output quantized per
// token (the down projection's input), each against the copy bandwidth (bytes read + written).
void bench_fp8_activation_quant(Ctx& c, int M, int K, bool swiglu) {
  const size_t in_bytes = size_t(M) * K * 2 * (swiglu ? 2 : 1);
  Rotation x(in_bytes, c.min_total, 50, c.stream);
  void* xq = dmalloc(size_t(M) * K);
  auto* scales = static_cast<float*>(dmalloc(size_t(M) * sizeof(float)));
  const Timing tm = time_ms(c.stream, [&](int i) {
    if (swiglu)
      cuda::launch_silu_mul_quantize_fp8_per_token(DType::BF16, x.at(i), M, K, xq, scales, c.stream);
    else
      cuda::launch_quantize_fp8_per_token(DType::BF16, x.at(i), M, K, xq, scales, c.stream);
  });
  cudaFree(xq);
  cudaFree(scales);
  const double gbs = (double(in_bytes) + double(M) * K + 4.0 * M) / (tm.ms * 1e-3) / 1e9;
  std::printf("fp8-act-quant %-8s M=%-5d K=%-6d %8.4f ms %8.1f GB/s %5.1f%% of copy%s\n", swiglu ? "swiglu" : "rows", M,
              K, tm.ms, gbs, 100.0 * gbs / c.copy_gbs, tag(tm));
  c.out["fp8_activation_quant"].push_back(
      {{"swiglu", swiglu}, {"M", M}, {"K", K}, {"ms", tm.ms}, {"gb_per_s", gbs}, {"graph", tm.graph}});
}

// The add + RMSNorm before an FP8 GEMM with that GEMM's per-token quantization in its pass
// (launch_add_rms_norm_quantize_fp8) over [M, H] bf16, writing the norm's bf16 output too or only
// the e4m3 rows and scales (the CUDA backend's form once a per-token FP8 GEMM has run), against the
// copy bandwidth (bytes read + written).
void bench_norm_quant(Ctx& c, int M, int H, bool write_out) {
  const size_t act = size_t(M) * H * 2;
  Rotation residual(act, c.min_total, 61, c.stream), x(act, c.min_total, 62, c.stream);
  void* w = dmalloc(size_t(H) * 2);
  void* out = dmalloc(act);
  void* xq = dmalloc(size_t(M) * H);
  auto* scales = static_cast<float*>(dmalloc(size_t(M) * sizeof(float)));
  CUDA_CHECK(cudaMemsetAsync(w, 0x3c, size_t(H) * 2, c.stream));  // bf16 0x3c3c ~ 0.0115: a real weight
  const Timing tm = time_ms(c.stream, [&](int i) {
    cuda::launch_add_rms_norm_quantize_fp8(DType::BF16, residual.at(i), x.at(i), write_out ? out : nullptr, w, M, H,
                                           1e-5f, xq, scales, c.stream);
  });
  cudaFree(w);
  cudaFree(out);
  cudaFree(xq);
  cudaFree(scales);
  const double bytes = 3.0 * act + (write_out ? double(act) : 0.0) + double(M) * H + 4.0 * M;
  const double gbs = bytes / (tm.ms * 1e-3) / 1e9;
  std::printf("norm-quant %-9s M=%-5d H=%-6d %8.4f ms %8.1f GB/s %5.1f%% of copy%s\n",
              write_out ? "+output" : "quant", M, H, tm.ms, gbs, 100.0 * gbs / c.copy_gbs, tag(tm));
  c.out["norm_quant"].push_back(
      {{"write_out", write_out}, {"M", M}, {"H", H}, {"ms", tm.ms}, {"gb_per_s", gbs}, {"graph", tm.graph}});
}

// The fp8 GEMV at M = 1, each block shape (R rows, B threads a block). Random bytes (NaN codes
// included) are fine: the time does not depend on the values.
void bench_fp8_shapes(Ctx& c, const Gemm& g) {
  const size_t data_bytes = size_t(g.N) * g.K;
  const double bytes = double(data_bytes) + 4.0 + 2.0 * (g.K + g.N);
  Rotation data(data_bytes, c.min_total, 53, c.stream), scale(16, 0, 54, c.stream);
  Rotation x(size_t(g.K) * 2, 0, 55, c.stream);
  void* out = dmalloc(size_t(g.N) * 2);
  const int shapes[][2] = {{2, 128}, {2, 256}, {4, 64}, {4, 128}, {4, 256}, {8, 64}, {8, 128}, {8, 256}};
  for (const auto& rb : shapes) {
    const Timing tm = time_ms(c.stream, [&](int i) {
      const cuda::DeviceQuantWeight w{WeightFormat::Fp8PerTensor, data.at(i), static_cast<const float*>(scale.at(0))};
      cuda::launch_gemv_fp8_variant(rb[0], rb[1], x.at(0), w, out, g.N, g.K, c.stream);
    });
    const double gbs = bytes / (tm.ms * 1e-3) / 1e9;
    std::printf("gemv-fp8-shape %-8s R=%d B=%-3d N=%-6d K=%-5d %8.4f ms %8.1f GB/s %5.1f%% of copy%s\n", g.name,
                rb[0], rb[1], g.N, g.K, tm.ms, gbs, 100.0 * gbs / c.copy_gbs, tag(tm));
    c.out["gemv_fp8_shapes"].push_back({{"name", g.name}, {"R", rb[0]}, {"B", rb[1]}, {"ms", tm.ms},
                                        {"gb_per_s", gbs}, {"fraction_of_copy", gbs / c.copy_gbs}});
  }
  cudaFree(out);
}

void bench_gemm_quant(Ctx& c, const Gemm& g, WeightFormat f) {
  QuantCopies w(c.be, f, g.N, g.K, 0);
  Rotation x(size_t(g.M) * g.K * 2, c.min_total, 25, c.stream);
  void* out = dmalloc(size_t(g.M) * g.N * 2);
  const Timing tm = time_ms(c.stream, [&](int i) { c.be->matmul(out, x.at(i), w.at(i), g.M, g.N, g.K); }, 9);
  cudaFree(out);
  const double ms = tm.ms;
  const double tflops = 2.0 * g.M * g.N * g.K / (ms * 1e-3) / 1e12;
  std::printf("gemm-%-4s %-13s M=%-5d N=%-6d K=%-5d %8.3f ms %8.1f TFLOP/s%s\n", format_tag(f), g.name, g.M, g.N, g.K,
              ms, tflops, tag(tm));
  c.out["gemm_quant"].push_back({{"format", format_tag(f)}, {"name", g.name}, {"M", g.M}, {"N", g.N}, {"K", g.K},
                                 {"ms", ms}, {"tflops", tflops}, {"graph", tm.graph}});
}

// Llama-3-8B attention heads: 32 q heads, 8 kv heads, head_dim 128.
constexpr int kHq = 32, kHkv = 8, kD = 128;
constexpr int kTokensPerBlock = 32;
// The heads of one GPU of Llama-3-70B at tp 4 (64 q and 8 kv heads split 4 ways).
constexpr int kHq70bTp4 = 16, kHkv70bTp4 = 2;

// The Llama-3-8B attention shape (or hq / hkv heads) over a paged pool of num_blocks blocks,
// sequences of up to max_seq positions in seq_rows block-table rows.
AttentionShape llama8b_attention(int max_seq, int seq_rows, int num_blocks, int hq = kHq, int hkv = kHkv) {
  AttentionShape s;
  s.num_q_heads = hq;
  s.num_kv_heads = hkv;
  s.head_dim = kD;
  s.tokens_per_block = kTokensPerBlock;
  s.max_blocks_per_seq = (max_seq + kTokensPerBlock - 1) / kTokensPerBlock;
  s.num_seq_rows = seq_rows;
  s.num_blocks = num_blocks;
  return s;
}

// Paged KV shape of `seqs` sequences of `seq` positions, and contiguous block tables for it
// (sequence s holds blocks s * blocks_per_seq ...), uploaded to *d_tables.
AttentionShape paged_shape(Ctx& c, int seq, int seqs, int32_t** d_tables) {
  const int blocks_per_seq = (seq + kTokensPerBlock - 1) / kTokensPerBlock;
  AttentionShape s = llama8b_attention(seq, seqs, seqs * blocks_per_seq);
  std::vector<int32_t> tables(size_t(s.num_blocks));
  for (size_t i = 0; i < tables.size(); ++i) tables[i] = int32_t(i);
  *d_tables = static_cast<int32_t*>(dmalloc(tables.size() * 4));
  c.be->copy_to_device(*d_tables, tables.data(), tables.size() * 4);
  return s;
}

// Decode attention of `batch` tokens, each the last of its own sequence of `seq` cached rows, in a
// cache of max_seq rows a sequence (the split plan is made for max_seq, as in the engine), with
// shuffled block tables: its inputs on the device, and run(i) to enqueue call i of it on the
// backend's stream (call i reads slot set i, so repeated calls read DRAM). fp8_kv: an FP8 (e4m3)
// cache, one byte an element (the pools hold random bytes: the speed does not depend on the values).
struct DecodeAttentionCase {
  Ctx& c;
  int batch;
  bool fp8_kv;
  size_t elem_bytes;  // of the cache
  size_t slot_bytes;  // one of k or v of one sequence
  int slots;          // sequence slots: enough that the K (or V) pool exceeds min_total / 2, and a batch
  int used_blocks;    // blocks a sequence fills
  int sets;           // slot sets the calls rotate over: set r uses slots r*batch .. r*batch + batch - 1
  Rotation k, v, qkv;
  AttentionShape shape;
  void* out = nullptr;
  int32_t *d_slots = nullptr, *d_pos = nullptr, *d_tables = nullptr;

  // (Members are initialised in the order above, each from those before it.)
  DecodeAttentionCase(Ctx& ctx, int seq, int batch_, int max_seq, int hq, int hkv, bool fp8)
      : c(ctx),
        batch(batch_),
        fp8_kv(fp8),
        elem_bytes(fp8 ? 1 : 2),
        slot_bytes(size_t(seq) * hkv * kD * elem_bytes),
        slots(std::max(batch, static_cast<int>((ctx.min_total / 2 + slot_bytes - 1) / slot_bytes))),
        used_blocks((seq + kTokensPerBlock - 1) / kTokensPerBlock),
        sets(std::max(1, slots / batch)),
        k(size_t(used_blocks) * kTokensPerBlock * hkv * kD * elem_bytes * slots, 0, 50, ctx.stream),
        v(size_t(used_blocks) * kTokensPerBlock * hkv * kD * elem_bytes * slots, 0, 60, ctx.stream),
        qkv(size_t(batch_) * (hq + 2 * hkv) * kD * 2, 0, 70, ctx.stream, 3.0f) {
    out = dmalloc(size_t(batch) * hq * kD * 2);
    std::vector<int32_t> host_slots(size_t(sets) * batch), host_pos(batch, seq - 1);
    for (size_t i = 0; i < host_slots.size(); ++i) host_slots[i] = static_cast<int32_t>(i % slots);
    d_slots = static_cast<int32_t*>(dmalloc(host_slots.size() * 4));
    d_pos = static_cast<int32_t*>(dmalloc(host_pos.size() * 4));
    c.be->copy_to_device(d_slots, host_slots.data(), host_slots.size() * 4);
    c.be->copy_to_device(d_pos, host_pos.data(), host_pos.size() * 4);
    // Block tables [slots, max_seq / 32]: the filled blocks are a shuffled draw from the pool; the
    // entries past `seq` (never read) point at block 0.
    shape = llama8b_attention(max_seq, slots, slots * used_blocks, hq, hkv);
    shape.inputs_ready_before_step = true;  // as in the engine's steps: the inputs and cache are set up first
    std::vector<int32_t> ids(size_t(shape.num_blocks));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i);
    std::mt19937 rng(7);
    std::shuffle(ids.begin(), ids.end(), rng);
    std::vector<int32_t> tables(size_t(slots) * shape.max_blocks_per_seq, 0);
    for (int s = 0; s < slots; ++s)
      for (int b = 0; b < used_blocks; ++b)
        tables[size_t(s) * shape.max_blocks_per_seq + b] = ids[size_t(s) * used_blocks + b];
    d_tables = static_cast<int32_t*>(dmalloc(tables.size() * 4));
    c.be->copy_to_device(d_tables, tables.data(), tables.size() * 4);
  }
  ~DecodeAttentionCase() {
    cudaFree(out);
    cudaFree(d_tables);
    cudaFree(d_slots);
    cudaFree(d_pos);
  }
  DecodeAttentionCase(const DecodeAttentionCase&) = delete;
  DecodeAttentionCase& operator=(const DecodeAttentionCase&) = delete;

  double bytes() const { return 2.0 * batch * slot_bytes; }  // K and V of every sequence
  void run(int i) {
    const KVCacheLayer cache{k.at(0), v.at(0), d_tables, fp8_kv, 1.0f, 1.0f};
    c.be->attention(out, qkv.at(0), d_pos, d_slots + size_t(i % sets) * batch, cache, shape, batch);
  }
};

// The decode attention case above, timed. bytes = batch * seq * Hkv * D * 2 (K, V) * bytes an
// element. LAMINA_ATTN_DECODE=latency or =pipelined times that kernel for every batch (the default
// picks by batch, as the engine does).
void bench_decode_attention(Ctx& c, int seq, int batch, int max_seq, int hq = kHq, int hkv = kHkv,
                            bool fp8_kv = false) {
  const char* mode = std::getenv("LAMINA_ATTN_DECODE");
  const std::string kernel = std::string(mode != nullptr && *mode ? mode : "auto") + (fp8_kv ? ", fp8 kv" : "");
  DecodeAttentionCase attn(c, seq, batch, max_seq, hq, hkv, fp8_kv);
  const Timing tm = time_ms(c.stream, [&](int i) { attn.run(i); });
  const double ms = tm.ms;
  const double gbs = attn.bytes() / (ms * 1e-3) / 1e9;
  std::printf("attn decode (%s) heads=%d/%d seq=%-5d batch=%-4d max_seq=%-5d %8.4f ms %8.1f GB/s %5.1f%% of copy%s\n",
              kernel.c_str(), hq, hkv, seq, batch, max_seq, ms, gbs, 100.0 * gbs / c.copy_gbs, tag(tm));
  c.out["attention_decode"].push_back({{"seq", seq}, {"batch", batch}, {"max_seq", max_seq}, {"kernel", kernel},
                                       {"q_heads", hq}, {"kv_heads", hkv}, {"ms", ms}, {"gb_per_s", gbs},
                                       {"fraction_of_copy", gbs / c.copy_gbs}, {"graph", tm.graph}});
}

// Work on a second stream beside the benchmark's stream: a timed call forks `side` off c.stream,
// runs side_work there and main_work on c.stream, and joins them.
struct SideBySide {
  cudaStream_t side = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
  SideBySide() {
    CUDA_CHECK(cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking));
    CUDA_CHECK(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming));
    CUDA_CHECK(cudaEventCreateWithFlags(&join, cudaEventDisableTiming));
  }
  ~SideBySide() {
    cudaEventDestroy(fork);
    cudaEventDestroy(join);
    cudaStreamDestroy(side);
  }
  SideBySide(const SideBySide&) = delete;
  SideBySide& operator=(const SideBySide&) = delete;
  Timing time(Ctx& c, const std::function<void(int, cudaStream_t)>& side_work, const std::function<void(int)>& main_work) {
    return time_ms(c.stream, [&](int i) {
      CUDA_CHECK(cudaEventRecord(fork, c.stream));
      CUDA_CHECK(cudaStreamWaitEvent(side, fork, 0));
      side_work(i, side);
      main_work(i);
      CUDA_CHECK(cudaEventRecord(join, side));
      CUDA_CHECK(cudaStreamWaitEvent(c.stream, join, 0));
    });
  }
};

// Whether a serving step could overlap its memory-bound decode attention with its compute-bound
// GEMMs (two halves of the batch, one's attention beside the other's projection): the decode
// attention of `batch` sequences of `seq` rows on the backend's stream and a bf16 GEMM g on a
// second stream, each alone and both at once (forked and joined inside the timed graph). The GEMM's
// cuBLASLt plan targets sm_target SMs (CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET; 0: all of them),
// leaving the rest to the attention. saved = alone + alone - together; overlap = saved / the shorter.
void bench_overlap(Ctx& c, const Gemm& g, int batch, int seq, int sm_target) {
  DecodeAttentionCase attn(c, seq, batch, 2048, kHq, kHkv, false);
  Rotation w(size_t(g.N) * g.K * 2, c.min_total, 10, c.stream, 0.05f);
  Rotation x(size_t(g.M) * g.K * 2, 0, 20, c.stream);
  void* out = dmalloc(size_t(g.M) * g.N * 2);
  SideBySide two;
  {
    lamina::cuda::LtGemm gemm(size_t(32) << 20, sm_target);
    const auto run_gemm = [&](int i, cudaStream_t s) {
      gemm.run(DType::BF16, out, x.at(0), w.at(i), g.M, g.N, g.K, s);
    };
    const Timing ta = time_ms(c.stream, [&](int i) { attn.run(i); });
    const Timing tg = time_ms(c.stream, [&](int i) { run_gemm(i, c.stream); });
    const Timing both = two.time(c, run_gemm, [&](int i) { attn.run(i); });
    const double saved = ta.ms + tg.ms - both.ms, overlap = saved / std::min(ta.ms, tg.ms);
    std::printf("overlap attn b%d s%d + %s M=%d, GEMM on %s SMs: attention %.4f, GEMM %.4f, both %.4f ms "
                "(saved %.4f, %.0f%% of the shorter)%s\n",
                batch, seq, g.name, g.M, sm_target > 0 ? std::to_string(sm_target).c_str() : "all", ta.ms, tg.ms,
                both.ms, saved, 100.0 * overlap, tag(both));
    c.out["overlap"].push_back({{"batch", batch}, {"seq", seq}, {"gemm", g.name}, {"M", g.M}, {"N", g.N},
                                {"K", g.K}, {"sm_target", sm_target}, {"attention_ms", ta.ms}, {"gemm_ms", tg.ms},
                                {"both_ms", both.ms}, {"saved_ms", saved}, {"graph", both.graph}});
  }
  cudaFree(out);
}

// The premise of a serving decode step split in two halves of sequences on two streams, one
// half's attention beside the other half's GEMMs: the FP8-cache decode attention of `batch`
// sequences of `seq` rows (the bulk-copy kernel, its persistent grid held to `attn_sms` SMs)
// beside an FP8 (e4m3, per-token scales) GEMM of g.M rows whose cuBLASLt plan aims at the other
// SMs, alone and together, against both on every SM one after the other. `--only split`.
void bench_split_step(Ctx& c, const Gemm& g, int batch, int seq, int attn_sms) {
  const int sms = c.out["device"]["sms"].get<int>();
  DecodeAttentionCase attn(c, seq, batch, 2048, kHq, kHkv, /*fp8=*/true);
  Rotation w(size_t(g.N) * g.K, c.min_total, 11, c.stream, 0.05f);  // e4m3 bytes (any codes: timing only)
  Rotation x(size_t(g.M) * g.K, 0, 21, c.stream);
  void* out = dmalloc(size_t(g.M) * g.N * 2);
  auto* scales = static_cast<float*>(dmalloc(size_t(g.M + g.N) * sizeof(float)));
  const std::vector<float> ones(size_t(g.M + g.N), 1.0f);
  c.be->copy_to_device(scales, ones.data(), ones.size() * sizeof(float));
  SideBySide two;
  {
    lamina::cuda::LtGemm gemm_all(size_t(32) << 20, 0), gemm_rest(size_t(32) << 20, sms - attn_sms);
    const auto run_gemm = [&](lamina::cuda::LtGemm& gm, int i, cudaStream_t s) {
      gm.run_fp8(DType::BF16, out, x.at(0), scales, lamina::cuda::Fp8Scaling::kPerToken, w.at(i), scales + g.M, g.M,
                 g.N, g.K, s);
    };
    lamina::cuda::set_attention_decode_bulk_max_sms(0);
    const Timing ta_all = time_ms(c.stream, [&](int i) { attn.run(i); });
    const Timing tg_all = time_ms(c.stream, [&](int i) { run_gemm(gemm_all, i, c.stream); });
    lamina::cuda::set_attention_decode_bulk_max_sms(attn_sms);
    const Timing ta = time_ms(c.stream, [&](int i) { attn.run(i); });
    const Timing tg = time_ms(c.stream, [&](int i) { run_gemm(gemm_rest, i, c.stream); });
    const Timing both =
        two.time(c, [&](int i, cudaStream_t s) { run_gemm(gemm_rest, i, s); }, [&](int i) { attn.run(i); });
    lamina::cuda::set_attention_decode_bulk_max_sms(0);
    const double in_turn = ta_all.ms + tg_all.ms;
    std::printf("split attn fp8 b%d s%d on %d SMs + %s fp8 M=%d on %d: attention %.4f (all SMs %.4f), GEMM %.4f "
                "(all %.4f), together %.4f ms against %.4f in turn (%.0f%%)%s\n",
                batch, seq, attn_sms, g.name, g.M, sms - attn_sms, ta.ms, ta_all.ms, tg.ms, tg_all.ms, both.ms,
                in_turn, 100.0 * both.ms / in_turn, tag(both));
    c.out["split_step"].push_back({{"batch", batch}, {"seq", seq}, {"attn_sms", attn_sms}, {"gemm", g.name},
                                   {"M", g.M}, {"N", g.N}, {"K", g.K}, {"attention_ms", ta.ms},
                                   {"attention_all_ms", ta_all.ms}, {"gemm_ms", tg.ms}, {"gemm_all_ms", tg_all.ms},
                                   {"both_ms", both.ms}, {"in_turn_ms", in_turn}, {"graph", both.graph}});
  }
  cudaFree(out);
  cudaFree(scales);
}

void bench_prefill_attention(Ctx& c, int T) {
  const size_t kv_bytes = size_t(T) * kHkv * kD * 2;
  Rotation k(kv_bytes, 0, 80, c.stream), v(kv_bytes, 0, 90, c.stream);
  Rotation qkv(size_t(T) * (kHq + 2 * kHkv) * kD * 2, 0, 100, c.stream, 3.0f);
  void* out = dmalloc(size_t(T) * kHq * kD * 2);
  std::vector<int32_t> pos(T), slot(T, 0);
  for (int t = 0; t < T; ++t) pos[t] = t;
  auto* d_pos = static_cast<int32_t*>(dmalloc(T * 4));
  auto* d_slot = static_cast<int32_t*>(dmalloc(T * 4));
  c.be->copy_to_device(d_pos, pos.data(), T * 4);
  c.be->copy_to_device(d_slot, slot.data(), T * 4);
  int32_t* d_tables = nullptr;
  const AttentionShape shape = paged_shape(c, T, 1, &d_tables);
  const Timing tm = time_ms(c.stream, [&](int) {
    c.be->attention(out, qkv.at(0), d_pos, d_slot, KVCacheLayer{k.at(0), v.at(0), d_tables}, shape, T);
  }, 9);
  cudaFree(out);
  cudaFree(d_tables);
  cudaFree(d_pos);
  cudaFree(d_slot);
  const double ms = tm.ms;
  // Causal: T*(T+1)/2 visible (q, k) pairs, 2 matmuls of 2*D flops each.
  const double flops = 4.0 * kD * kHq * (double(T) * (T + 1) / 2);
  const double tflops = flops / (ms * 1e-3) / 1e12;
  std::printf("attn prefill T=%-5d            %8.3f ms %8.1f TFLOP/s%s\n", T, ms, tflops, tag(tm));
  c.out["attention_prefill"].push_back({{"T", T}, {"ms", ms}, {"tflops", tflops}, {"graph", tm.graph}});
}

// A serving prefill step: `seqs` prompts of `len` tokens each in one step (T = seqs * len; every
// 64-token tile lies in one prompt), through the op, and each of the two kernels the op runs for
// T > kAttentionDecodeMaxTokens alone: the decode kernel (which finds every tile uniform and
// skips it) and the tiled prefill kernel. FLOPs as bench_prefill_attention, per prompt.
void bench_batched_prompts_attention(Ctx& c, int seqs, int len) {
  const int T = seqs * len;
  const size_t kv_bytes = size_t(T) * kHkv * kD * 2;
  Rotation k(kv_bytes, 0, 81, c.stream), v(kv_bytes, 0, 91, c.stream);
  Rotation qkv(size_t(T) * (kHq + 2 * kHkv) * kD * 2, 0, 101, c.stream, 3.0f);
  void* out = dmalloc(size_t(T) * kHq * kD * 2);
  std::vector<int32_t> pos(T), slot(T);
  for (int t = 0; t < T; ++t) pos[t] = t % len, slot[t] = t / len;
  auto* d_pos = static_cast<int32_t*>(dmalloc(T * 4));
  auto* d_slot = static_cast<int32_t*>(dmalloc(T * 4));
  c.be->copy_to_device(d_pos, pos.data(), T * 4);
  c.be->copy_to_device(d_slot, slot.data(), T * 4);
  int32_t* d_tables = nullptr;
  const AttentionShape shape = paged_shape(c, len, seqs, &d_tables);
  const KVCacheLayer cache{k.at(0), v.at(0), d_tables};
  cuda::AttnParams p = cuda::make_attn_params(shape, T);
  p.scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(double(kD)));
  p.prefill_takes_uniform_tiles = true;
  p.prefill_tiles = (T + cuda::kPrefillTileTokens - 1) / cuda::kPrefillTileTokens;
  AttentionShape described = shape;  // the step's prompt tiles given, as LlamaForward gives them
  describe_prompt_tiles(described, slot.data(), T);
  const double flops = 4.0 * kD * kHq * seqs * (double(len) * (len + 1) / 2);
  const auto report = [&](const char* part, const Timing& tm) {
    std::printf("attn prompts %-8s %4d x %-4d T=%-5d %8.3f ms %8.1f TFLOP/s%s\n", part, seqs, len, T, tm.ms,
                flops / (tm.ms * 1e-3) / 1e12, tag(tm));
    c.out["attention_batched_prompts"].push_back({{"part", part}, {"seqs", seqs}, {"len", len}, {"ms", tm.ms}});
  };
  report("op", time_ms(c.stream, [&](int) { c.be->attention(out, qkv.at(0), d_pos, d_slot, cache, shape, T); }, 9));
  report("op-tiles", time_ms(c.stream, [&](int) {
    c.be->attention(out, qkv.at(0), d_pos, d_slot, cache, described, T);
  }, 9));
  report("decode", time_ms(c.stream, [&](int) {
    cuda::launch_attention_decode(DType::BF16, out, qkv.at(0), d_pos, d_slot, cache, p, 1, nullptr, nullptr, c.stream);
  }, 9));
  report("prefill", time_ms(c.stream, [&](int) {
    cuda::launch_attention_prefill(DType::BF16, out, qkv.at(0), d_pos, d_slot, cache, p, c.stream);
  }, 9));
  cudaFree(out);
  cudaFree(d_tables);
  cudaFree(d_pos);
  cudaFree(d_slot);
}

// Token choice over a Llama 3 vocabulary (128,256 bf16 logits a row, uniform in [-4, 4]): greedy,
// and sampled with temperature 0.7, top_k 50 and top_p 0.9; one row (batch-1 decode) and 64.
void bench_token_choice(Ctx& c, int R, bool sample) {
  const int V = 128256;
  Rotation logits(size_t(R) * V * 2, 0, 50, c.stream, 4.0f);
  std::vector<cuda::SampleParams> hp(static_cast<size_t>(R));
  for (int r = 0; r < R; ++r)
    hp[size_t(r)] = sample ? cuda::SampleParams{0.7f, 50, 0.9f, float(r % 16) / 16.0f}
                           : cuda::SampleParams{0.0f, 0, 1.0f, 0.0f};
  auto* params = static_cast<cuda::SampleParams*>(dmalloc(hp.size() * sizeof(hp[0])));
  auto* ids = static_cast<int32_t*>(dmalloc(size_t(R) * sizeof(int32_t)));
  CUDA_CHECK(cudaMemcpy(params, hp.data(), hp.size() * sizeof(hp[0]), cudaMemcpyHostToDevice));
  // split 0: one block a row; 64: greedy rows split over 64 blocks (select_tokens for <= 8 rows).
  constexpr int kSplit = 64;
  auto* partials = static_cast<SliceArgmax*>(dmalloc(size_t(R) * kSplit * sizeof(SliceArgmax)));
  for (int split : {0, kSplit}) {
    const Timing tm = time_ms(c.stream, [&](int i) {
      cuda::launch_sample_split(DType::BF16, logits.at(i), R, V, params, ids, partials, split, c.stream);
    });
    const char* kind = sample ? "top_k 50 top_p 0.9" : "greedy";
    std::printf("token choice %-18s R=%-3d V=%d split %-2d %8.4f ms%s\n", kind, R, V, split, tm.ms, tag(tm));
    c.out["token_choice"].push_back(
        {{"kind", kind}, {"R", R}, {"V", V}, {"split", split}, {"ms", tm.ms}, {"graph", tm.graph}});
  }
  cudaFree(partials);
  cudaFree(params);
  cudaFree(ids);
}

template <typename F>
void guarded(Ctx& c, const std::string& what, F&& f) {
  if (!c.only.empty() && what != "copy") {
    bool wanted = false;
    for (size_t at = 0; at <= c.only.size() && !wanted;) {
      const size_t bar = std::min(c.only.find('|', at), c.only.size());
      wanted = what.find(c.only.substr(at, bar - at)) != std::string::npos;
      at = bar + 1;
    }
    if (!wanted) return;
  }
  try {
    f();
  } catch (const std::exception& e) {
    std::printf("%s FAILED: %s\n", what.c_str(), e.what());
    c.out["errors"].push_back(what + ": " + e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string json_path;
  if (const char* o = std::getenv("OUT")) json_path = std::string(o) + "/bench_kernels.json";
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--json") json_path = argv[i + 1];
  std::string only;
  for (int i = 1; i + 1 < argc; ++i)
    if (std::string(argv[i]) == "--only") only = argv[i + 1];
  if (cuda_device_count() == 0) {
    std::printf("bench_kernels: no CUDA device, nothing to measure\n");
    return 0;
  }
  auto be = make_cuda_backend(0, DType::BF16);
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  Ctx c{be.get(), cuda_stream_of(*be), std::max<size_t>(size_t(256) << 20, size_t(4) * prop.l2CacheSize)};
  std::printf("device: %s, %d SMs, L2 %d MB; rotating inputs over >= %zu MB\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20, c.min_total >> 20);
  c.only = only;
  c.out["device"] = {{"name", prop.name}, {"sms", prop.multiProcessorCount}, {"l2_bytes", prop.l2CacheSize}};

  guarded(c, "copy", [&] { bench_copy(c); });
  for (const Gemm& g : kGemms) guarded(c, g.name, [&] { bench_gemm(c, g); });
  for (const Gemm& g : kServingGemms) {
    guarded(c, g.name, [&] { bench_gemm(c, g); });
    guarded(c, std::string(g.name) + " fp8", [&] { bench_gemm_quant(c, g, WeightFormat::Fp8PerTensor); });
  }
  for (int M : {1024, 8192}) {
    guarded(c, "fp8 act quant", [&] { bench_fp8_activation_quant(c, M, 4096, false); });
    guarded(c, "fp8 act quant", [&] { bench_fp8_activation_quant(c, M, 14336, true); });
    for (bool write_out : {true, false}) guarded(c, "norm quant", [&] { bench_norm_quant(c, M, 4096, write_out); });
  }
  for (int M : {1, 8})
    for (const Gemm& g : kGemms) guarded(c, g.name, [&] { bench_gemv(c, g, M); });
  for (const Gemm& g : kGemms)
    if (std::string(g.name) != "square") guarded(c, g.name, [&] { bench_gemv_variants(c, g); });
  const WeightFormat formats[] = {WeightFormat::Int8PerChannel, WeightFormat::Fp8PerTensor, WeightFormat::Int4Group};
  for (int M : {1, 8})
    for (WeightFormat f : formats)
      for (const Gemm& g : kGemms)
        if (std::string(g.name) != "square" && std::string(g.name) != "lm_head")  // lm_head stays bf16
          guarded(c, g.name, [&] { bench_gemv_quant(c, g, f, M); });
  for (const Gemm& g : kGemms)
    if (std::string(g.name) != "square" && std::string(g.name) != "lm_head")
      guarded(c, std::string("int4 tiles ") + g.name, [&] { bench_int4_tiles(c, g); });
  for (const Gemm& g : kGemms)
    if (std::string(g.name) != "square" && std::string(g.name) != "lm_head")
      guarded(c, "fp8 shapes", [&] { bench_fp8_shapes(c, g); });
  for (WeightFormat f : formats)
    for (const Gemm& g : kGemms)
      if (std::string(g.name) != "square" && std::string(g.name) != "lm_head")
        guarded(c, g.name, [&] { bench_gemm_quant(c, g, f); });
  // Decode attention {batch, seq, max_seq}: one sequence (latency), a small batch, serving batches.
  const int kDecodeAttn[][3] = {{1, 512, 4096},  {1, 768, 4096},   {1, 1024, 4096},  {1, 2048, 4096},
                                {1, 4096, 4096}, {4, 512, 4096},   {8, 512, 4096},   {16, 512, 4096},
                                {16, 2048, 4096}, {256, 256, 2048}, {1024, 256, 2048}};
  for (const auto& a : kDecodeAttn)
    guarded(c, "decode attention b" + std::to_string(a[0]) + " s" + std::to_string(a[1]),
            [&] { bench_decode_attention(c, a[1], a[0], a[2]); });
  for (const auto& a : kDecodeAttn)
    if (a[0] > 1)
      guarded(c, "decode attention fp8 kv b" + std::to_string(a[0]) + " s" + std::to_string(a[1]),
              [&] { bench_decode_attention(c, a[1], a[0], a[2], kHq, kHkv, true); });
  // One GPU of Llama-3-70B at tp 4, batch 1: the decode step's GEMVs and its attention (2 kv heads).
  for (const Gemm& g : kGemms70bTp4) {
    guarded(c, g.name, [&] { bench_gemv(c, g, 1); });
    if (std::string(g.name) != "70b-tp4 lm_head") guarded(c, g.name, [&] { bench_gemv_variants(c, g); });
  }
  // One GPU of Llama-3-8B at tp 2, batch 1: its attention (16 q, 4 kv heads).
  for (int seq : {512, 768, 1024})
    guarded(c, "8b-tp2 decode attention", [&] { bench_decode_attention(c, seq, 1, 4096, kHq / 2, kHkv / 2); });
  for (int seq : {512, 768, 1024, 2048})
    guarded(c, "70b-tp4 decode attention",
            [&] { bench_decode_attention(c, seq, 1, 4096, kHq70bTp4, kHkv70bTp4); });
  for (int T : {512, 2048}) guarded(c, "prefill attention", [&] { bench_prefill_attention(c, T); });
  for (int R : {1, 64})
    for (bool sample : {false, true}) guarded(c, "token choice", [&] { bench_token_choice(c, R, sample); });
  for (int seqs : {16, 64}) guarded(c, "prompts attention", [&] { bench_batched_prompts_attention(c, seqs, 128); });
  // Overlap of half a serving step's decode attention with the other half's projections: asked for
  // by name only (--only overlap), being a question for a design rather than a kernel's figure.
  const Gemm kOverlapGemms[] = {{"gate_up", 512, 28672, 4096}, {"down", 512, 4096, 14336}, {"qkv", 512, 6144, 4096}};
  if (c.only.find("overlap") != std::string::npos)
    for (const Gemm& g : kOverlapGemms)
      for (int sms : {0, 100, 66}) guarded(c, "overlap", [&] { bench_overlap(c, g, 512, 256, sms); });
  // The same question with the FP8 cache's bulk-copy attention held to a few SMs (--only split).
  if (c.only.find("split") != std::string::npos)
    for (const Gemm& g : kOverlapGemms)
      for (int sms : {12, 20, 32, 44}) guarded(c, "split", [&] { bench_split_step(c, g, 512, 192, sms); });

  // The launch shapes the GEMVs' tuning chose on this GPU for the shapes above (gemv_tuner.h).
  for (const std::string& line : lamina::cuda::gemv_tuning_choices()) {
    std::printf("gemv tuning %s\n", line.c_str());
    c.out["gemv_tuning"].push_back(line);
  }
  if (!json_path.empty()) {
    std::ofstream(json_path) << c.out.dump(2) << "\n";
    std::printf("wrote %s\n", json_path.c_str());
  }
  return c.out.contains("errors") ? 1 : 0;
}
