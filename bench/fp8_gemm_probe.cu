// Diagnostic: which cuBLASLt FP8 (e4m3) GEMM configurations this GPU + cuBLASLt accept.
// Tries the backend's configuration (matmul.cu: TN, e4m3 x e4m3 -> bf16, per-tensor scale
// pointers) and variations of it, for every algorithm the heuristic offers, and prints the
// status of each cublasLtMatmul call. Standalone (only CUDA), built by bench/CMakeLists.txt:
//   build-device/bench/fp8_gemm_probe            (CUBLASLT_LOG_LEVEL=1 adds cuBLASLt's reasons)
//   build-device/bench/fp8_gemm_probe --time     times the heuristic's first algorithm of each
//                                                scale mode at the serving steps' shapes instead
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "probe_check.h"

namespace {

enum class Scales { kNone, kScalarAligned, kScalarOffset4, kOuterB, kOuterAB };

struct Variant {
  const char* name;
  cudaDataType_t out_type;  // C and D
  Scales scales;            // A/B scale pointers: none; one float each at 16-byte or 4-byte offsets;
                            // per-token (B: M floats) and per-channel (A: N floats) vectors
  bool fast_accum;
  bool beta_one;            // beta = 1 (C read) instead of 0
  bool device_alpha;        // alpha and beta as device pointers (CUBLASLT_POINTER_MODE_DEVICE)
};

// The descriptors of variant v's GEMM (TN, e4m3 inputs [N, K] and [M, K], output [M, N] in
// v.out_type) with scale pointers sa (A) and sb (B) where v has scales, and the preference for a
// workspace of ws_bytes. Freed with the Plan.
struct Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t la = nullptr, lb = nullptr, lc = nullptr;
  cublasLtMatmulPreference_t pref = nullptr;
  Plan(const Variant& v, int M, int N, int K, const float* sa, const float* sb, const size_t& ws_bytes) {
    cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
    if (v.scales != Scales::kNone) {
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof(sa));
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof(sb));
      const cublasLtMatmulMatrixScale_t outer = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;
      if (v.scales == Scales::kOuterB || v.scales == Scales::kOuterAB)
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &outer, sizeof(outer));
      if (v.scales == Scales::kOuterAB)
        cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &outer, sizeof(outer));
    }
    if (v.fast_accum) {
      const int8_t on = 1;
      cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &on, sizeof(on));
    }
    cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, K, N, K);
    cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, K, M, K);
    cublasLtMatrixLayoutCreate(&lc, v.out_type, N, M, N);
    cublasLtMatmulPreferenceCreate(&pref);
    cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes));
  }
  ~Plan() {
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatrixLayoutDestroy(la);
    cublasLtMatrixLayoutDestroy(lb);
    cublasLtMatrixLayoutDestroy(lc);
    cublasLtMatmulDescDestroy(op);
  }
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
};

