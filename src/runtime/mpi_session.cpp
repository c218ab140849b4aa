#include "runtime/mpi_session.h"

#include <dlfcn.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <vector>

#include "common/error.h"

namespace lamina {

// The MPI calls used, through function pointers resolved with dlsym. The handle-free ones are
// here; those taking a communicator, datatype or op live in Abi<H>, H being how the library
// spells a handle (a pointer for Open MPI, an int for MPICH).
struct MpiSession::Calls {
  virtual ~Calls() = default;
  void* lib = nullptr;
  int (*Initialized)(int*) = nullptr;
  int (*Init_thread)(int*, char***, int, int*) = nullptr;
  int (*Finalized)(int*) = nullptr;
  int (*Finalize)() = nullptr;
  int (*Error_string)(int, char*, int*) = nullptr;

  virtual int comm_rank(int* r) = 0;
  virtual int comm_size(int* n) = 0;
  virtual int bcast(void* buf, int bytes, int root) = 0;
  virtual int gather(const void* send, int count, void* recv, bool floats, int root) = 0;
  virtual int allreduce_sum(const float* send, float* recv, int n) = 0;
  virtual int abort(int code) = 0;

  template <class H>
  struct Abi;
};

namespace {

template <class F>
void resolve(void* lib, const char* name, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, name));
  if (!fn) fail("the MPI library has no ", name, ": it is not an MPI library lamina can use (set LAMINA_MPI_LIBRARY)");
}

constexpr int kThreadSerialized = 2;  // MPI_THREAD_SERIALIZED in both ABIs

}  // namespace

template <class H>
struct MpiSession::Calls::Abi final : MpiSession::Calls {
  H world{}, byte{}, flt{}, sum{};
  int (*Comm_rank)(H, int*) = nullptr;
  int (*Comm_size)(H, int*) = nullptr;
  int (*Bcast)(void*, int, H, int, H) = nullptr;
  int (*Gather)(const void*, int, H, void*, int, H, int, H) = nullptr;
  int (*Allreduce)(const void*, void*, int, H, H, H) = nullptr;
  int (*Abort)(H, int) = nullptr;

  explicit Abi(void* l) {
    resolve(l, "MPI_Comm_rank", Comm_rank);
    resolve(l, "MPI_Comm_size", Comm_size);
    resolve(l, "MPI_Bcast", Bcast);
    resolve(l, "MPI_Gather", Gather);
    resolve(l, "MPI_Allreduce", Allreduce);
    resolve(l, "MPI_Abort", Abort);
  }
  int comm_rank(int* r) override { return Comm_rank(world, r); }
  int comm_size(int* n) override { return Comm_size(world, n); }
  int bcast(void* buf, int bytes, int root) override { return Bcast(buf, bytes, byte, root, world); }
  int gather(const void* send, int count, void* recv, bool floats, int root) override {
    const H type = floats ? flt : byte;
    return Gather(send, count, type, recv, count, type, root, world);
  }
  int allreduce_sum(const float* send, float* recv, int n) override {
    return Allreduce(send, recv, n, flt, sum, world);
  }
  int abort(int code) override { return Abort(world, code); }
};

namespace {

std::unique_ptr<MpiSession::Calls> open_mpi_calls(void* lib) {
  // Open MPI: MPI_COMM_WORLD is (MPI_Comm)&ompi_mpi_comm_world, and so on.
  auto c = std::make_unique<MpiSession::Calls::Abi<void*>>(lib);
  c->world = dlsym(lib, "ompi_mpi_comm_world");
  c->byte = dlsym(lib, "ompi_mpi_byte");
  c->flt = dlsym(lib, "ompi_mpi_float");
  c->sum = dlsym(lib, "ompi_mpi_op_sum");
  if (!c->byte || !c->flt || !c->sum) fail("the Open MPI library lacks ompi_mpi_byte/float/op_sum: reinstall Open MPI");
  return c;
}

std::unique_ptr<MpiSession::Calls> mpich_calls(void* lib) {
  // The MPICH ABI (MPICH, Intel MPI, MVAPICH): handles are these integers (mpi.h).
  auto c = std::make_unique<MpiSession::Calls::Abi<int>>(lib);
  c->world = 0x44000000;  // MPI_COMM_WORLD
  c->byte = 0x4c00010d;   // MPI_BYTE
  c->flt = 0x4c00040a;    // MPI_FLOAT
  c->sum = 0x58000003;    // MPI_SUM
  return c;
}

std::mutex g_join_mutex;
std::unique_ptr<MpiSession> g_session;

}  // namespace

MpiSession* MpiSession::joined() {
  std::lock_guard<std::mutex> lock(g_join_mutex);
  return g_session.get();
}

