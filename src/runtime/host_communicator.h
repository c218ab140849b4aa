// All-reduce between in-process ranks whose buffers live in host memory (the CPU backend):
// each rank runs on its own thread; a barrier separates "everyone has published" from
// "everyone has read". Lets an engine of any tp_size run on the CPU, checking sharding in CI.
#pragma once
#include <barrier>
#include <memory>
#include <vector>

#include "ops/communicator.h"

namespace lamina {

class HostCommGroup {
 public:
  explicit HostCommGroup(int world_size);
  std::unique_ptr<Communicator> make(int rank);

 private:
  friend class HostCommunicator;
  int world_;
  std::vector<void*> buffers_;
  std::vector<float> sum_;
  std::barrier<> barrier_;
};

}  // namespace lamina
