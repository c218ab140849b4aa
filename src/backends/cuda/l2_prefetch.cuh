// Weight prefetch into L2 for the decode GEMVs (gemv.cu, gemv_quant.cu).
// A GEMV launched with PDL (pdl.cuh) has its first wave of blocks resident while the kernel
// before it finishes; that kernel is often latency-bound and moves little data (decode attention,
// an RMSNorm), so HBM idles. Before waiting, each first-wave block asks L2 for its own weight rows
// and for the rows of `ahead` blocks one, two, ... waves later: the weights stream in during the
// wait. Prefetches are hints: a wrong guess costs bandwidth, never correctness.
// LAMINA_L2_PREFETCH=0 in the environment turns it off (for comparisons).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>

namespace lamina::cuda {

struct L2Prefetch {
  int wave = 0;   // blocks resident at once (SMs x blocks per SM); 0: no prefetch
  int ahead = 0;  // later waves whose rows a first-wave block also asks for
};

__device__ __forceinline__ void prefetch_l2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// w: the weight matrix (bytes); each block owns block_bytes of it, contiguous, in block order.
__device__ __forceinline__ void prefetch_block_rows(const char* w, size_t block_bytes, size_t total_bytes,
                                                    const L2Prefetch& pf) {
  if (static_cast<int>(blockIdx.x) >= pf.wave) return;  // later blocks start after the wait anyway
  for (int s = 0; s <= pf.ahead; ++s) {
    const size_t begin = (static_cast<size_t>(blockIdx.x) + static_cast<size_t>(s) * pf.wave) * block_bytes;
    if (begin >= total_bytes) return;
    const size_t end = begin + block_bytes < total_bytes ? begin + block_bytes : total_bytes;
    for (size_t off = begin + threadIdx.x * 128u; off < end; off += blockDim.x * 128u) prefetch_l2(w + off);
  }
}

// Blocks of `kernel` resident at once on the current GPU; 0 when unknown. The occupancy query
// is made outside graph capture (the first, direct run of a recorded step) and cached per
// (kernel, device); under capture an unknown kernel gets 0 (no prefetch) rather than a query.
int resident_blocks(const void* kernel, int threads, cudaStream_t stream);

// The prefetch plan for a kernel launched with `threads` threads a block, `grid` blocks of
// block_bytes each: at most kBudget bytes asked for ahead of need (L2 is 50 MB on an H100).
inline L2Prefetch plan_l2_prefetch(const void* kernel, int threads, int grid, size_t block_bytes,
                                   cudaStream_t stream) {
  constexpr size_t kBudget = 24u << 20;
  L2Prefetch pf;
  pf.wave = resident_blocks(kernel, threads, stream);
  if (pf.wave <= 0 || block_bytes == 0) return pf;
  const size_t wave_bytes = static_cast<size_t>(pf.wave) * block_bytes;
  const int waves = (grid + pf.wave - 1) / pf.wave;
  pf.ahead = std::max(0, std::min(waves - 1, static_cast<int>(kBudget / wave_bytes) - 1));
  return pf;
}

}  // namespace lamina::cuda
