// NCCL all-reduce between tensor-parallel ranks on GPUs (one rank per GPU).
//   - NcclGroup::create_local(devices): every rank in this process, one GPU each (ncclCommInitAll),
//     for `lamina run/serve` of a tp_size N engine on one host: the engine drives each rank from
//     its own thread.
//   - NcclGroup::create_rank(id, world, rank, device): one rank of a group whose ncclUniqueId came
//     from elsewhere (rank 0 made it with nccl_unique_id() and sent it, e.g. over MPI), for one
//     process per GPU.
// A rank's all_reduce_sum enqueues ncclAllReduce (sum; float32, float16 or bfloat16) on the stream
// of that rank's CUDA backend, so it orders with the ops around it and is captured into the
// backend's CUDA graphs like any kernel (NCCL ≥ 2.9 supports stream capture).
// NVLink SHARP / multicast (NVLS) is turned off: NCCL_NVLS_ENABLE is set to 0 before the first
// communicator is made unless the user has set it (docs/tensor-parallel.md says why).
// create_local groups whose GPUs all reach one another peer-to-peer send messages of up to
// 512 KiB (decode) through PeerAllReduce (peer_all_reduce.h) instead, unless
// LAMINA_CUSTOM_ALL_REDUCE=0 is set.
// Built only when NCCL is found (LAMINA_HAVE_NCCL).
#pragma once
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "ops/backend.h"
#include "ops/communicator.h"

namespace lamina {

// An ncclUniqueId as plain bytes (NCCL_UNIQUE_ID_BYTES = 128), so callers need no nccl.h.
using NcclId = std::array<char, 128>;
NcclId nccl_unique_id();

// The NCCL library version, e.g. "2.27.3".
std::string nccl_version();

// Sets NCCL_NVLS_ENABLE=0 unless the environment already names it. Called by the group
// factories; public so launchers can call it before anything else touches NCCL.
void nccl_disable_nvls_unless_set();

class NcclGroup {
 public:
  // One communicator per device of `devices` (rank r ↔ devices[r]), all in this process.
  static std::unique_ptr<NcclGroup> create_local(const std::vector<int>& devices);
  // Rank `rank` of `world` ranks (one per process) on device `device`; blocks until every rank
  // has joined with the same id.
  static std::unique_ptr<NcclGroup> create_rank(const NcclId& id, int world, int rank, int device);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  int world_size() const { return world_; }
  // The communicator of local rank index i (0 for create_rank), whose all-reduce runs on
  // `backend`'s stream. `backend` must be a CUDA backend on that rank's device and outlive it.
  std::unique_ptr<Communicator> make(size_t i, Backend& backend);

 private:
  NcclGroup() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int world_ = 0;
};

}  // namespace lamina
