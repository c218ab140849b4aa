#include "backends/cuda/nccl_communicator.h"

#include <nccl.h>

#include <cstdlib>
#include <cstring>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/peer_all_reduce.h"
#include "common/error.h"
#include "common/progress.h"
#include "ops/split_communicator.h"

namespace lamina {

namespace {

static_assert(sizeof(ncclUniqueId) == sizeof(NcclId), "NcclId must hold an ncclUniqueId");

[[noreturn]] void throw_nccl_error(ncclResult_t r, ncclComm_t comm, const char* call, const char* file, int line) {
  const char* last = comm ? ncclGetLastError(comm) : ncclGetLastError(nullptr);
  fail("NCCL error ", static_cast<int>(r), " (", ncclGetErrorString(r), (last && *last ? std::string(": ") + last : ""),
       ") in ", call, " at ", file, ":", line,
       " (NCCL_DEBUG=INFO prints NCCL's own account; docs/tensor-parallel.md lists common causes)");
}

#define NCCL_CHECK_COMM(comm, call)                                                 \
  do {                                                                              \
    const ncclResult_t lamina_nccl_r_ = (call);                                     \
    if (lamina_nccl_r_ != ncclSuccess)                                              \
      throw_nccl_error(lamina_nccl_r_, (comm), #call, __FILE__, __LINE__);          \
  } while (0)
#define NCCL_CHECK(call) NCCL_CHECK_COMM(nullptr, call)

ncclDataType_t nccl_dtype(DType d) {
  switch (d) {
    case DType::F32: return ncclFloat32;
    case DType::F16: return ncclFloat16;
    case DType::BF16: return ncclBfloat16;
    default: fail("NCCL all-reduce supports float32, float16 and bfloat16, not ", dtype_user_name(d));
  }
}

// One rank's all-reduce: in place, on its backend's stream (captured into that backend's graphs).
class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(ncclComm_t comm, int rank, int world, int device, cudaStream_t stream)
      : comm_(comm), rank_(rank), world_(world), device_(device), stream_(stream) {}
  int rank() const override { return rank_; }
  int world_size() const override { return world_; }
  void all_reduce_sum(void* buf, size_t n, DType dtype) override {
    if (n == 0) return;
    CUDA_CHECK(cudaSetDevice(device_));
    NCCL_CHECK_COMM(comm_, ncclAllReduce(buf, buf, n, nccl_dtype(dtype), ncclSum, comm_, stream_));
  }

 private:
  ncclComm_t comm_;  // owned by the NcclGroup
  int rank_, world_, device_;
  cudaStream_t stream_;
};

}  // namespace

struct NcclGroup::Impl {
  std::vector<ncclComm_t> comms;  // local ranks
  std::vector<int> devices;       // device of each local rank
  std::vector<int> ranks;         // global rank of each local rank
  // Local groups with peer access between all GPUs: small messages (decode) go through it.
  std::unique_ptr<PeerAllReduce> peer;
};

void nccl_disable_nvls_unless_set() {
  // NVLink SHARP (multicast) buffers take GPU memory per communicator and need NVSwitch multicast
  // support that driver/fabric-manager set-ups often lack; the decode all-reduces here are small
  // (tokens × hidden), where it gains nothing measurable.
  if (!std::getenv("NCCL_NVLS_ENABLE")) setenv("NCCL_NVLS_ENABLE", "0", 0);
}

NcclId nccl_unique_id() {
  nccl_disable_nvls_unless_set();
  ncclUniqueId id;
  NCCL_CHECK(ncclGetUniqueId(&id));
  NcclId out;
  std::memcpy(out.data(), &id, sizeof(id));
  return out;
}

std::string nccl_version() {
  int v = 0;
  NCCL_CHECK(ncclGetVersion(&v));
  // NCCL >= 2.9 encodes major * 10000 + minor * 100 + patch.
  return std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100);
}

std::unique_ptr<NcclGroup> NcclGroup::create_local(const std::vector<int>& devices) {
  LAMINA_CHECK(!devices.empty(), "an NCCL group needs at least one GPU");
  const int n = cuda_device_count();
  for (int d : devices)
    LAMINA_CHECK(d >= 0 && d < n, "CUDA device ", d, " does not exist (", n, " visible)");
  nccl_disable_nvls_unless_set();
  std::unique_ptr<NcclGroup> g(new NcclGroup());
  g->impl_ = std::make_unique<Impl>();
  g->world_ = int(devices.size());
  g->impl_->comms.assign(devices.size(), nullptr);
  g->impl_->devices = devices;
  for (int r = 0; r < g->world_; ++r) g->impl_->ranks.push_back(r);
  NCCL_CHECK(ncclCommInitAll(g->impl_->comms.data(), g->world_, devices.data()));
  if (g->world_ >= 2 && g->world_ <= kPeerMaxRanks && custom_all_reduce_enabled()) {
    std::string why_not;
    g->impl_->peer = PeerAllReduce::create(devices, kPeerAllReduceDefaultCapacity, &why_not);
    if (!g->impl_->peer) log_info("all-reduce: NCCL only (" + why_not + ")");
  }
  return g;
}

std::unique_ptr<NcclGroup> NcclGroup::create_rank(const NcclId& id, int world, int rank, int device) {
  LAMINA_CHECK(world >= 1 && rank >= 0 && rank < world, "NCCL rank ", rank, " of ", world, " is out of range");
  const int n = cuda_device_count();
  LAMINA_CHECK(device >= 0 && device < n, "CUDA device ", device, " does not exist (", n, " visible)");
  nccl_disable_nvls_unless_set();
  ncclUniqueId uid;
  std::memcpy(&uid, id.data(), sizeof(uid));
  std::unique_ptr<NcclGroup> g(new NcclGroup());
  g->impl_ = std::make_unique<Impl>();
  g->world_ = world;
  g->impl_->comms.assign(1, nullptr);
  g->impl_->devices = {device};
  g->impl_->ranks = {rank};
  CUDA_CHECK(cudaSetDevice(device));
  NCCL_CHECK(ncclCommInitRank(&g->impl_->comms[0], world, uid, rank));
  return g;
}

NcclGroup::~NcclGroup() {
  if (!impl_) return;
  // As NCCL's single-thread, several-devices example does. Callers first let the streams that
  // used these communicators finish and drop the CUDA graphs that captured them (the engine
  // destroys its backends before the group).
  for (ncclComm_t c : impl_->comms)
    if (c) ncclCommDestroy(c);
}

std::unique_ptr<Communicator> NcclGroup::make(size_t i, Backend& backend) {
  LAMINA_CHECK(i < impl_->comms.size(), "NCCL group has ", impl_->comms.size(), " local ranks, not ", i + 1);
  auto nccl = std::make_unique<NcclCommunicator>(impl_->comms[i], impl_->ranks[i], world_, impl_->devices[i],
                                                 cuda_stream_of(backend));
  if (!impl_->peer) return nccl;
  return std::make_unique<SplitCommunicator>(impl_->peer->make(int(i), backend), std::move(nccl),
                                             impl_->peer->capacity_bytes());
}

}  // namespace lamina