MpiSession& MpiSession::join(const MpiLaunch& launch) {
  std::lock_guard<std::mutex> lock(g_join_mutex);
  if (g_session) return *g_session;
  // The launcher decides which library is the right one; the others are tried after it.
  std::vector<std::string> names;
  if (const char* env = std::getenv("LAMINA_MPI_LIBRARY"); env && *env) {
    names = {env};
  } else if (launch.open_mpi) {
    names = {"libmpi.so.40", "libmpi.so", "libmpi.so.12"};
  } else {
    names = {"libmpi.so.12", "libmpi.so", "libmpi.so.40"};
  }
  void* lib = nullptr;
  std::string tried;
  for (const std::string& n : names) {
    // RTLD_GLOBAL: Open MPI's own plugins, loaded later, look up libmpi's symbols globally.
    lib = dlopen(n.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (lib) {
      tried = n;
      break;
    }
    const char* why = dlerror();
    tried += (tried.empty() ? "" : "; ") + n + ": " + (why ? why : "not found");
  }
  if (!lib)
    fail("launched by an MPI launcher (", launch.source, ") but libmpi was not found (", tried,
         "): install Open MPI (e.g. apt-get install openmpi-bin libopenmpi3) or set LAMINA_MPI_LIBRARY to the "
         "libmpi.so of the MPI whose mpirun started lamina");

  std::unique_ptr<MpiSession> s(new MpiSession());
  s->launch_ = launch;
  const bool ompi = dlsym(lib, "ompi_mpi_comm_world") != nullptr;
  s->calls_ = ompi ? open_mpi_calls(lib) : mpich_calls(lib);
  s->library_ = tried + (ompi ? " (Open MPI ABI)" : " (MPICH ABI)");
  Calls& c = *s->calls_;
  c.lib = lib;
  resolve(lib, "MPI_Initialized", c.Initialized);
  resolve(lib, "MPI_Init_thread", c.Init_thread);
  resolve(lib, "MPI_Finalized", c.Finalized);
  resolve(lib, "MPI_Finalize", c.Finalize);
  resolve(lib, "MPI_Error_string", c.Error_string);

  int inited = 0;
  c.Initialized(&inited);
  if (!inited) {
    int provided = 0;
    if (c.Init_thread(nullptr, nullptr, kThreadSerialized, &provided) != 0)
      fail("MPI_Init_thread failed in ", s->library_, ": check the mpirun command and the MPI installation");
    s->owns_init_ = true;
    // Steps may come from a scheduler thread rather than the one that initialized MPI.
    if (provided < kThreadSerialized)
      fail(s->library_, " provides MPI thread level ", provided,
           " but lamina needs MPI_THREAD_SERIALIZED (2): use an MPI built with thread support");
  }
  c.comm_rank(&s->rank_);
  c.comm_size(&s->world_);
  if (s->world_ != launch.world_size || s->rank_ != launch.rank)
    fail("MPI reports rank ", s->rank_, " of ", s->world_, " but the launcher set rank ", launch.rank, " of ",
         launch.world_size, " (", launch.source, "): ", s->library_,
         " is not the MPI whose mpirun started lamina; set LAMINA_MPI_LIBRARY to that MPI's libmpi.so");
  g_session = std::move(s);
  return *g_session;
}

MpiSession::~MpiSession() = default;  // libmpi stays loaded: MPI may not be re-initialized anyway

namespace {
void check_mpi(int rc, MpiSession::Calls& c, const char* what) {
  if (rc == 0) return;
  char msg[4096] = {0};
  int len = 0;
  if (c.Error_string(rc, msg, &len) != 0) msg[0] = '\0';
  fail(what, " failed with MPI error ", rc, (msg[0] ? std::string(": ") + msg : std::string()));
}

int checked_count(size_t n, const char* what) {
  if (n > size_t(INT_MAX)) fail(what, " of ", n, " elements exceeds what one MPI call moves (", INT_MAX, ")");
  return int(n);
}
}  // namespace

void MpiSession::broadcast(void* data, size_t bytes, int root) {
  // Large payloads go in pieces: an MPI count is an int.
  char* p = static_cast<char*>(data);
  for (size_t done = 0; done < bytes;) {
    const size_t n = std::min(bytes - done, size_t(1) << 30);
    check_mpi(calls_->bcast(p + done, int(n), root), *calls_, "MPI_Bcast");
    done += n;
  }
}

void MpiSession::gather_bytes(const void* send, size_t bytes, void* recv, int root) {
  check_mpi(calls_->gather(send, checked_count(bytes, "MPI_Gather"), recv, false, root), *calls_, "MPI_Gather");
}

void MpiSession::gather_floats(const float* send, size_t n, float* recv, int root) {
  check_mpi(calls_->gather(send, checked_count(n, "MPI_Gather"), recv, true, root), *calls_, "MPI_Gather");
}

void MpiSession::all_reduce_sum(const float* send, float* recv, size_t n) {
  check_mpi(calls_->allreduce_sum(send, recv, checked_count(n, "MPI_Allreduce")), *calls_, "MPI_Allreduce");
}

int64_t MpiSession::min_over_ranks(int64_t v) {
  std::vector<int64_t> all(rank_ == 0 ? size_t(world_) : 1);
  gather_bytes(&v, sizeof(v), all.data());
  int64_t m = v;
  for (int64_t x : all) m = std::min(m, x);
  broadcast(&m, sizeof(m));
  return m;
}

void MpiSession::abort_after_error(const std::string& what) {
  std::fprintf(stderr, "[lamina] error (rank %d of %d): %s; stopping every process of the job\n", rank_, world_,
               what.c_str());
  std::fflush(stderr);
  calls_->abort(1);
  std::_Exit(1);  // MPI_Abort does not return; should it, end this process anyway
}

void MpiSession::finalize() {
  if (finalized_ || !owns_init_) return;
  finalized_ = true;
  int done = 0;
  calls_->Finalized(&done);
  if (!done) calls_->Finalize();
}

}  // namespace lamina
