// SplitCommunicator: the path a message takes depends only on its size in bytes, for the plain
// all-reduce and for the one fused with the residual add + norm (whose answer is the chosen path's);
// the greedy gather, a few bytes a row, always takes the small path (and its answer).
#include "ops/split_communicator.h"

#include <gtest/gtest.h>

#include <vector>

namespace lamina {
namespace {

// Records the sizes it was asked to reduce (T × H for the fused calls, which it takes when `fuses`).
class RecordingCommunicator final : public Communicator {
 public:
  explicit RecordingCommunicator(std::vector<size_t>* calls, int rank = 1, int world = 2, bool fuses = false)
      : calls_(calls), rank_(rank), world_(world), fuses_(fuses) {}
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  void all_reduce_sum(void*, size_t n, DType) override { calls_->push_back(n); }
  bool all_reduce_add_rms_norm(const void*, void*, void*, const void*, int T, int H, float, DType, L2Prefetch) override {
    calls_->push_back(size_t(T) * size_t(H));
    return fuses_;
  }
  bool gather_slice_argmax(const SliceArgmax*, int32_t*, int R, int64_t) override {
    calls_->push_back(size_t(R));
    return fuses_;
  }

 private:
  std::vector<size_t>* calls_;
  int rank_, world_;
  bool fuses_;
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

TEST(SplitCommunicator, FusedAllReduceNormTakesThePathOfItsSizeAndItsAnswer) {
  // The small path fuses (peer-to-peer), the large one does not (NCCL): a caller then runs the
  // unfused pair itself.
  std::vector<size_t> small, large;
  SplitCommunicator c(std::make_unique<RecordingCommunicator>(&small, 1, 2, true),
                      std::make_unique<RecordingCommunicator>(&large, 1, 2, false), 1024);
  EXPECT_TRUE(c.all_reduce_add_rms_norm(nullptr, nullptr, nullptr, nullptr, 2, 256, 1e-5f, DType::BF16, {}));  // 1024 B
  EXPECT_FALSE(c.all_reduce_add_rms_norm(nullptr, nullptr, nullptr, nullptr, 3, 256, 1e-5f, DType::BF16, {}));
  EXPECT_FALSE(c.all_reduce_add_rms_norm(nullptr, nullptr, nullptr, nullptr, 1, 512, 1e-5f, DType::F32, {}));
  EXPECT_EQ(small, (std::vector<size_t>{512}));
  EXPECT_EQ(large, (std::vector<size_t>{768, 512}));
  SoloCommunicator solo;  // the default: never fused
  EXPECT_FALSE(solo.all_reduce_add_rms_norm(nullptr, nullptr, nullptr, nullptr, 1, 8, 1e-5f, DType::BF16, {}));
}

TEST(SplitCommunicator, GreedyGatherTakesTheSmallPathAtAnySize) {
  std::vector<size_t> small, large;
  SplitCommunicator c(std::make_unique<RecordingCommunicator>(&small, 1, 2, true),
                      std::make_unique<RecordingCommunicator>(&large, 1, 2, false), 64);
  EXPECT_TRUE(c.gather_slice_argmax(nullptr, nullptr, 1, 64128));
  EXPECT_TRUE(c.gather_slice_argmax(nullptr, nullptr, 4096, 64128));  // more than 64 bytes
  EXPECT_EQ(small, (std::vector<size_t>{1, 4096}));
  EXPECT_TRUE(large.empty());
  SoloCommunicator solo;  // the default: the caller gathers through all_reduce_sum
  EXPECT_FALSE(solo.gather_slice_argmax(nullptr, nullptr, 1, 64128));
}

TEST(SplitCommunicator, RefusesCommunicatorsOfDifferentRanks) {
  std::vector<size_t> calls;
  EXPECT_THROW(SplitCommunicator(std::make_unique<RecordingCommunicator>(&calls, 0, 2),
                                 std::make_unique<RecordingCommunicator>(&calls, 1, 2), 64),
               Error);
}

}  // namespace
}  // namespace lamina
