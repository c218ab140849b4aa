#include "backends/cuda/peer_wait.h"

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdlib>
#include <mutex>

#include "common/error.h"

namespace lamina::cuda {
namespace {

constexpr double kUnitSeconds = double(1u << 20) * 1e-9;  // the kernels' clock unit (globaltimer >> 20)

uint32_t limit_units_from_env() {
  const char* e = std::getenv("LAMINA_PEER_WAIT_TIMEOUT_S");
  if (e == nullptr || *e == 0) return uint32_t(60.0 / kUnitSeconds);
  char* end = nullptr;
  const double s = std::strtod(e, &end);
  if (end == e || *end != 0 || !(s >= 0) || s > 3600)
    fail("LAMINA_PEER_WAIT_TIMEOUT_S must be a number of seconds from 0 (wait for ever) to 3600, not '", e, "'");
  if (s == 0) return 0;
  const double units = s / kUnitSeconds;
  return units < 1 ? 1u : uint32_t(units);
}

// Mapped, portable pinned memory that lives as long as the process; atomic because any thread
// that meets a CUDA error reads it (peer_wait_note).
std::atomic<PeerWaitReport*> report_ptr{nullptr};

}  // namespace

PeerWait peer_wait() {
  static std::once_flag once;
  static PeerWait wait{};
  std::call_once(once, [] {
    wait.units = limit_units_from_env();
    void* p = nullptr;
    // Mapped and portable: every device of the process writes it through its own address of it.
    if (cudaHostAlloc(&p, sizeof(PeerWaitReport), cudaHostAllocMapped | cudaHostAllocPortable) == cudaSuccess) {
      *static_cast<PeerWaitReport*>(p) = PeerWaitReport{};
      report_ptr = static_cast<PeerWaitReport*>(p);
      void* device = nullptr;
      if (cudaHostGetDevicePointer(&device, p, 0) == cudaSuccess) wait.report = static_cast<PeerWaitReport*>(device);
    }
    (void)cudaGetLastError();  // without a record the kernels still give up, only unexplained
  });
  return wait;
}

std::string peer_wait_note() {
  const volatile PeerWaitReport* r = report_ptr.load();
  if (r == nullptr || r->expired == 0) return "";
  return "rank " + std::to_string(r->rank) + " waited " + std::to_string(r->seconds) + " s for rank " +
         std::to_string(r->peer) + " in an all-reduce and gave up: rank " + std::to_string(r->peer) +
         " has failed or stalled (LAMINA_PEER_WAIT_TIMEOUT_S sets how long a rank waits)";
}

}  // namespace lamina::cuda
