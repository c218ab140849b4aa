#include <gtest/gtest.h>

#include <thread>

#include "runtime/host_communicator.h"

namespace lamina {

TEST(HostCommunicator, AllReduceSumsAcrossThreads) {
  const int world = 4, n = 1000, rounds = 5;
  HostCommGroup group(world);
  std::vector<std::vector<float>> bufs(world, std::vector<float>(n));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      auto comm = group.make(r);
      for (int round = 0; round < rounds; ++round) {
        for (int i = 0; i < n; ++i) bufs[size_t(r)][size_t(i)] = float(r + 1) * float(i) + float(round);
        comm->all_reduce_sum(bufs[size_t(r)].data(), n, DType::F32);
        for (int i = 0; i < n; ++i) ASSERT_FLOAT_EQ(bufs[size_t(r)][size_t(i)], 10.0f * float(i) + 4.0f * float(round));
      }
    });
  for (auto& t : threads) t.join();
}

}  // namespace lamina
