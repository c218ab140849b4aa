// cuBLASLt GEMM for the CUDA backend: out[M,N] = x[M,K] · w[N,K]^T (nn.Linear layout), inputs and
// output in the activation dtype, fp32 accumulation (no TF32 for fp32). Descriptors are cached per
// (dtype, M, N, K, pointer alignment), so after a shape's first call a matmul only enqueues work
// (graph-capturable; the workspace is allocated once). The heuristic's algorithm is chosen once
// per bucket of M (algorithm_rows) and reused for every M in it: asked per exact M, the
// heuristic picks a kernel tiled for that M (a 256x104 tile at M = 104), and the first launch of
// each new kernel loads it (up to ~65 ms on an H100), which a serving run's ever-changing step
// sizes paid mid-run. Backend::prepare_matmul plans every bucket ahead.
#pragma once
#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <map>
#include <tuple>
#include <vector>

#include "common/dtype.h"

namespace lamina::cuda {

// How the FP8 GEMM's activations are scaled: one scale for all of x, or one per token (row).
enum class Fp8Scaling { kPerTensor, kPerToken };

class LtGemm {
 public:
  // sm_count_target > 0: plans are chosen for that many SMs (CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET),
  // for a GEMM that shares the GPU with a kernel on another stream; 0: all of the GPU's.
  explicit LtGemm(size_t workspace_bytes = 32u << 20, int sm_count_target = 0);
  ~LtGemm();
  LtGemm(const LtGemm&) = delete;
  LtGemm& operator=(const LtGemm&) = delete;

  // accumulate: out += x · w^T, out read as the GEMM's C (beta 1) and the sum rounded once.
  void run(DType dt, void* out, const void* x, const void* w, int M, int N, int K, cudaStream_t stream,
           bool accumulate = false);
  // FP8 (matmul_fp8.cu): out[m,n] (dtype dt) = w_scale(n) * x_scale(m) * (xq[M,K] · wq[N,K]^T)[m,n]
  // with xq and wq float8 e4m3 and the scales device floats, 16-byte aligned. kPerTensor:
  // x_scale(m) = *x_scale, w_scale(n) = *w_scale. kPerToken: x_scale[m] and w_scale[n], cuBLASLt's
  // outer-vector scale mode (which it takes on both operands or neither). Accumulates in the FP8
  // tensor cores' own accumulator without promoting partial sums to fp32 (cuBLASLt's fast
  // accumulation, 12-18 % faster at the serving shapes on an H100), unless LAMINA_FP8_FAST_ACCUM=0.
  // Needs compute capability 8.9+; throws if cuBLASLt refuses the plan (the caller tries another
  // mode or dequantizes).
  // accumulate: as run's (the scales apply to the product only).
  void run_fp8(DType dt, void* out, const void* xq, const float* x_scale, Fp8Scaling x_scaling, const void* wq,
               const float* w_scale, int M, int N, int K, cudaStream_t stream, bool accumulate = false);

  // The M whose heuristic answer serves M: M itself up to 8, the next power of two up to 256, the
  // next multiple of 256 above (M itself with LAMINA_GEMM_ROW_BUCKETS=0).
  static int algorithm_rows(int M);
  // One M in [lo, hi] for each bucket that meets the range (its top, or hi), largest first: the
  // rows that plan (and load) every algorithm a matmul of up to hi rows can take. Empty with
  // LAMINA_GEMM_ROW_BUCKETS=0.
  static std::vector<int> bucket_rows(int lo, int hi);
  // cublasLtMatmulAlgoGetHeuristic calls so far (tests: a planned bucket asks no more).
  int heuristic_calls() const { return heuristic_calls_; }

 private:
  struct Plan {
    cublasLtMatmulDesc_t op = nullptr;
    cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
    cublasLtMatmulAlgo_t algo{};
  };
  // dtype, M, N, K, min alignment in bytes, fp8 inputs (0: no; 1 + Fp8Scaling: their x scales)
  using Key = std::tuple<int, int, int, int, int, int>;
  static void destroy(const Plan& p);  // its descriptors
  // The heuristic's first algorithm for the op and layouts, or throws naming the shape.
  cublasLtMatmulAlgo_t heuristic(const Plan& p, DType dt, int M, int N, int K, int align, int fp8);
  Plan& plan_for(DType dt, int M, int N, int K, int align, int fp8 = 0, const float* a_scale = nullptr,
                 const float* b_scale = nullptr);

  cublasLtHandle_t handle_ = nullptr;
  void* workspace_ = nullptr;
  size_t workspace_bytes_ = 0;
  int sm_count_target_ = 0;
  bool fp8_fast_accum_;  // LAMINA_FP8_FAST_ACCUM, read when the LtGemm is made
  int heuristic_calls_ = 0;
  std::map<Key, Plan> plans_;                  // per exact M
  std::map<Key, cublasLtMatmulAlgo_t> algos_;  // per algorithm_rows(M)
};

// Returns the CUDA data type of an activation dtype (CUDA_R_32F, CUDA_R_16F, CUDA_R_16BF).
cudaDataType_t cuda_data_type(DType dt);

}  // namespace lamina::cuda
