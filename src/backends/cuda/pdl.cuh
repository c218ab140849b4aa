// Programmatic dependent launch (Hopper and later): a kernel launched with launch_pdl() may start
// while the kernel before it on the stream is still finishing. It must call pdl_wait() before it
// reads anything an earlier kernel wrote (and before it writes anything an earlier kernel reads);
// work that does not depend on them (a GEMV's weight loads) goes before the wait and overlaps the
// previous kernel's tail and the launch gap. pdl_launch_dependents() lets the next kernel launch
// once every block of this one has called it; calling it first thing is safe because by then all
// of this kernel's blocks are resident, so the next kernel only takes SM room that is free.
// With reads moved before the wait, two rules keep them right (attention_decode_latency.cu):
// data that changes between launches (a step's positions, block tables, cache rows) is read there
// through L2 only (__ldcg), since L1 may hold lines of its old contents; and what the kernel before
// wrote is read after the wait with coherent loads (__ldcg), not read-only ones (__ldg, or plain
// loads through const __restrict__ pointers, compiled to ld.global.nc), which nothing orders
// after the wait. Seen: the one-token decode attention, its q loads (ld.global.nc) right after a
// wait placed late, decoded wrong tokens from the first CUDA-graph step on; with coherent q loads
// it is exact. (The GEMVs still read x through __ldg, inside their K loop after the wait; every
// GPU end-to-end test checks their output.)
// On older GPUs both calls compile to nothing and launch_pdl() is a plain launch. LAMINA_PDL=0 in
// the environment turns it off (for comparisons).
#pragma once
#include <cuda_runtime.h>

#include <utility>

#include "cuda_check.h"

namespace lamina::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Whether the current device takes programmatic dependent launches (and LAMINA_PDL is not 0).
bool pdl_enabled();

template <typename... KernelArgs, typename... Args>
void launch_pdl(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...));
}

}  // namespace lamina::cuda
