// pdl_enabled() (pdl.cuh) and resident_blocks() (l2_prefetch.cuh): launch-time queries, cached.
#include <cstdlib>
#include <map>
#include <mutex>
#include <utility>

#include "l2_prefetch.cuh"
#include "pdl.cuh"

namespace lamina::cuda {

bool pdl_enabled() {
  // Asked once per device: this runs for every launch. (A race between two threads writes the
  // same value.)
  static int cached[64];  // 0 unknown, 1 yes, 2 no
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return false;
  if (cached[dev] == 0) {
    int major = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) major = 0;
    const char* env = std::getenv("LAMINA_PDL");
    const bool off = env && env[0] == '0';
    cached[dev] = major >= 9 && !off ? 1 : 2;
  }
  return cached[dev] == 1;
}

int resident_blocks(const void* kernel, int threads, cudaStream_t stream) {
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, int> cache;  // (kernel, device) -> blocks
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 0;
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = cache.find({kernel, dev}); it != cache.end()) return it->second;
  cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capturing) != cudaSuccess || capturing != cudaStreamCaptureStatusNone) return 0;
  int sms = 0, per_sm = 0;
  const char* env = std::getenv("LAMINA_L2_PREFETCH");  // 0: off (for comparisons)
  if (env && env[0] == '0') return cache[{kernel, dev}] = 0;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, 0) != cudaSuccess) {
    cudaGetLastError();
    sms = per_sm = 0;
  }
  return cache[{kernel, dev}] = sms * per_sm;
}

}  // namespace lamina::cuda
