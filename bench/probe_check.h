// The standalone diagnostic programs' (fp8_gemm_probe.cu, read_bandwidth_probe.cu) check of a CUDA
// runtime call: print the error and where, then exit. They link only the CUDA libraries, so not
// lamina's CUDA_CHECK (backends/cuda/cuda_check.h), which throws lamina::Error.
#pragma once
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>

#define PROBE_CHECK(x)                                                                     \
  do {                                                                                     \
    cudaError_t e_ = (x);                                                                  \
    if (e_ != cudaSuccess) {                                                               \
      std::printf("CUDA error %s at %s:%d\n", cudaGetErrorString(e_), __FILE__, __LINE__); \
      std::exit(1);                                                                        \
    }                                                                                      \
  } while (0)
