// SplitCommunicator: the path a message takes depends only on its size in bytes.
#include "ops/split_communicator.h"

#include <gtest/gtest.h>

#include <vector>

namespace lamina {
namespace {

// Records the sizes it was asked to reduce.
class RecordingCommunicator final : public Communicator {
 public:
  explicit RecordingCommunicator(std::vector<size_t>* calls, int rank = 1, int world = 2)
      : calls_(calls), rank_(rank), world_(world) {}
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  void all_reduce_sum(void*, size_t n, DType) override { calls_->push_back(n); }

 private:
  std::vector<size_t>* calls_;
  int rank_, world_;
};

TEST(SplitCommunicator, SmallMessagesUpToTheLimitTakeTheSmallPath) {
  std::vector<size_t> small, large;
  SplitCommunicator c(std::make_unique<RecordingCommunicator>(&small), std::make_unique<RecordingCommunicator>(&large),
                      1024);
  EXPECT_EQ(c.rank(), 1);
  EXPECT_EQ(c.world_size(), 2);
  c.all_reduce_sum(nullptr, 256, DType::F32);  // 1024 bytes: the edge
  c.all_reduce_sum(nullptr, 257, DType::F32);
  c.all_reduce_sum(nullptr, 512, DType::BF16);  // 1024 bytes
  c.all_reduce_sum(nullptr, 513, DType::F16);
  c.all_reduce_sum(nullptr, 1, DType::BF16);
  EXPECT_EQ(small, (std::vector<size_t>{256, 512, 1}));
  EXPECT_EQ(large, (std::vector<size_t>{257, 513}));
  EXPECT_FALSE(c.takes_small_path(4096, DType::BF16));
}

TEST(SplitCommunicator, RefusesCommunicatorsOfDifferentRanks) {
  std::vector<size_t> calls;
  EXPECT_THROW(SplitCommunicator(std::make_unique<RecordingCommunicator>(&calls, 0, 2),
                                 std::make_unique<RecordingCommunicator>(&calls, 1, 2), 64),
               Error);
}

}  // namespace
}  // namespace lamina
