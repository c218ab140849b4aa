// The block shape of the RMSNorm kernels (rms_norm.cu) for rows of H elements read per_thread at
// a time: enough threads for one access each, 64..1024. A kernel that fuses the norm into another
// step (peer_all_reduce_norm.cu) uses the same shape, so its block sums of squares, and with them
// its outputs, are bit-identical to the plain norm's.
#pragma once

namespace lamina::cuda {

inline int rms_norm_threads(int H, int per_thread) {
  const int accesses = (H + per_thread - 1) / per_thread;
  const int threads = (accesses + 31) / 32 * 32;
  return threads < 64 ? 64 : (threads > 1024 ? 1024 : threads);
}

}  // namespace lamina::cuda
