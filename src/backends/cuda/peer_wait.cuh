// The kernels' side of the waits that give up (peer_wait.h): a wait is timed by the GPU's global
// timer in units of 2^20 ns (~1 ms), one 32-bit register a wait; past its limit the first thread to
// give up writes the report and the kernel traps.
#pragma once
#include <cstdint>

#include "backends/cuda/peer_wait.h"

namespace lamina::cuda {

__device__ __forceinline__ uint32_t peer_wait_now() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return uint32_t(t >> 20);
}

// Elects the first thread of this module's kernels to give up (device memory: atomics to mapped
// host memory need the bus's support).
static __device__ unsigned peer_wait_reported = 0;

// Kept inline with no call in it: a call (printf) made the fused all-reduce's registers spill.
// Only the elected thread traps, once its report has landed: a trap from any other thread would end
// the kernel with the report half written. The others return and poll on until it does.
__device__ __forceinline__ void peer_wait_give_up(const PeerWait& wait, int rank, int peer) {
  volatile PeerWaitReport* r = wait.report;
  if (r == nullptr) asm volatile("trap;");
  if (atomicExch(&peer_wait_reported, 1u) != 0) return;
  r->rank = rank;
  r->peer = peer;
  r->seconds = uint32_t(((uint64_t(wait.units) << 20) + 500000000ull) / 1000000000ull);
  __threadfence_system();  // the fields land before the flag that says they are there
  r->expired = 1;
  __threadfence_system();
  asm volatile("trap;");
}

// One wait: started at the first poll that found nothing, checked at every poll after it.
struct PeerWaitClock {
  uint32_t start = 0;  // 0: not started (a start that reads 0 only delays the limit by one unit)
  __device__ __forceinline__ void poll(const PeerWait& wait, int rank, int peer) {
    if (wait.units == 0) return;
    const uint32_t now = peer_wait_now();
    if (start == 0) start = now;
    else if (now - start > wait.units) peer_wait_give_up(wait, rank, peer);
  }
};

}  // namespace lamina::cuda
