// cuBLASLt GEMM (see matmul.h). cuBLASLt is column-major, so the row-major product
//   out[M,N] = x[M,K] · w[N,K]^T
// is issued as the column-major product out^T[N,M] = op_T(w)[N,K] · x^T[K,M]:
//   A = w as a K x N column-major matrix (ld K), transposed;  B = x as K x M (ld K);
//   C = D = out as N x M (ld N).
#include "matmul.h"

#include <algorithm>
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

namespace {
bool row_buckets_on() {
  static const bool on = ab_switch_on("LAMINA_GEMM_ROW_BUCKETS");
  return on;
}
}  // namespace

LtGemm::LtGemm(size_t workspace_bytes, int sm_count_target)
    : workspace_bytes_(workspace_bytes),
      sm_count_target_(sm_count_target),
      fp8_fast_accum_(ab_switch_on("LAMINA_FP8_FAST_ACCUM")) {
  CUBLAS_CHECK(cublasLtCreate(&handle_));
  if (workspace_bytes_) CUDA_CHECK(cudaMalloc(&workspace_, workspace_bytes_));
}

void LtGemm::destroy(const Plan& p) {
  if (p.a) cublasLtMatrixLayoutDestroy(p.a);
  if (p.b) cublasLtMatrixLayoutDestroy(p.b);
  if (p.c) cublasLtMatrixLayoutDestroy(p.c);
  if (p.op) cublasLtMatmulDescDestroy(p.op);
}

LtGemm::~LtGemm() {
  for (auto& [key, p] : plans_) destroy(p);
  if (workspace_) cudaFree(workspace_);
  if (handle_) cublasLtDestroy(handle_);
}

LtGemm::Plan& LtGemm::plan_for(DType dt, int M, int N, int K, int align, int fp8, const float* a_scale,
                               const float* b_scale) {
  const Key key{static_cast<int>(dt), M, N, K, align, fp8};
  if (auto it = plans_.find(key); it != plans_.end()) return it->second;

  // Descriptors made here and not yet in plans_ are destroyed if a step below throws.
  struct Guard {
    Plan plan;
    ~Guard() { destroy(plan); }
  };
  const cudaDataType_t type = cuda_data_type(dt);
  Guard made;
  Plan& p = made.plan;
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

  // The bucket's algorithm, asked once at the bucket's M; an algorithm cuBLASLt will not take at
  // this exact M (AlgoCheck) gives way to the heuristic's answer at M itself.
  const int rows = algorithm_rows(M);
  const Key bucket{static_cast<int>(dt), rows, N, K, align, fp8};
  auto found = algos_.find(bucket);
  if (found == algos_.end() && rows == M) {
    found = algos_.emplace(bucket, heuristic(p, dt, M, N, K, align, fp8)).first;
  } else if (found == algos_.end()) {
    Guard rows_layouts;  // B and C at the bucket's M
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&rows_layouts.plan.b, in_type, K, rows, K));
    CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&rows_layouts.plan.c, type, N, rows, N));
    const Plan at_rows{p.op, p.a, rows_layouts.plan.b, rows_layouts.plan.c, {}};
    found = algos_.emplace(bucket, heuristic(at_rows, dt, rows, N, K, align, fp8)).first;
  }
  p.algo = found->second;
  cublasLtMatmulHeuristicResult_t checked{};
  if (rows != M && (cublasLtMatmulAlgoCheck(handle_, p.op, p.a, p.b, p.c, p.c, &p.algo, &checked) !=
                        CUBLAS_STATUS_SUCCESS ||
                    checked.workspaceSize > workspace_bytes_))
    p.algo = heuristic(p, dt, M, N, K, align, fp8);
  const Plan done = p;
  made.plan = Plan{};  // plans_ owns them now
  return plans_.emplace(key, done).first->second;
}

cublasLtMatmulAlgo_t LtGemm::heuristic(const Plan& p, DType dt, int M, int N, int K, int align, int fp8) {
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
  ++heuristic_calls_;
  const cublasStatus_t st =
      cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.c, p.c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  if (st != CUBLAS_STATUS_SUCCESS || found == 0)
    fail("cuBLASLt has no algorithm for ", fp8 ? "fp8 -> " : "", dtype_user_name(dt), " matmul M=", M, " N=", N, " K=", K, " (alignment ",
         align, " bytes; status ", cublasLtGetStatusName(st), ")");
  return result.algo;
}

int LtGemm::algorithm_rows(int M) {
  if (!row_buckets_on() || M <= 8) return M;
  if (M <= 256) {
    int rows = 16;
    while (rows < M) rows *= 2;
    return rows;
  }
  return (M + 255) / 256 * 256;
}

std::vector<int> LtGemm::bucket_rows(int lo, int hi) {
  std::vector<int> rows;
  if (!row_buckets_on()) return rows;  // every M its own bucket: nothing to plan ahead
  lo = std::max(lo, 1);
  for (int M = hi; M >= lo;) {
    rows.push_back(M);
    const int top = algorithm_rows(M);
    while (M >= lo && algorithm_rows(M) == top) --M;  // past the bucket's least M
  }
  return rows;
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
