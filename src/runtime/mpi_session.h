// This process's membership in an MPI job (mpirun -n N), with MPI loaded at run time: lamina has
// no build-time MPI dependency. join() dlopens libmpi (LAMINA_MPI_LIBRARY, else libmpi.so.40 for
// Open MPI, libmpi.so.12 for MPICH and Intel MPI, else libmpi.so) and resolves the few calls used
// here. The two ABIs differ in their handles: Open MPI's are addresses of exported objects
// (MPI_COMM_WORLD is &ompi_mpi_comm_world), MPICH's are fixed integers; the library tells which.
// Collectives are on MPI_COMM_WORLD and must be called by every process in the same order; the
// engine makes its calls from one thread at a time (MPI_THREAD_SERIALIZED).
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "runtime/mpi_launch.h"

namespace lamina {

class MpiSession {
 public:
  // Loads libmpi and initializes MPI (unless the program already has), once per process; later
  // calls return the same session. Errors name the library tried and what to install or set.
  static MpiSession& join(const MpiLaunch& launch);
  // The session join() made, or nullptr.
  static MpiSession* joined();

  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_; }
  int local_rank() const { return launch_.local_rank; }
  int local_size() const { return launch_.local_size; }
  const std::string& library() const { return library_; }  // e.g. "libmpi.so.40 (Open MPI ABI)"

  // data[bytes] of `root` to every process.
  void broadcast(void* data, size_t bytes, int root = 0);
  // Every process's send[n] into recv[world_size * n] of `root`, in rank order (recv is
  // ignored elsewhere).
  void gather_bytes(const void* send, size_t bytes, void* recv, int root = 0);
  void gather_floats(const float* send, size_t n, float* recv, int root = 0);
  // recv[n] = sum over processes of send[n] (float32; send and recv must not overlap).
  void all_reduce_sum(const float* send, float* recv, size_t n);
  // The smallest of every process's v, on every process.
  int64_t min_over_ranks(int64_t v);

  // Prints "[lamina] error (rank r of N): what; stopping every process of the job" and ends the
  // job (MPI_Abort): the other processes may be waiting in a collective that will never come.
  [[noreturn]] void abort_after_error(const std::string& what);
  // MPI_Finalize (when join() initialized MPI). Call once every collective is done.
  void finalize();

  struct Calls;  // the library's entry points (defined in mpi_session.cpp)

 private:
  MpiSession() = default;
  std::unique_ptr<Calls> calls_;
  MpiLaunch launch_;
  std::string library_;
  int rank_ = 0, world_ = 1;
  bool owns_init_ = false, finalized_ = false;
};

}  // namespace lamina
