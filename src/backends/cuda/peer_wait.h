// Waits on another GPU that give up. The peer all-reduces' kernels spin until their peers' data
// or flags land in their memory; a rank that has failed (an error on its host thread, a lost GPU)
// never sends them, and without a limit the ranks waiting for it would spin for ever and hang the
// process. Past the limit a waiting kernel records who it waited for and traps (peer_wait.cuh), so
// that its rank's next synchronisation fails; the CUDA error then carries that record
// (peer_wait_note), and RankWorkers reports the error thrown first, the failed rank's own.
// LAMINA_PEER_WAIT_TIMEOUT_S sets the limit in seconds (default 60: a healthy step makes one rank
// wait on another for milliseconds at most); 0 waits for ever.
#pragma once
#include <cstdint>
#include <string>

namespace lamina::cuda {

// What the first kernel to give up wrote, in mapped host memory (one record a process).
struct PeerWaitReport {
  int32_t expired;  // written last
  int32_t rank, peer;
  uint32_t seconds;
};

// A kernel's view: the limit in units of 2^20 ns of the GPU's global timer (0: none), and where to
// report.
struct PeerWait {
  uint32_t units;
  PeerWaitReport* report;
};

// LAMINA_PEER_WAIT_TIMEOUT_S (read once) and the process's report; a bad value stops with a message.
PeerWait peer_wait();

// "" while no kernel has given up; else a sentence naming the rank that waited and the one it
// waited for.
std::string peer_wait_note();

}  // namespace lamina::cuda
