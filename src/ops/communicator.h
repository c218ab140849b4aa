// Collective operations between the tensor-parallel ranks of one engine.
// In-process ranks on the CPU use HostCommunicator (threads + barrier); GPUs use NCCL.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>

#include "common/dtype.h"
#include "ops/l2_prefetch.h"

namespace lamina {

struct SliceArgmax;  // ops/token_choice.h

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // buf[n] (device memory of this rank's backend) = sum over ranks of buf[n].
  virtual void all_reduce_sum(void* buf, size_t n, DType dtype) = 0;
  // residual[T,H] += Σ_ranks x[T,H]; out[T,H] = rms_norm(residual, eps) · w: an all-reduce and
  // the Backend::add_rms_norm after it, in one step where the communicator can fuse them (x is
  // then left as it was). Returns false, having done nothing, where it cannot; the caller then
  // runs all_reduce_sum and add_rms_norm itself. The answer depends only on the arguments, which
  // every rank passes alike. `next`: what the kernel after this step reads first (L2Prefetch).
  virtual bool all_reduce_add_rms_norm(const void* /*x*/, void* /*residual*/, void* /*out*/, const void* /*w*/,
                                       int /*T*/, int /*H*/, float /*eps*/, DType /*dtype*/, L2Prefetch /*next*/) {
    return false;
  }
  // ids[R] (device memory) = each row's greedy token over the vocabulary split across the ranks,
  // joined on every rank from every rank's slice argmaxes (mine: this rank's R pairs, device
  // memory; nullptr: its slice has no candidate) by combine_slice_argmax's rule, in one step where
  // the communicator can. Returns false, having done nothing, where it cannot; the caller then
  // gathers the pairs through all_reduce_sum. The answer depends only on R, alike on every rank.
  virtual bool gather_slice_argmax(const SliceArgmax* /*mine*/, int32_t* /*ids*/, int /*R*/,
                                   int64_t /*vocab_per_rank*/) {
    return false;
  }
};

// For world_size 1: all_reduce is the identity.
class SoloCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void all_reduce_sum(void*, size_t, DType) override {}
};

}  // namespace lamina
