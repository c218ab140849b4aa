// All-reduce between the processes of an mpirun job whose buffers live in host memory (the CPU
// backend), by MPI_Allreduce: the CPU counterpart of NCCL bootstrapped over MPI, so the
// multi-process engine runs and is tested on machines without GPUs.
#pragma once
#include <memory>

#include "ops/communicator.h"
#include "runtime/mpi_session.h"

namespace lamina {

std::unique_ptr<Communicator> make_mpi_communicator(MpiSession& mpi);

}  // namespace lamina
