// Asking L2 for the next projection's first weights from a kernel that leaves DRAM idle: the
// fused all-reduce + norm of a tp > 1 decode step, which waits on its peers once the projection
// before it has ended, and the one-token decode attention's split reduce (ops/l2_prefetch.h).
// Each block asks for an equal share, a thread a piece of kL2PrefetchPiece bytes, without waiting
// for them. The shares are spread over the kernel's blocks (hence SMs) because one SM's bulk-copy
// unit takes the requests one after another: 4 MiB asked from the one block of a tp 1 norm slowed
// an 8B token from 3.94 to 4.94 ms (2x H200).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

namespace lamina::cuda {

constexpr uint32_t kL2PrefetchPiece = 64 << 10;

// The bytes of `name`'s value in MiB (0: none), default_mb where it is unset.
inline size_t l2_prefetch_mb_from_env(const char* name, unsigned long default_mb) {
  const char* env = std::getenv(name);
  return size_t(env != nullptr ? std::strtoul(env, nullptr, 10) : default_mb) << 20;
}

// At most LAMINA_L2_PREFETCH_MB MiB of the fused all-reduce's hint are asked for, read once. 4 MiB:
// the best of 0 / 2 / 4 / 6 / 8 / 16 for 8B at tp 2 on 2x H200 (docs/tensor-parallel.md).
inline size_t l2_prefetch_cap() {
  static const size_t cap = l2_prefetch_mb_from_env("LAMINA_L2_PREFETCH_MB", 4);
  return cap;
}

// The same from the one-token decode attention's split reduce, which leaves DRAM idle too: the
// attention-out projection's first weights (LAMINA_ATTN_L2_PREFETCH_MB, default 2).
inline size_t attention_l2_prefetch_cap() {
  static const size_t cap = l2_prefetch_mb_from_env("LAMINA_ATTN_L2_PREFETCH_MB", 2);
  return cap;
}

// Each of `blocks` blocks' share of [p, p + bytes), capped at `cap` in all: a multiple of 16
// bytes, 0 for none (p null or not 16-byte aligned, or too little to split).
inline uint32_t l2_prefetch_share(const void* p, size_t bytes, long long blocks, size_t cap = l2_prefetch_cap()) {
  if (p == nullptr || (reinterpret_cast<uintptr_t>(p) & 15u) != 0 || blocks <= 0) return 0;
  const size_t share = std::min(bytes, cap) / size_t(blocks) / 16 * 16;
  return uint32_t(std::min<size_t>(share, size_t(1) << 30));
}

// Asks L2 for [p, p + bytes) without waiting (Hopper's bulk prefetch: p 16-byte aligned, bytes a
// multiple of 16); nothing before Hopper.
__device__ __forceinline__ void l2_prefetch_bulk(const void* p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#else
  (void)p;
  (void)bytes;
#endif
}

// Asks L2 for the 128-byte line that holds p, without waiting.
__device__ __forceinline__ void l2_prefetch_line(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// Block `block` (by default blockIdx.x) asks L2 for share_bytes from base + block * share_bytes.
__device__ __forceinline__ void l2_prefetch_block_share(const char* base, uint32_t share_bytes,
                                                        unsigned block = blockIdx.x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const char* mine = base + size_t(block) * share_bytes;
  for (uint32_t o = threadIdx.x * kL2PrefetchPiece; o < share_bytes; o += blockDim.x * kL2PrefetchPiece)
    l2_prefetch_bulk(mine + o, share_bytes - o < kL2PrefetchPiece ? share_bytes - o : kL2PrefetchPiece);
#else
  (void)base;
  (void)share_bytes;
  (void)block;
#endif
}

}  // namespace lamina::cuda
