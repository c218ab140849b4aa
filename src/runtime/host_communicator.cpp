#include "runtime/host_communicator.h"

#include <cstring>

#include "common/error.h"

namespace lamina {

class HostCommunicator final : public Communicator {
 public:
  HostCommunicator(HostCommGroup* g, int rank) : g_(g), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return g_->world_; }

  void all_reduce_sum(void* buf, size_t n, DType dtype) override {
    LAMINA_CHECK(dtype == DType::F32, "host all-reduce supports float32 buffers only");
    g_->buffers_[size_t(rank_)] = buf;
    g_->barrier_.arrive_and_wait();  // all buffers published
    if (rank_ == 0) {                // rank 0 sums in a fixed rank order (deterministic)
      g_->sum_.assign(n, 0.0f);
      for (void* b : g_->buffers_) {
        const float* x = static_cast<const float*>(b);
        for (size_t i = 0; i < n; ++i) g_->sum_[i] += x[i];
      }
    }
    g_->barrier_.arrive_and_wait();  // sum ready
    std::memcpy(buf, g_->sum_.data(), n * sizeof(float));
    g_->barrier_.arrive_and_wait();  // everyone copied before the next reduction reuses sum_
  }

 private:
  HostCommGroup* g_;
  int rank_;
};

HostCommGroup::HostCommGroup(int world_size)
    : world_(world_size), buffers_(size_t(world_size), nullptr), barrier_(world_size) {}

std::unique_ptr<Communicator> HostCommGroup::make(int rank) { return std::make_unique<HostCommunicator>(this, rank); }

}  // namespace lamina
