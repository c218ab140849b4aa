// Diagnostic: which cuBLASLt FP8 (e4m3) GEMM configurations this GPU + cuBLASLt accept.
// Tries the backend's configuration (matmul.cu: TN, e4m3 x e4m3 -> bf16, per-tensor scale
// pointers) and variations of it, for every algorithm the heuristic offers, and prints the
// status of each cublasLtMatmul call. Standalone (only CUDA), built by bench/CMakeLists.txt:
//   build-device/bench/fp8_gemm_probe            (CUBLASLT_LOG_LEVEL=1 adds cuBLASLt's reasons)
#include <cublasLt.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

#define CK(x)                                                                       \
  do {                                                                              \
    cudaError_t e_ = (x);                                                           \
    if (e_ != cudaSuccess) {                                                        \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)

struct Variant {
  const char* name;
  cudaDataType_t out_type;  // C and D
  bool scales;              // set A/B scale pointers
  bool fast_accum;
  bool beta_one;            // beta = 1 (C read) instead of 0
};

void probe(cublasLtHandle_t h, void* ws, size_t ws_bytes, int M, int N, int K, const Variant& v) {
  void *a, *b, *d;
  float* scales;
  CK(cudaMalloc(&a, size_t(N) * K));
  CK(cudaMalloc(&b, size_t(M) * K));
  CK(cudaMalloc(&d, size_t(M) * N * 4));
  CK(cudaMalloc(&scales, 2 * sizeof(float)));
  CK(cudaMemset(a, 0x38, size_t(N) * K));  // e4m3 1.0
  CK(cudaMemset(b, 0x38, size_t(M) * K));
  const float one[2] = {1.0f, 1.0f};
  CK(cudaMemcpy(scales, one, sizeof(one), cudaMemcpyHostToDevice));

  cublasLtMatmulDesc_t op;
  cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32F, CUDA_R_32F);
  const cublasOperation_t ta = CUBLAS_OP_T, tb = CUBLAS_OP_N;
  cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof(ta));
  cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof(tb));
  if (v.scales) {
    const float* sa = scales;
    const float* sb = scales + 1;
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &sa, sizeof(sa));
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &sb, sizeof(sb));
  }
  if (v.fast_accum) {
    const int8_t on = 1;
    cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &on, sizeof(on));
  }
  cublasLtMatrixLayout_t la, lb, lc;
  cublasLtMatrixLayoutCreate(&la, CUDA_R_8F_E4M3, K, N, K);
  cublasLtMatrixLayoutCreate(&lb, CUDA_R_8F_E4M3, K, M, K);
  cublasLtMatrixLayoutCreate(&lc, v.out_type, N, M, N);
  cublasLtMatmulPreference_t pref;
  cublasLtMatmulPreferenceCreate(&pref);
  cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws_bytes, sizeof(ws_bytes));
  cublasLtMatmulHeuristicResult_t res[8];
  int found = 0;
  const cublasStatus_t hs = cublasLtMatmulAlgoGetHeuristic(h, op, la, lb, lc, lc, pref, 8, res, &found);
  std::printf("%-28s M=%-5d N=%-5d K=%-5d heuristic %s, %d algos:", v.name, M, N, K, cublasLtGetStatusName(hs), found);
  const float alpha = 1.0f, beta = v.beta_one ? 1.0f : 0.0f;
  for (int i = 0; i < found; ++i) {
    const cublasStatus_t s =
        cublasLtMatmul(h, op, &alpha, a, la, b, lb, &beta, d, lc, d, lc, &res[i].algo, ws, ws_bytes, nullptr);
    const cudaError_t e = cudaDeviceSynchronize();
    std::printf(" %s%s", cublasLtGetStatusName(s), e == cudaSuccess ? "" : "(cuda error)");
  }
  std::printf("\n");
  cublasLtMatmulPreferenceDestroy(pref);
  cublasLtMatrixLayoutDestroy(la);
  cublasLtMatrixLayoutDestroy(lb);
  cublasLtMatrixLayoutDestroy(lc);
  cublasLtMatmulDescDestroy(op);
  cudaFree(a);
  cudaFree(b);
  cudaFree(d);
  cudaFree(scales);
}

}  // namespace

int main() {
  int dev = 0;
  cudaDeviceProp prop{};
  CK(cudaGetDeviceProperties(&prop, dev));
  std::printf("%s, compute capability %d.%d, cuBLASLt %zu\n", prop.name, prop.major, prop.minor, cublasLtGetVersion());
  cublasLtHandle_t h;
  cublasLtCreate(&h);
  const size_t ws_bytes = 32u << 20;
  void* ws;
  CK(cudaMalloc(&ws, ws_bytes));
  const Variant variants[] = {
      {"backend (bf16 out, scales)", CUDA_R_16BF, true, false, false},
      {"bf16 out, no scales", CUDA_R_16BF, false, false, false},
      {"bf16 out, scales, fast acc", CUDA_R_16BF, true, true, false},
      {"f32 out, scales", CUDA_R_32F, true, false, false},
      {"f16 out, scales", CUDA_R_16F, true, false, false},
      {"bf16 out, scales, beta 1", CUDA_R_16BF, true, false, true},
  };
  const int shapes[][3] = {{2048, 4096, 4096}, {64, 6144, 4096}, {17, 4096, 14336}};
  for (const auto& s : shapes)
    for (const Variant& v : variants) probe(h, ws, ws_bytes, s[0], s[1], s[2], v);
  cudaFree(ws);
  cublasLtDestroy(h);
  return 0;
}
