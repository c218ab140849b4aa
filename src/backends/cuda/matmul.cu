// cuBLASLt GEMM (see matmul.h). cuBLASLt is column-major, so the row-major product
//   out[M,N] = x[M,K] · w[N,K]^T
// is issued as the column-major product out^T[N,M] = op_T(w)[N,K] · x^T[K,M]:
//   A = w as a K x N column-major matrix (ld K), transposed;  B = x as K x M (ld K);
//   C = D = out as N x M (ld N).
#include "matmul.h"

#include <cstdint>

#include "ab_switch.h"
#include "cuda_check.h"

namespace lamina::cuda {

cudaDataType_t cuda_data_type(DType dt) {
  switch (dt) {
    case DType::F32: return CUDA_R_32F;
    case DType::F16: return CUDA_R_16F;
    case DType::BF16: return CUDA_R_16BF;
    default: fail("no cuBLASLt type for dtype ", dtype_user_name(dt));
  }
}

LtGemm::LtGemm(size_t workspace_bytes, int sm_count_target)
    : workspace_bytes_(workspace_bytes),
      sm_count_target_(sm_count_target),
      fp8_fast_accum_(ab_switch_on("LAMINA_FP8_FAST_ACCUM")) {
  CUBLAS_CHECK(cublasLtCreate(&handle_));
  if (workspace_bytes_) CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
}

LtGemm::~LtGemm() {
  for (auto& [key, p] : plans_) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.op);
  }
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

LtGemm::Plan& LtGemm::plan_for(DType dt, int M, int N, int K, int align, int fp8, const float* a_scale,
                               const float* b_scale) {
  const Key key{static_cast<int>(dt), M, N, K, align, fp8};
  if (auto it = plans_.find(key); it != plans_.end()) return it->second;

  const cudaDataType_t type = cuda_data_type(dt);
  Plan p;
  CUBLAS_CHECK(cublasLtMatmulDescCreate(&p.op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  if (sm_count_target_ > 0) {
    const int32_t sms = sm_count_target_;
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET, &sms, sizeof(sms)));
  }
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  if (fp8) {  // the heuristic sees scaled inputs, as every later call has them
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &a_scale, sizeof(a_scale)));
    CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &b_scale, sizeof(b_scale)));
    if (fp8 == 1 + static_cast<int>(Fp8Scaling::kPerToken)) {  // B = x: one scale per column of B, a token;
      const cublasLtMatmulMatrixScale_t outer = CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F;  // A = w: per row
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_MODE, &outer, sizeof(outer)));
      CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_MODE, &outer, sizeof(outer)));
    }
    // Fast accumulation: what vLLM's and TensorRT-LLM's FP8 GEMMs run for inference; the bound on
    // its error at the longest rows is QuantMatmulOp.Fp8GemmLongRowsMatchTheExactProduct's.
    const int8_t fast_accum = fp8_fast_accum_ ? 1 : 0;
    CUBLAS_CHECK(
        cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast_accum, sizeof(fast_accum)));
  }
  // FP8: e4m3 inputs with per-tensor scales (pointers set per call in run_fp8), output in dt.
  const cudaDataType_t in_type = fp8 ? CUDA_R_8F_E4M3 : type;
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.a, in_type, K, N, K));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.b, in_type, K, M, K));
  CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&p.c, type, N, M, N));

  cublasLtMatmulPreference_t pref = nullptr;
  CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint32_t a32 = static_cast<uint32_t>(align);
  CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes_,
                                                    sizeof(workspace_bytes_)));
  for (auto attr : {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                    CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES})
    CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &a32, sizeof(a32)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0) {
    cublasLtMatrixLayoutDestroy(p.a);
    cublasLtMatrixLayoutDestroy(p.b);
    cublasLtMatrixLayoutDestroy(p.c);
    cublasLtMatmulDescDestroy(p.op);
    fail("cuBLASLt has no algorithm for ", fp8 ? "fp8 -> " : "", dtype_user_name(dt), " matmul M=", M, " N=", N, " K=", K,
         " (alignment ", align, " bytes; status ", cublasLtGetStatusName(st), ")");
  }
  p.algo = result.algo;
  return plans_.emplace(key, p).first->second;
}

void LtGemm::run(DType dt, void* out, const void* x, const void* w, int M, int N, int K, cudaStream_t stream,
                 bool accumulate) {
  if (M <= 0 || N <= 0) return;
  LAMINA_CHECK(K > 0, "matmul with K=", K);
  // Largest power of two (<= 256) dividing every pointer, as the heuristic must be told.
  const uintptr_t bits = reinterpret_cast<uintptr_t>(out) | reinterpret_cast<uintptr_t>(x) |
                         reinterpret_cast<uintptr_t>(w) | uintptr_t{256};
  const int align = static_cast<int>(bits & (~bits + 1));
  Plan& p = plan_for(dt, M, N, K, align);
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, out, p.c, out, p.c, &p.algo, workspace_,
                              workspace_bytes_, stream));
}

void LtGemm::run_fp8(DType dt, void* out, const void* xq, const float* x_scale, Fp8Scaling x_scaling, const void* wq,
                     const float* w_scale, int M, int N, int K, cudaStream_t stream, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  LAMINA_CHECK(K > 0 && K % 16 == 0, "fp8 matmul needs K a multiple of 16, got K=", K);
  const uintptr_t bits = reinterpret_cast<uintptr_t>(out) | reinterpret_cast<uintptr_t>(xq) |
                         reinterpret_cast<uintptr_t>(wq) | uintptr_t{256};
  const int align = static_cast<int>(bits & (~bits + 1));
  LAMINA_CHECK(align >= 16, "fp8 matmul needs 16-byte aligned operands");
  // cuBLASLt answers NOT_SUPPORTED at cublasLtMatmul (not at the heuristic) for a scale pointer
  // that is only 4-byte aligned (bench/fp8_gemm_probe.cu).
  LAMINA_CHECK(((reinterpret_cast<uintptr_t>(x_scale) | reinterpret_cast<uintptr_t>(w_scale)) & 15) == 0,
               "fp8 matmul needs 16-byte aligned scale pointers");
  Plan& p = plan_for(dt, M, N, K, align, 1 + static_cast<int>(x_scaling), w_scale, x_scale);
  // A = w (scale w_scale), B = x (scale x_scale): D = alpha * a_scale * b_scale * (A^T B) + beta * C.
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &w_scale, sizeof(w_scale)));
  CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(p.op, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &x_scale, sizeof(x_scale)));
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  CUBLAS_CHECK(cublasLtMatmul(handle_, p.op, &alpha, wq, p.a, xq, p.b, &beta, out, p.c, out, p.c, &p.algo, workspace_,
                              workspace_bytes_, stream));
}

}  // namespace lamina::cuda
