#include "runtime/mpi_communicator.h"

#include <cstring>
#include <vector>

#include "common/error.h"

namespace lamina {

namespace {

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MpiSession& mpi) : mpi_(mpi) {}
  int rank() const override { return mpi_.rank(); }
  int world_size() const override { return mpi_.world_size(); }

  void all_reduce_sum(void* buf, size_t n, DType dtype) override {
    LAMINA_CHECK(dtype == DType::F32, "the MPI all-reduce supports float32 (CPU) buffers only");
    // A separate send buffer: MPI_IN_PLACE is spelled differently by each MPI ABI.
    send_.resize(n);
    std::memcpy(send_.data(), buf, n * sizeof(float));
    mpi_.all_reduce_sum(send_.data(), static_cast<float*>(buf), n);
  }

 private:
  MpiSession& mpi_;
  std::vector<float> send_;
};

}  // namespace

std::unique_ptr<Communicator> make_mpi_communicator(MpiSession& mpi) { return std::make_unique<MpiCommunicator>(mpi); }

}  // namespace lamina