void probe(cublasLtHandle_t h, void* ws, size_t ws_bytes, int M, int N, int K, const Variant& v) {
  void *a, *b, *d;
  float* scales;
  PROBE_CHECK(cudaMalloc(&a, size_t(N) * K));
  PROBE_CHECK(cudaMalloc(&b, size_t(M) * K));
  PROBE_CHECK(cudaMalloc(&d, size_t(M) * N * 4));
  const int n_scales = 64 + M + N;
  PROBE_CHECK(cudaMalloc(&scales, n_scales * sizeof(float)));
  PROBE_CHECK(cudaMemset(a, 0x38, size_t(N) * K));  // e4m3 1.0
  PROBE_CHECK(cudaMemset(b, 0x38, size_t(M) * K));
  const std::vector<float> ones(n_scales, 1.0f);
  PROBE_CHECK(cudaMemcpy(scales, ones.data(), n_scales * sizeof(float), cudaMemcpyHostToDevice));

  const Plan plan(v, M, N, K, scales, v.scales == Scales::kScalarOffset4 ? scales + 1 : scales + 32, ws_bytes);
  const cublasLtMatmulDesc_t op = plan.op;
  const cublasLtMatrixLayout_t la = plan.la, lb = plan.lb, lc = plan.lc;
  float* alpha_beta = scales + 64 + M + N - 2;  // 1.0 and (overwritten below) beta
  if (v.device_alpha) {
    const cublasLtPointerMode_t mode = CUBLASLT_POINTER_MODE_DEVICE;
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_POINTER_MODE, &mode, sizeof(mode));
    const float ab[2] = {1.0f, v.beta_one ? 1.0f : 0.0f};
    PROBE_CHECK(cudaMemcpy(alpha_beta, ab, sizeof(ab), cudaMemcpyHostToDevice));
  }
  cublasLtMatmulHeuristicResult_t res[8];
  int found = 0;
  const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, lc, lc, plan.pref, 8, res, &found);
  std::printf("%-28s M=%-5d N=%-5d K=%-5d heuristic %s, %d algos:", v.name, M, N, K, cublasLtGetStatusName(hs), found);
  const float alpha = 1.0f, beta = v.beta_one ? 1.0f : 0.0f;
  const void* pa = v.device_alpha ? static_cast<const void*>(alpha_beta) : &alpha;
  const void* pb = v.device_alpha ? static_cast<const void*>(alpha_beta + 1) : &beta;
  for (int i = 0; i < found; ++i) {
    const cublasStatus_t s = cublasLtMatmul(h, op, pa, a, la, b, lb, pb, d, lc, d, lc, &res[i].algo, ws, ws_bytes, nullptr);
    const cudaError_t e = cudaDeviceSynchronize();
    std::printf(" %s%s", cublasLtGetStatusName(s), e == cudaSuccess ? "" : "(cuda error)");
  }
  if (found > 0) {  // every product is 1 x 1 (e4m3 0x38) times unit scales: d = K
    unsigned raw = 0;
    PROBE_CHECK(cudaMemcpy(&raw, d, v.out_type == CUDA_R_32F ? 4 : 2, cudaMemcpyDeviceToHost));
    float val = 0.0f;
    if (v.out_type == CUDA_R_32F) {
      std::memcpy(&val, &raw, 4);
    } else if (v.out_type == CUDA_R_16BF) {
      raw <<= 16;
      std::memcpy(&val, &raw, 4);
    } else {
      val = __half2float(*reinterpret_cast<const __half*>(&raw));
    }
    std::printf("  d[0] = %g (expect %d)", val, K);
  }
  std::printf("\n");
  cudaFree(a);
  cudaFree(b);
  cudaFree(d);
  cudaFree(scales);
}


// Random e4m3 bytes without the NaN codes (0x7f, 0xff): the tensor cores' power, and so their
// clock, depends on the values, which constant inputs would understate.
__global__ void fill_random_e4m3(unsigned char* p, size_t n, unsigned seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    unsigned h = unsigned(i) * 2654435761u ^ seed;
    h ^= h >> 15;
    h *= 2246822519u;
    h ^= h >> 13;
    const unsigned char b = static_cast<unsigned char>(h) & 0xbf;  // exponent bit 6 off: |x| < 2
    p[i] = (b & 0x7f) == 0x7f ? 0x38 : b;
  }
}

// Milliseconds a call of the heuristic's first algorithm takes for variant v (mean of 20 after 3),
// or a negative number where the heuristic or the call refuses it.
float time_variant(cublasLtHandle_t h, void* ws, size_t ws_bytes, int M, int N, int K, const Variant& v,
                   const void* a, const void* b, void* d, const float* scales) {
  const Plan plan(v, M, N, K, scales, scales + 64 + N, ws_bytes);  // B's scales 16-byte aligned, past A's N
  const cublasLtMatmulDesc_t op = plan.op;
  const cublasLtMatrixLayout_t la = plan.la, lb = plan.lb, lc = plan.lc;
  cublasLtMatmulHeuristicResult_t res{};
  int found = 0;
  float ms = -1.0f;
  const float alpha = 1.0f, beta = 0.0f;
  if (cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, lc, lc, plan.pref, 1, &res, &found) == CUBLAS_STATUS_SUCCESS &&
      found > 0) {
    auto call = [&] {
      return cublasLtMatmul(h, op, &alpha, a, la, b, lb, &beta, d, lc, d, lc, &res.algo, ws, ws_bytes, nullptr);
    };
    bool ok = true;
    for (int i = 0; i < 3; ++i) ok = ok && call() == CUBLAS_STATUS_SUCCESS;
    if (ok) {
      cudaEvent_t e0, e1;
      cudaEventCreate(&e0);
      cudaEventCreate(&e1);
      cudaEventRecord(e0);
      for (int i = 0; i < 20; ++i) call();
      cudaEventRecord(e1);
      PROBE_CHECK(cudaEventSynchronize(e1));
      cudaEventElapsedTime(&ms, e0, e1);
      ms /= 20;
      cudaEventDestroy(e0);
      cudaEventDestroy(e1);
    }
  }
  return ms;
}

