// A communicator that sends small messages one way and large ones another: on GPUs, decode's
// all-reduces (tokens × hidden, a few KiB) through peer-to-peer memory, prefill's through NCCL.
// The choice depends only on the message's size, which every rank passes alike, so all ranks
// always take the same path.
#pragma once
#include <memory>
#include <utility>

#include "common/error.h"
#include "ops/communicator.h"

namespace lamina {

class SplitCommunicator final : public Communicator {
 public:
  // Messages of at most max_small_bytes go to `small`, the others to `large`; both for the same
  // rank of the same group.
  SplitCommunicator(std::unique_ptr<Communicator> small, std::unique_ptr<Communicator> large, size_t max_small_bytes)
      : small_(std::move(small)), large_(std::move(large)), max_small_bytes_(max_small_bytes) {
    LAMINA_CHECK(small_ && large_, "a split communicator needs both communicators");
    LAMINA_CHECK(small_->rank() == large_->rank() && small_->world_size() == large_->world_size(),
                 "a split communicator's two communicators must be the same rank of the same group");
  }
  int rank() const override { return large_->rank(); }
  int world_size() const override { return large_->world_size(); }
  bool takes_small_path(size_t n, DType dtype) const { return n * dtype_size(dtype) <= max_small_bytes_; }
  void all_reduce_sum(void* buf, size_t n, DType dtype) override {
    (takes_small_path(n, dtype) ? small_ : large_)->all_reduce_sum(buf, n, dtype);
  }
  bool all_reduce_add_rms_norm(const void* x, void* residual, void* out, const void* w, int T, int H, float eps,
                               DType dtype, L2Prefetch next) override {
    const size_t n = size_t(T) * size_t(H);
    return (takes_small_path(n, dtype) ? small_ : large_)
        ->all_reduce_add_rms_norm(x, residual, out, w, T, H, eps, dtype, next);
  }
  // A few bytes a row: always the small path.
  bool gather_slice_argmax(const SliceArgmax* mine, int32_t* ids, int R, int64_t vocab_per_rank) override {
    return small_->gather_slice_argmax(mine, ids, R, vocab_per_rank);
  }

 private:
  std::unique_ptr<Communicator> small_, large_;
  size_t max_small_bytes_;
};

}  // namespace lamina
