// Host entry points of the CUDA kernels, one group per .cu file. Every launch_x enqueues work on
// `stream` and returns: no allocation, no synchronization (so a decode step can be captured into a
// CUDA graph). Element type `dt` is the activation dtype (F32, F16 or BF16); buffers are device
// memory; shapes follow ops/backend.h ([rows, cols], row-major).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "ops/backend.h"

namespace lamina::cuda {

// embedding.cu — out[T,H] = table[ids[t], :]
void launch_embedding(DType dt, void* out, const int32_t* ids, const void* table, int T, int H, cudaStream_t stream);

// rms_norm.cu — out[T,H] = x / rms(x) * w
void launch_rms_norm(DType dt, void* out, const void* x, const void* w, int T, int H, float eps, cudaStream_t stream);
// rms_norm.cu — residual[T,H] += x; out = rms_norm(residual) * w  (one pass over the row)
void launch_add_rms_norm(DType dt, void* residual, const void* x, void* out, const void* w, int T, int H, float eps,
                         cudaStream_t stream);
// launch_add_rms_norm that also writes out's per-token FP8 quantization for the FP8 GEMM (xq [T, H]
// e4m3, scales [T]: the bytes launch_quantize_fp8_per_token would write from out) in the same pass.
// out may be nullptr: then only xq and the scales are written (residual still is); residual may be
// nullptr: then out is the norm of x itself, as launch_rms_norm's (no add). False (nothing
// run) where its one-row-in-registers kernel does not apply (16-bit activations, 16-byte aligned
// rows of at most 8192 elements, xq 8-byte aligned).
bool launch_add_rms_norm_quantize_fp8(DType dt, void* residual, const void* x, void* out, const void* w, int T, int H,
                                      float eps, void* xq, float* scales, cudaStream_t stream);
// rms_norm.cu — residual[n] += x[n]
void launch_add(DType dt, void* residual, const void* x, size_t n, cudaStream_t stream);

// silu_mul.cu — out[T,F] = silu(gate_up[:, :F]) * gate_up[:, F:]
void launch_silu_mul(DType dt, void* out, const void* gate_up, int T, int F, cudaStream_t stream);

// gather.cu — out[i,H] = x[rows[i], :]
void launch_gather_rows(DType dt, void* out, const void* x, const int32_t* rows, int num_rows, int H,
                        cudaStream_t stream);

// fed_inputs.cu — Backend::resolve_fed_ids
void launch_resolve_fed_ids(int32_t* ids, const int32_t* chosen, int T, cudaStream_t stream);
// fed_inputs.cu — Backend::advance_fed_inputs (T <= 1024)
void launch_advance_fed_inputs(int32_t* ids, int32_t* positions, const int32_t* logit_rows, const int32_t* chosen,
                               int T, cudaStream_t stream);

// mapped_copy.cu — dst[i] = src[i] for i < bytes, dst in mapped pinned host memory (the device
// address of it): a small download by one kernel instead of a copy-engine transfer
// (PinnedStaging::start_download).
void launch_copy_to_mapped(void* dst, const void* src, size_t bytes, cudaStream_t stream);

// rope_kv_write.cu — NeoX rotate-half of q and k inside qkv[T, (Hq+2Hkv)*D], then k, v into the
// paged cache at the pool row of (sequence row slots[t], position positions[t]).
void launch_rope_kv_write(DType dt, void* qkv, const int32_t* positions, const int32_t* slots, const float* inv_freq,
                          KVCacheLayer cache, const AttentionShape& s, int T, cudaStream_t stream);

// attention.cu — causal GQA attention of qkv's q over the cache (see Backend::attention).
// `workspace` (device, workspace_bytes): its first kAttentionCounterBytes are the decode kernel's
// per-(token, head group) arrival counters, which must be zero before the first launch (zero them
// once when the workspace is allocated; every launch leaves them zero); the rest holds split-K
// partial results.
inline constexpr size_t kAttentionCounterBytes = size_t(256) << 10;
struct AttentionLaunch {
  void* workspace = nullptr;
  size_t workspace_bytes = 0;
  int num_sms = 132;
  int cc_major = 9;  // compute capability: the bulk-copy decode kernel needs 9 (Hopper) or later
  // A second stream and two events (no timing) of the same device: a step with both prompt tiles
  // and decode tokens runs the prefill kernel there, beside the decode kernel on the main stream
  // (fork after what came before, join before what follows). Null: one after the other.
  cudaStream_t side_stream = nullptr;
  cudaEvent_t fork = nullptr, join = nullptr;
};
void launch_attention(DType dt, void* out, const void* qkv, const int32_t* positions, const int32_t* slots,
                      KVCacheLayer cache, const AttentionShape& s, int T, const AttentionLaunch& how,
                      cudaStream_t stream);
// Tokens up to this many in one step go through the split-K decode kernel only; larger steps also
// run the tiled (flash) prefill kernel over tiles of consecutive tokens of one sequence.
inline constexpr int kAttentionDecodeMaxTokens = 16;

// gemv.cu — out[M,N] = x[M,K] · w[N,K]^T for M <= kGemvMaxM: weight-bandwidth-bound, w read once.
inline constexpr int kGemvMaxM = 8;
void launch_gemv(DType dt, void* out, const void* x, const void* w, int M, int N, int K, cudaStream_t stream);
// out[M,F] = silu(x · gate^T) * (x · up^T) for M <= kGemvMaxM, where gate_up = [gate; up] is an
// MLP's [2F, K] weight: the gate_up projection with its SwiGLU, in one pass.
void launch_gate_up_swiglu_gemv(DType dt, void* out, const void* x, const void* gate_up, int M, int F, int K,
                                cudaStream_t stream);
// The attention's qkv projection with rope_kv_write fused in, for M <= kGemvMaxM tokens: qkv[M, (Hq +
// 2 Hkv) D] = x[M, K] · w^T with q and k rotated, and k, v written to the cache as
// launch_rope_kv_write does (same arguments). False (nothing launched) for shapes it does not take
// (M > kGemvMaxM, head_dim % 4 != 0, K not a multiple of a 16-byte chunk, unaligned x or w).
bool launch_qkv_rope_kv_write_gemv(DType dt, void* qkv, const void* x, const void* w, int M, int K,
                                   const int32_t* positions, const int32_t* slots, const float* inv_freq,
                                   KVCacheLayer cache, const AttentionShape& s, cudaStream_t stream);
// How many bytes of cache rows of earlier steps that GEMV, over a weight of w_bytes on the current
// device, asks L2 for (0: none), so that the attention after it reads them from L2. Only where the
// weight is at most half the L2, so that the rows survive its stream (Llama-3-8B's qkv at tp 2:
// 25 MB of an H100's or H200's 50 MB; at tp 1 its 50 MB push them out, and asking would only cost
// DRAM time), and only rows that fit half of what the weight leaves of the L2 (longer contexts
// ask for nothing). LAMINA_KV_L2_PREFETCH=0 never asks, =2 always asks (A/B).
uint32_t kv_l2_prefetch_budget(size_t w_bytes);
// The M = 1 launch shapes a GEMV's tuning chooses among (gemv_tuner.h), by name ("R4 U1": 4 rows
// of w a block, 1 16-byte chunk of each row per load group), for the plain GEMV or the gate_up +
// SwiGLU one; and a launch of shape `index` of that list (bench_kernels' sweep; the tests check
// that every shape gives the same bits). Needs K a multiple of a 16-byte chunk and aligned x, w.
std::vector<std::string> gemv_one_token_shapes(bool gate_up_swiglu);
void launch_gemv_one_token_shape(DType dt, int index, bool gate_up_swiglu, void* out, const void* x, const void* w,
                                 int N, int K, cudaStream_t stream);

}  // namespace lamina::cuda
