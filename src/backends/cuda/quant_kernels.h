// Host entry points of the quantized-weight kernels (common/quant.h formats). Same rules as
// kernels.h: each launch_x enqueues on `stream`, no allocation, no synchronization. `dt` is the
// activation dtype (F32, F16 or BF16); weight data and scales are device memory in the layout of
// common/quant.h (scales float32).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "common/dtype.h"
#include "common/quant.h"
#include "ops/backend.h"

namespace lamina::cuda {

struct RopeKvArgs;  // gemv_epilogue.cuh

// A quantized [N, K] weight on the device.
struct DeviceQuantWeight {
  WeightFormat format = WeightFormat::Int8PerChannel;
  const void* data = nullptr;    // int8 / e4m3 [N, K], or packed int4 [N, K/2]
  const float* scales = nullptr; // [N] / [1] / [N, K/group]
  int group_size = 0;            // Int4Group only
  bool int4_tiles = false;       // Int4Group data in the int4 tile layout (mma_layout.h), not [N, K/2]
};

// gemv_quant.cu — out[M,N] = x[M,K] · dequant(w)[N,K]^T for M <= kGemvMaxM (kernels.h), reading
// each weight byte once (16-byte loads), fp32 accumulation.
void launch_gemv_quant(DType dt, void* out, const void* x, const DeviceQuantWeight& w, int M, int N, int K,
                       cudaStream_t stream);

// The gate_up GEMV with its SwiGLU: out[M, F] = silu(x · gate^T) * (x · up^T) for an MLP's
// quantized gate_up [2F, K] weight, M <= kGemvMaxM. False (nothing launched) where the weight's
// layout has no such kernel (int4 tiles with F % 16 != 0): the caller runs the GEMV, then silu_mul.
bool launch_gemv_quant_gate_up(DType dt, void* out, const void* x, const DeviceQuantWeight& w, int M, int F, int K,
                               cudaStream_t stream);

// bench_kernels' shape sweep of the fp8 GEMV at M = 1 (bf16 activations): R rows and B threads a
// block, R in {2, 4, 8} and B in {64, 128, 256} (not 2 x 64); false for other shapes.
bool launch_gemv_fp8_variant(int rows_per_block, int threads, const void* x, const DeviceQuantWeight& w, void* out,
                             int N, int K, cudaStream_t stream);

// The qkv GEMV with rope and the KV write fused in (as launch_qkv_rope_kv_write_gemv, kernels.h)
// over int8 or fp8 weights, or int4 ones in the tile layout, M <= kGemvMaxM. False (nothing
// launched) for other formats, head_dim not a multiple of 4 (of 32 for int4), K not a multiple of
// 16 or unaligned operands: the caller runs the GEMV, then rope_kv_write.
bool launch_gemv_quant_qkv_rope_kv_write(DType dt, void* qkv, const void* x, const DeviceQuantWeight& w, int M, int K,
                                        const int32_t* positions, const int32_t* slots, const float* inv_freq,
                                        KVCacheLayer cache, const AttentionShape& s, cudaStream_t stream);

// gemv_int4_tiles.cu — the same for int4 weights in the tile layout, on the tensor cores (F16 or
// BF16 activations, M <= 8, int4_tiles_fit). The _variant form (bench_kernels) takes the block's
// warps (4, 8; 16 with x in shared memory), 64-column chunks a lane per load group (1, 2, 4; with
// x in shared memory 2, 4, 8, or 2, 4 at 16 warps) and where x is read (shared memory, staged once
// a block, or registers); false for other shapes.
void launch_gemv_int4_tiles(DType dt, void* out, const void* x, const DeviceQuantWeight& w, int M, int N, int K,
                            cudaStream_t stream);
// The gate_up GEMV with its SwiGLU over an int4 tile [2F, K] weight: out[M, F] = silu(x · gate^T) *
// (x · up^T). False (nothing launched) when F is no multiple of 16.
bool launch_gemv_int4_tiles_gate_up(DType dt, void* out, const void* x, const DeviceQuantWeight& w, int M, int F,
                                    int K, cudaStream_t stream);
// The qkv GEMV with rope and the KV write (as launch_gemv_quant_qkv_rope_kv_write) over an int4
// tile weight, rope from make_rope_kv_args (gemv_epilogue.cuh). False (nothing launched) when
// head_dim is no multiple of 32.
bool launch_gemv_int4_tiles_qkv_rope_kv_write(DType dt, void* qkv, const void* x, const DeviceQuantWeight& w, int M,
                                              int K, const RopeKvArgs& rope, cudaStream_t stream);
bool launch_gemv_int4_tiles_variant(int warps, int chunks_per_group, bool shared_x, DType dt, void* out,
                                    const void* x, const DeviceQuantWeight& w, int M, int N, int K,
                                    cudaStream_t stream);
// The same for the gate_up GEMV with its SwiGLU (N = F outputs of a [2F, K] weight; `warps` a block,
// half on the gate tile, half on its up tile; x in shared memory): warps 4, 8 or 16, chunks 2, 4 or 8.
bool launch_gemv_int4_tiles_gate_up_variant(int warps, int chunks_per_group, DType dt, void* out, const void* x,
                                            const DeviceQuantWeight& w, int M, int F, int K, cudaStream_t stream);

// The streaming int4 tile GEMV (each warp's chunks copied into shared memory by cp.async, `depth`
// in flight a warp; x staged in shared memory) for bench_kernels and the tests: warps 4, 8 or 16
// and depth 4 or 8 (16 warps: 2, 4 or 8); gate_up: N = F outputs of a [2F, K] weight with its
// SwiGLU, warps 8 or 16, depth 4 or 8. False (nothing launched) for other shapes or where its
// shared memory would not fit (M x K too large).
bool launch_gemv_int4_stream_variant(int warps, int depth, bool gate_up, DType dt, void* out, const void* x,
                                     const DeviceQuantWeight& w, int M, int N, int K, cudaStream_t stream);

// int4_tiles.cu — whether an int4 [N, K] weight with this group size takes the tile layout
// (N % 16 == 0, K % 64 == 0, group a multiple of 64 dividing K); the conversion of packed
// [N, K/2] int4 data into it (out and in: N*K/2 bytes of device memory, not overlapping); and the
// tile layout's dequantization (as launch_dequantize_weight).
bool int4_tiles_fit(int N, int K, int group);
void launch_int4_to_tiles(void* out, const void* in, int N, int K, cudaStream_t stream);
void launch_dequantize_int4_tiles(DType dt, void* out, const DeviceQuantWeight& w, int N, int K, cudaStream_t stream);

// dequantize.cu — out[N,K] (activation dtype) = dequant(w): the scratch weight of the
// dequantize-then-GEMM path for M > kGemvMaxM.
void launch_dequantize_weight(DType dt, void* out, const DeviceQuantWeight& w, int N, int K, cudaStream_t stream);

// matmul_fp8.cu — dynamic FP8 quantization of activations for the FP8 GEMM, saturating:
//   per tensor: amax = max |x| over all n elements, *x_scale = amax / 448, xq = e4m3(x / *x_scale)
//               (amax_bits: device scratch for the max, as float bits);
//   per token:  x_scales[m] = max_k |x[m, k]| / 448, xq[m, :] = e4m3(x[m, :] / x_scales[m]) for x [M, K].
void launch_quantize_fp8_dynamic(DType dt, const void* x, size_t n, void* xq, unsigned* amax_bits, float* x_scale,
                                 cudaStream_t stream);
void launch_quantize_fp8_per_token(DType dt, const void* x, int M, int K, void* xq, float* x_scales,
                                   cudaStream_t stream);
// The same per-token quantization of silu(gate_up[:, :F]) * gate_up[:, F:] (gate_up [M, 2F]), the
// product rounded to the activation dtype first: the same bits as launch_silu_mul and then
// launch_quantize_fp8_per_token of its output, in one pass. False (nothing done) where the fused
// kernel does not take it (32-bit activations, F not a multiple of 8, rows over 16384, unaligned).
bool launch_silu_mul_quantize_fp8_per_token(DType dt, const void* gate_up, int M, int F, void* xq, float* x_scales,
                                            cudaStream_t stream);

}  // namespace lamina::cuda
