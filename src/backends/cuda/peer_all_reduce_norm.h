// The kernels behind PeerAllReduce::all_reduce_add_rms_norm and gather_slice_argmax (protocol in
// peer_all_reduce_norm.cu).
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "common/dtype.h"
#include "ops/token_choice.h"

namespace lamina::cuda {

constexpr int kLandingMaxRanks = 8;
// Landing slots a rank cycles through: the one being filled, the one a peer a call ahead may
// already fill, and the one being cleared.
constexpr int kLandingSlots = 3;
// The fused kernel's fixed grid (each block keeps its own call counter).
constexpr int kFusedNormBlocks = 32;
// uint32 words of per-block state on each rank: [block] → {calls made, elements of the last call}.
constexpr size_t kFusedNormStateWords = 2 * size_t(kFusedNormBlocks);

// rank → its landing buffer [kLandingSlots][world][slot_elems] of 16-bit elements.
struct LandingPtrs {
  void* rank[kLandingMaxRanks];
};

// Whether the fused kernel takes rows of H elements of dtype in these buffers (float16 or
// bfloat16, H a multiple of 8 and at most 2 × 1024 × 8, every buffer 16-byte aligned); the caller
// also checks that T × H fits a landing row.
bool peer_norm_takes(int H, DType dtype, const void* x, const void* residual, const void* out, const void* w);

// Loads the fused kernels on the current device. CUDA loads a kernel at its first launch by
// default (lazy loading), and loading may wait for the device to go idle: a rank's first launch
// must not wait behind a kernel of its own that spins until that very launch's data arrives.
void preload_peer_norm_kernels();

// Fills `bytes` (a multiple of 16) at p with the empty-landing marker.
void launch_fill_landing_marker(void* p, size_t bytes, cudaStream_t stream);

// On rank `rank` of `world`: residual[T,H] += Σ_ranks x[T,H]; out[T,H] = rms_norm(residual) · w.
// peer_norm_takes must hold; state is this rank's kFusedNormStateWords. [prefetch, +prefetch_bytes):
// device memory the next kernel reads, of which l2_prefetch_cap() bytes are asked into L2 once this
// kernel's input is ready (nullptr or 0: nothing; an unaligned start: nothing).
void launch_peer_all_reduce_add_rms_norm(DType dtype, int world, const LandingPtrs& landing, size_t slot_elems,
                                         uint32_t* state, int rank, const void* x, void* residual, void* out,
                                         const void* w, int T, int H, float eps, const void* prefetch,
                                         size_t prefetch_bytes, cudaStream_t stream);

// On rank `rank` of `world`: ids[R] = the greedy token of each row, joined from every rank's R
// slice argmaxes (mine: this rank's, device memory; null: its slice has no candidate) as
// combine_slice_argmax joins them. One call of the same landing protocol and state as the fused
// norm: both count in the one sequence of calls that every rank makes alike. R * 8 <= slot_elems.
void launch_peer_gather_slice_argmax(int world, const LandingPtrs& landing, size_t slot_elems, uint32_t* state, int rank,
                                     const SliceArgmax* mine, int32_t* ids, int R, int64_t vocab_per_rank,
                                     cudaStream_t stream);

}  // namespace lamina::cuda
