// pdl_enabled(): see pdl.cuh.
#include <cstdlib>

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

}  // namespace lamina::cuda
