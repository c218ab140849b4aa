// Was this process started by mpirun (or another MPI launcher) as one of several processes?
// Read from the environment the launchers set, before any MPI library is loaded, so a plain
// `lamina run` never touches MPI:
//   Open MPI:             OMPI_COMM_WORLD_SIZE / _RANK / _LOCAL_RANK / _LOCAL_SIZE
//   MPICH, Intel MPI (Hydra, PMI): PMI_SIZE / PMI_RANK, MPI_LOCALNRANKS / MPI_LOCALRANKID
#pragma once
#include <functional>
#include <string>

namespace lamina {

struct MpiLaunch {
  int world_size = 1;  // processes in the job (1: not launched by an MPI launcher)
  int rank = 0;        // this process's rank in the job
  int local_rank = 0;  // its index among the job's processes on this host (picks the GPU)
  int local_size = 1;  // the job's processes on this host
  std::string source;  // the variable the sizes came from, for messages, e.g. "OMPI_COMM_WORLD_SIZE=2"
  bool open_mpi = false;  // set by Open MPI's launcher (else PMI: MPICH-compatible)
  bool multi_process() const { return world_size > 1; }
};

// getenv by default; tests pass their own. A value that is not a number, or a rank outside the
// world, is an error naming the variable.
using EnvLookup = std::function<const char*(const char*)>;
MpiLaunch detect_mpi_launch(const EnvLookup& env = {});

}  // namespace lamina
