// One-shot all-reduce over CUDA peer-to-peer memory between the GPUs of one process, for the
// small messages of decoding (tokens × hidden, e.g. 8 KiB a token for an 8B model in bf16), where
// NCCL's fixed latency dominates. Larger messages (prefill) stay with NCCL.
//
// Every rank owns, in its own device memory, a staging buffer [2][capacity bytes] and flag words
// [kPeerBlocks][kPeerMaxRanks]; peer access is enabled between every pair of devices, so each
// rank's kernel reads and writes the others' buffers directly. One call on rank r (kernel, one
// grid of kPeerBlocks blocks; block b owns one slice of the message on every rank):
//   1. copy its input slice into staging half (call % 2);
//   2. store the call's number into flag [b][r] of every peer (release, system scope), and wait
//      until every peer's flag [b][p] in its own memory has reached the call's number (acquire);
//   3. sum the slice of every rank's staging half in rank order 0..N-1 in float32 and write it
//      over the input. The fixed order gives every rank bit-identical results.
// Staging half k % 2 is written again at call k + 2 only: by then every peer has passed the
// barrier of call k + 1, which it enters after its call k (and so its reads of ours) finished.
// The call number lives in device memory and the kernel advances it, so captured CUDA graphs
// replay correctly; every rank must run the same sequence of calls (tensor-parallel ranks do).
// No NVLink multicast is used.
#pragma once
#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "ops/backend.h"
#include "ops/communicator.h"

namespace lamina {

constexpr int kPeerMaxRanks = 8;
constexpr size_t kPeerAllReduceDefaultCapacity = 512u << 10;  // bytes a call may reduce

// False when LAMINA_CUSTOM_ALL_REDUCE=0 is set (all-reduces then use NCCL only).
bool custom_all_reduce_enabled();
// False when LAMINA_FUSED_ALL_REDUCE_NORM=0 is set: the engine's communicators then leave the
// residual add + RMSNorm after each decode all-reduce to a kernel of its own (for comparisons).
bool fused_all_reduce_norm_enabled();
// False when LAMINA_FUSED_GREEDY_GATHER=0 is set: a greedy choice over a vocabulary split across
// the ranks then gathers the slices' argmaxes through a float32 all-reduce (for comparisons).
bool fused_greedy_gather_enabled();

class PeerAllReduce {
 public:
  // For the ranks on `devices` (rank r ↔ devices[r], 2..kPeerMaxRanks distinct devices). Returns
  // nullptr, with the reason in *why_not, when some pair of devices has no peer access.
  static std::unique_ptr<PeerAllReduce> create(const std::vector<int>& devices,
                                               size_t capacity_bytes = kPeerAllReduceDefaultCapacity,
                                               std::string* why_not = nullptr);
  ~PeerAllReduce();
  PeerAllReduce(const PeerAllReduce&) = delete;
  PeerAllReduce& operator=(const PeerAllReduce&) = delete;

  int world_size() const { return int(devices_.size()); }
  size_t capacity_bytes() const { return capacity_; }
  // Whether a message of n elements of dtype fits one call (float32, float16, bfloat16 only).
  bool fits(size_t n, DType dtype) const;
  // In place: buf[n] (device memory of rank's device) = sum over ranks, enqueued on `stream`
  // (a stream of that device; capturable). Every rank must make the same call (n, dtype).
  void all_reduce_sum(int rank, void* buf, size_t n, DType dtype, cudaStream_t stream);
  // Decode's all-reduce and the residual add + RMSNorm after it, in one kernel
  // (peer_all_reduce_norm.cu): residual[T,H] += Σ_ranks x[T,H]; out[T,H] = rms_norm(residual) · w.
  // x is left as it was. Bit-identical to all_reduce_sum(x) then the CUDA backend's add_rms_norm.
  // Returns false, having done nothing, where it does not apply (not float16/bfloat16, H not a
  // multiple of 8 or over 16384, T × H over the capacity, a buffer not 16-byte aligned); the
  // answer depends on the arguments only, so every rank gets the same one.
  // `next`: bytes the following kernel reads, asked into L2 while the kernel waits on its peers
  // (at most LAMINA_L2_PREFETCH_MB MiB: l2_prefetch.cuh).
  bool all_reduce_add_rms_norm(int rank, const void* x, void* residual, void* out, const void* w, int T, int H,
                               float eps, DType dtype, cudaStream_t stream, L2Prefetch next = {});
  // ids[R] = each row's greedy token, joined on every rank from every rank's R slice argmaxes
  // (mine: rank's, on its device; nullptr: its slice has no candidate): one kernel per rank, a
  // call of the same sequence as all_reduce_add_rms_norm (peer_all_reduce_norm.h). Returns false,
  // having done nothing, where R is 0 or over what a landing row holds (capacity / 16 rows).
  bool gather_slice_argmax(int rank, const SliceArgmax* mine, int32_t* ids, int R, int64_t vocab_per_rank,
                           cudaStream_t stream);
  // The communicator of `rank` on `backend`'s stream (a CUDA backend on that rank's device, which
  // outlives it); every call must fit().
  std::unique_ptr<Communicator> make(int rank, Backend& backend);

 private:
  PeerAllReduce() = default;
  std::vector<int> devices_;
  size_t capacity_ = 0;
  std::vector<void*> staging_;  // [rank] → its [2][capacity] bytes
  std::vector<void*> flags_;    // [rank] → its uint32 [kPeerBlocks][kPeerMaxRanks]
  std::vector<void*> epochs_;   // [rank] → its uint32 [kPeerBlocks]: calls made so far
  // The fused all-reduce + norm: [rank] → its landing buffer [3][world][capacity] bytes, and its
  // per-block state (peer_all_reduce_norm.h).
  std::vector<void*> landing_;
  std::vector<void*> landing_state_;
};

}  // namespace lamina
