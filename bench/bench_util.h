// Timing and data helpers for the kernel benchmarks: CUDA-event timing (warm-up, batches sized to
// ~2 ms, median over samples), random device fills (never zeros), rotating buffer sets larger
// than L2 so repeated runs read DRAM, not cache.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <vector>

namespace lamina::bench {

struct Timing {
  double ms = 0;       // median time of one call
  bool graph = false;  // measured as CUDA-graph replays (else direct launches)
};

// Median time of one call of fn(i) (i counts calls, for rotating inputs). Each sample is a batch of
// calls lasting ~sample_target_ms, captured once into a CUDA graph and replayed (no host launch
// gaps; this also proves the calls are capturable); if capture fails, direct launches are timed.
// try_graph = false times direct launches (long calls, where launch gaps do not matter).
Timing time_ms(cudaStream_t stream, const std::function<void(int)>& fn, int samples = 15,
               double sample_target_ms = 2.0, bool try_graph = true);

// Fills n 16-bit (bf16) elements with values uniform in [-scale, scale] from a hash of (seed, i).
void fill_random_bf16(void* dst, size_t n, unsigned seed, float scale, cudaStream_t stream);

// `copies` device buffers of `bytes` each, enough of them that together they exceed min_total.
struct Rotation {
  std::vector<void*> bufs;
  size_t bytes = 0;
  Rotation(size_t bytes, size_t min_total, unsigned seed, cudaStream_t stream, float scale = 1.0f);
  ~Rotation();
  Rotation(const Rotation&) = delete;
  Rotation& operator=(const Rotation&) = delete;
  void* at(int i) const { return bufs[static_cast<size_t>(i) % bufs.size()]; }
};

}  // namespace lamina::bench