// --time: each scale mode at the serving steps' GEMM shapes (M tokens, N outputs, K inputs).
void time_serving_shapes(cublasLtHandle_t h, void* ws, size_t ws_bytes) {
  const Variant variants[] = {
      {"per-token B, per-channel A", CUDA_R_16BF, Scales::kOuterAB, false, false, false},
      {"  + fast accum", CUDA_R_16BF, Scales::kOuterAB, true, false, false},
      {"per-tensor scalars", CUDA_R_16BF, Scales::kScalarAligned, false, false, false},
      {"  + fast accum", CUDA_R_16BF, Scales::kScalarAligned, true, false, false},
      {"no scales", CUDA_R_16BF, Scales::kNone, false, false, false},
      {"  + fast accum", CUDA_R_16BF, Scales::kNone, true, false, false},
  };
  struct Shape {
    const char* name;
    int M, N, K;
  };
  const Shape shapes[] = {{"qkv", 1024, 6144, 4096},    {"o", 1024, 4096, 4096},  {"gate_up", 1024, 28672, 4096},
                          {"down", 1024, 4096, 14336},  {"qkv", 8192, 6144, 4096}, {"o", 8192, 4096, 4096},
                          {"gate_up", 8192, 28672, 4096}, {"down", 8192, 4096, 14336}};
  for (const Shape& s : shapes) {
    void *a, *b, *d;
    float* scales;
    PROBE_CHECK(cudaMalloc(&a, size_t(s.N) * s.K));
    PROBE_CHECK(cudaMalloc(&b, size_t(s.M) * s.K));
    PROBE_CHECK(cudaMalloc(&d, size_t(s.M) * s.N * 2));
    const int n_scales = 128 + s.M + s.N;
    PROBE_CHECK(cudaMalloc(&scales, n_scales * sizeof(float)));
    fill_random_e4m3<<<1024, 256>>>(static_cast<unsigned char*>(a), size_t(s.N) * s.K, 1);
    fill_random_e4m3<<<1024, 256>>>(static_cast<unsigned char*>(b), size_t(s.M) * s.K, 2);
    std::vector<float> small(n_scales, 1.0f / 256);
    PROBE_CHECK(cudaMemcpy(scales, small.data(), n_scales * sizeof(float), cudaMemcpyHostToDevice));
    const double flop = 2.0 * s.M * s.N * s.K;
    for (const Variant& v : variants) {
      const float ms = time_variant(h, ws, ws_bytes, s.M, s.N, s.K, v, a, b, d, scales);
      if (ms < 0)
        std::printf("time %-8s M=%-5d N=%-6d K=%-6d %-28s refused\n", s.name, s.M, s.N, s.K, v.name);
      else
        std::printf("time %-8s M=%-5d N=%-6d K=%-6d %-28s %8.4f ms %7.1f TFLOP/s\n", s.name, s.M, s.N, s.K, v.name, ms,
                    flop / ms / 1e9);
    }
    cudaFree(a);
    cudaFree(b);
    cudaFree(d);
    cudaFree(scales);
  }
}

}  // namespace

int main(int argc, char** argv) {
  int dev = 0;
  cudaDeviceProp prop{};
  PROBE_CHECK(cudaGetDeviceProperties(&prop, dev));
  std::printf("%s, compute capability %d.%d, cuBLASLt %zu\n", prop.name, prop.major, prop.minor, cublasLtGetVersion());
  cublasLtHandle_t h;
  cublasLtCreate(&h);
  const size_t ws_bytes = 32u << 20;
  void* ws;
  PROBE_CHECK(cudaMalloc(&ws, ws_bytes));
  if (argc > 1 && std::strcmp(argv[1], "--time") == 0) {
    time_serving_shapes(h, ws, ws_bytes);
    cudaFree(ws);
    cublasLtDestroy(h);
    return 0;
  }
  const Variant variants[] = {
      {"scales 4-byte offset (old)", CUDA_R_16BF, Scales::kScalarOffset4, false, false, false},
      {"scales 16-byte aligned", CUDA_R_16BF, Scales::kScalarAligned, false, false, false},
      {"no scales", CUDA_R_16BF, Scales::kNone, false, false, false},
      {"no scales, device alpha", CUDA_R_16BF, Scales::kNone, false, false, true},
      {"aligned, fast accum", CUDA_R_16BF, Scales::kScalarAligned, true, false, false},
      {"per-token B scales", CUDA_R_16BF, Scales::kOuterB, false, false, false},
      {"per-token B, per-channel A", CUDA_R_16BF, Scales::kOuterAB, false, false, false},
      {"aligned, f32 out", CUDA_R_32F, Scales::kScalarAligned, false, false, false},
  };
  const int shapes[][3] = {{2048, 4096, 4096}, {64, 6144, 4096}, {17, 4096, 14336}};
  for (const auto& s : shapes)
    for (const Variant& v : variants) probe(h, ws, ws_bytes, s[0], s[1], s[2], v);
  cudaFree(ws);
  cublasLtDestroy(h);
  return 0;
}
