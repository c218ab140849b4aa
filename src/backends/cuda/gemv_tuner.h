// Launch-shape tuning for the decode GEMVs, done once per shape on the GPU it runs on.
//
// A batch-1 GEMV is a weight stream; how close it gets to copy bandwidth depends on its block
// shape (rows a block, loads in flight), and the best shape depends on both the matrix and the GPU:
// on an H100 four rows a block win on Llama-3-8B's projections, on an H200 at Llama-3-70B's tp 4
// slices two rows a block or two chunks in flight win by 2-9 % (docs/performance.md). So the first
// time a shape runs outside a graph capture, every candidate launch is timed on scratch copies of a
// matrix of its size (more copies than the L2 holds, as in the real step, where each layer's
// weights are new) and the fastest is kept for the process. The candidates compute bit-identical
// results (same per-thread order and block reduction), so the choice changes speed only.
//
// LAMINA_GEMV_TUNING=0 keeps the built-in choice everywhere; =log also prints each choice to stderr.
// LAMINA_GEMV_SHAPES names a shape for given matrices, taken over tuning (gemv_shape_override.h).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <string>
#include <vector>

namespace lamina::cuda {

// Launches candidate `index` over weights w (weight_bytes), input x and output out (scratch).
using GemvCandidateLaunch = std::function<void(int index, const void* w, const void* x, void* out, cudaStream_t)>;

struct GemvTuneRequest {
  std::string key;          // names the kernel family and shape, e.g. "bf16 plain M1 N8192 K2048"
  std::string matrix;       // as LAMINA_GEMV_SHAPES names it, e.g. "gemv:8192x2048" (gemv_shape_override.h)
  size_t weight_bytes = 0;  // one matrix
  size_t x_bytes = 0, out_bytes = 0;
  std::vector<std::string> candidates;  // a name for each launch shape, e.g. "R4 U1"
  int fallback = 0;  // the built-in choice: kept unless another is at least 1% faster
};

// The candidate to launch for `req` on the current device: named by LAMINA_GEMV_SHAPES, else
// remembered from an earlier call, else timed now on `stream` (which must not be capturing; it is
// synchronized), else `req.fallback` when tuning is off, the stream is capturing, or scratch
// memory is short.
int tuned_gemv_choice(const GemvTuneRequest& req, cudaStream_t stream, const GemvCandidateLaunch& launch);

// "device 0 <key>: <candidate name>" for every choice made in this process (bench_kernels prints them).
std::vector<std::string> gemv_tuning_choices();

}  // namespace lamina::cuda
