#include "runtime/mpi_launch.h"

#include <cstdlib>
#include <string>

#include "common/error.h"

namespace lamina {

namespace {

// The variable as a non-negative int, or -1 when unset.
int read_int(const EnvLookup& env, const char* name) {
  const char* v = env(name);
  if (!v || !*v) return -1;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0 || x > 1 << 24)
    fail("environment variable ", name, "='", v, "' is not a process count or rank: was lamina started by mpirun?");
  return int(x);
}

}  // namespace

MpiLaunch detect_mpi_launch(const EnvLookup& lookup) {
  const EnvLookup env = lookup ? lookup : EnvLookup([](const char* n) -> const char* { return std::getenv(n); });
  MpiLaunch l;
  struct Names {
    const char *size, *rank, *local_rank, *local_size;
    bool open_mpi;
  };
  for (const Names& n : {Names{"OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK",
                               "OMPI_COMM_WORLD_LOCAL_SIZE", true},
                         Names{"PMI_SIZE", "PMI_RANK", "MPI_LOCALRANKID", "MPI_LOCALNRANKS", false}}) {
    const int size = read_int(env, n.size);
    if (size < 1) continue;
    const int rank = read_int(env, n.rank);
    if (rank < 0 || rank >= size)
      fail(n.size, "=", size, " but ", n.rank, " is ", rank < 0 ? "unset" : std::to_string(rank),
           ": the MPI launcher's environment is incomplete");
    l.world_size = size;
    l.rank = rank;
    l.source = std::string(n.size) + "=" + std::to_string(size);
    l.open_mpi = n.open_mpi;
    // Without the local variables (an older launcher), assume one process per host.
    const int local_rank = read_int(env, n.local_rank), local_size = read_int(env, n.local_size);
    l.local_rank = local_rank >= 0 ? local_rank : 0;
    l.local_size = local_size >= 1 ? local_size : 1;
    if (l.local_rank >= l.local_size)
      fail(n.local_rank, "=", l.local_rank, " is not below ", n.local_size, "=", l.local_size,
           ": the MPI launcher's environment is inconsistent");
    return l;
  }
  return l;
}

}  // namespace lamina
