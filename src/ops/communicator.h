// Collective operations between the tensor-parallel ranks of one engine.
// In-process ranks on the CPU use HostCommunicator (threads + barrier); GPUs use NCCL.
#pragma once
#include <cstddef>
#include <memory>

#include "common/dtype.h"

namespace lamina {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // buf[n] (device memory of this rank's backend) = sum over ranks of buf[n].
  virtual void all_reduce_sum(void* buf, size_t n, DType dtype) = 0;
};

// For world_size 1: all_reduce is the identity.
class SoloCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void all_reduce_sum(void*, size_t, DType) override {}
};

}  // namespace lamina
