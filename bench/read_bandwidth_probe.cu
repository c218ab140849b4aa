// Diagnostic: how fast this GPU streams bytes it only reads, against the device-to-device copy
// (bytes read + written) that docs/performance.md takes as the memory ceiling. A one-token decode
// step only reads weights, so if plain reads run faster than the copy, the GEMVs that reach ~100 %
// of the copy figure (gate_up, down) still have room. Built by bench/CMakeLists.txt (or alone:
// nvcc -O3 -std=c++17 -arch=sm_90a -Isrc bench/read_bandwidth_probe.cu -o /tmp/probe):
//   build-device/bench/read_bandwidth_probe
// Each case reads a buffer of the size of a Llama-3-8B FP8 matrix (or 1 GiB) from a 4 GiB pool,
// a different region every repetition so that L2 (50 MB) never holds it, back to back in a CUDA
// graph as a decode step replays its kernels. Variants:
//   ldg      grid-stride 16-byte ld.global.nc.L1::no_allocate loads, U independent loads a thread
//   span     each block its own contiguous span (as a GEMV block owns rows), U loads in flight
//   bulk     cp.async.bulk (the TMA's 1-D copy) into a ring of S shared-memory stages a block
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "backends/cuda/cuda_types.cuh"
#include "probe_check.h"

namespace {

// The GEMVs' weight load (16 bytes, read-only, not kept in L1).
__device__ __forceinline__ uint4 ld_stream(const uint4* p) { return lamina::cuda::load_stream16(p); }

// Folds what was read into one word a thread, written only if impossible, so nothing is elided.
__device__ __forceinline__ void sink(uint32_t v, uint32_t* out) {
  if (v == 0x9e3779b9u) out[threadIdx.x] = v;
}

template <int U>
__global__ void read_ldg(const uint4* __restrict__ p, size_t n, uint32_t* out) {
  uint32_t acc = 0;
  const size_t stride = static_cast<size_t>(gridDim.x) * blockDim.x;
  size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + (U - 1) * stride < n; i += U * stride) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = ld_stream(p + i + u * stride);
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < n; i += stride) {
    const uint4 v = ld_stream(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  sink(acc, out);
}

// Block b reads chunks [b * per, (b + 1) * per), thread t chunks t, t + B, ... of it.
template <int U>
__global__ void read_span(const uint4* __restrict__ p, size_t n, uint32_t* out) {
  const size_t per = (n + gridDim.x - 1) / gridDim.x;
  const size_t begin = blockIdx.x * per, end = begin + per < n ? begin + per : n;
  uint32_t acc = 0;
  size_t i = begin + threadIdx.x;
  for (; i + (U - 1) * blockDim.x < end; i += U * blockDim.x) {
    uint4 v[U];
#pragma unroll
    for (int u = 0; u < U; ++u) v[u] = ld_stream(p + i + u * blockDim.x);
#pragma unroll
    for (int u = 0; u < U; ++u) acc ^= v[u].x ^ v[u].y ^ v[u].z ^ v[u].w;
  }
  for (; i < end; i += blockDim.x) {
    const uint4 v = ld_stream(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  sink(acc, out);
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
  asm volatile("mbarrier.init.shared.b64 [%0], %1;" ::"r"(static_cast<uint32_t>(__cvta_generic_to_shared(bar))),
               "r"(count));
}
__device__ __forceinline__ void mbar_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared.b64 _, [%0], %1;" ::"r"(
                   static_cast<uint32_t>(__cvta_generic_to_shared(bar))),
               "r"(bytes));
}
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t phase) {
  asm volatile(
      "{\n .reg .pred p;\n W: mbarrier.try_wait.parity.shared.b64 p, [%0], %1;\n @!p bra W;\n}\n" ::"r"(
          static_cast<uint32_t>(__cvta_generic_to_shared(bar))),
      "r"(phase));
}
__device__ __forceinline__ void bulk_copy(void* smem, const void* gmem, uint32_t bytes, uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
          static_cast<uint32_t>(__cvta_generic_to_shared(smem))),
      "l"(gmem), "r"(bytes), "r"(static_cast<uint32_t>(__cvta_generic_to_shared(bar)))
      : "memory");
}
#endif

// Each block streams its span through S stages of kStage bytes: thread 0 issues the bulk copies,
// every thread folds the landed stage, then the stage is refilled.
template <int S, int kStage>
__global__ void read_bulk(const uint8_t* __restrict__ p, size_t bytes, uint32_t* out) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ __align__(8) uint64_t bars[S];
  const size_t per = ((bytes + gridDim.x - 1) / gridDim.x + kStage - 1) / kStage * kStage;
  const size_t begin = blockIdx.x * per;
  const size_t end = begin + per < bytes ? begin + per : bytes;
  const int tiles = begin < end ? static_cast<int>((end - begin + kStage - 1) / kStage) : 0;
  if (threadIdx.x == 0)
    for (int s = 0; s < S; ++s) mbar_init(&bars[s], 1);
  asm volatile("fence.proxy.async.shared::cta;");
  __syncthreads();
  auto issue = [&](int t) {
    const int s = t % S;
    const size_t off = begin + static_cast<size_t>(t) * kStage;
    const uint32_t n = static_cast<uint32_t>(end - off < kStage ? end - off : kStage);
    mbar_expect_tx(&bars[s], n);
    bulk_copy(smem + s * kStage, p + off, n, &bars[s]);
  };
  if (threadIdx.x == 0)
    for (int t = 0; t < S && t < tiles; ++t) issue(t);
  uint32_t acc = 0;
  for (int t = 0; t < tiles; ++t) {
    const int s = t % S;
    mbar_wait(&bars[s], (t / S) & 1);
    const uint4* v = reinterpret_cast<const uint4*>(smem + s * kStage);
    for (int i = threadIdx.x; i < kStage / 16; i += blockDim.x) acc ^= v[i].x ^ v[i].w;
    __syncthreads();
    if (threadIdx.x == 0 && t + S < tiles) issue(t + S);
  }
  sink(acc, out);
#endif
}

struct Pool {
  uint8_t* base;
  size_t bytes;
};

// Times `reps` launches of `launch(ptr)` over rotating regions, captured in one CUDA graph.
template <typename F>
double time_graph(const Pool& pool, size_t bytes, int reps, F launch) {
  cudaStream_t st;
  PROBE_CHECK(cudaStreamCreate(&st));
  const size_t slots = pool.bytes / bytes;
  cudaGraph_t g;
  PROBE_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
  for (int r = 0; r < reps; ++r) launch(pool.base + (r % slots) * bytes, st);
  PROBE_CHECK(cudaStreamEndCapture(st, &g));
  cudaGraphExec_t ge;
  PROBE_CHECK(cudaGraphInstantiate(&ge, g, 0));
  PROBE_CHECK(cudaGraphLaunch(ge, st));  // warm
  PROBE_CHECK(cudaStreamSynchronize(st));
  cudaEvent_t a, b;
  PROBE_CHECK(cudaEventCreate(&a));
  PROBE_CHECK(cudaEventCreate(&b));
  float best = 1e30f;
  for (int trial = 0; trial < 5; ++trial) {
    PROBE_CHECK(cudaEventRecord(a, st));
    PROBE_CHECK(cudaGraphLaunch(ge, st));
    PROBE_CHECK(cudaEventRecord(b, st));
    PROBE_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    PROBE_CHECK(cudaEventElapsedTime(&ms, a, b));
    if (ms < best) best = ms;
  }
  PROBE_CHECK(cudaGraphExecDestroy(ge));
  PROBE_CHECK(cudaGraphDestroy(g));
  PROBE_CHECK(cudaStreamDestroy(st));
  return best / reps;
}

}  // namespace

int main() {
  int dev = 0, sms = 0;
  PROBE_CHECK(cudaGetDevice(&dev));
  PROBE_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  cudaDeviceProp prop;
  PROBE_CHECK(cudaGetDeviceProperties(&prop, dev));
  std::printf("%s, %d SMs\n", prop.name, sms);
  Pool pool{nullptr, size_t(4) << 30};
  PROBE_CHECK(cudaMalloc(&pool.base, pool.bytes));
  PROBE_CHECK(cudaMemset(pool.base, 1, pool.bytes));
  uint32_t* out;
  PROBE_CHECK(cudaMalloc(&out, 1024 * sizeof(uint32_t)));

  {  // the copy ceiling: 1 GiB read + 1 GiB written
    const size_t half = pool.bytes / 2;
    const size_t bytes = size_t(1) << 30;
    const double ms = time_graph(Pool{pool.base, half}, bytes, 8, [&](uint8_t* src, cudaStream_t st) {
      PROBE_CHECK(cudaMemcpyAsync(pool.base + half, src, bytes, cudaMemcpyDeviceToDevice, st));
    });
    std::printf("%-34s %9.1f GB/s (read + write)\n", "copy 1 GiB", 2.0 * bytes / (ms * 1e-3) / 1e9);
  }

  const struct {
    const char* name;
    size_t bytes;
  } sizes[] = {{"16.8 MB (o)", 4096ull * 4096}, {"25.2 MB (qkv)", 6144ull * 4096}, {"58.7 MB (down)", 4096ull * 14336},
               {"117 MB (gate_up)", 28672ull * 4096}, {"1 GiB", 1ull << 30}};
  for (const auto& sz : sizes) {
    const size_t n16 = sz.bytes / 16;
    const int reps = sz.bytes > (size_t(256) << 20) ? 8 : 64;
    auto report = [&](const char* v, double ms) {
      std::printf("%-18s %-16s %9.2f us %9.1f GB/s\n", sz.name, v, ms * 1e3, sz.bytes / (ms * 1e-3) / 1e9);
    };
    for (int per_sm : {2, 4, 8}) {
      char name[64];
      std::snprintf(name, sizeof name, "ldg U4 %dx256", per_sm);
      report(name, time_graph(pool, sz.bytes, reps, [&](uint8_t* p, cudaStream_t st) {
               read_ldg<4><<<sms * per_sm, 256, 0, st>>>(reinterpret_cast<const uint4*>(p), n16, out);
             }));
      std::snprintf(name, sizeof name, "ldg U8 %dx256", per_sm);
      report(name, time_graph(pool, sz.bytes, reps, [&](uint8_t* p, cudaStream_t st) {
               read_ldg<8><<<sms * per_sm, 256, 0, st>>>(reinterpret_cast<const uint4*>(p), n16, out);
             }));
      std::snprintf(name, sizeof name, "span U4 %dx256", per_sm);
      report(name, time_graph(pool, sz.bytes, reps, [&](uint8_t* p, cudaStream_t st) {
               read_span<4><<<sms * per_sm, 256, 0, st>>>(reinterpret_cast<const uint4*>(p), n16, out);
             }));
    }
    for (int blocks : {1024, 4096}) {
      char name[64];
      std::snprintf(name, sizeof name, "span U4 %d blk", blocks);
      report(name, time_graph(pool, sz.bytes, reps, [&](uint8_t* p, cudaStream_t st) {
               read_span<4><<<blocks, 256, 0, st>>>(reinterpret_cast<const uint4*>(p), n16, out);
             }));
    }
    {
      constexpr int S = 4, kStage = 32 << 10;
      PROBE_CHECK(cudaFuncSetAttribute(read_bulk<S, kStage>, cudaFuncAttributeMaxDynamicSharedMemorySize, S * kStage));
      for (int per_sm : {1, 2}) {
        char name[64];
        std::snprintf(name, sizeof name, "bulk 4x32K %dx128", per_sm);
        report(name, time_graph(pool, sz.bytes, reps, [&](uint8_t* p, cudaStream_t st) {
                 read_bulk<S, kStage><<<sms * per_sm, 128, S * kStage, st>>>(p, sz.bytes, out);
               }));
      }
    }
    {
      constexpr int S = 6, kStage = 32 << 10;
      PROBE_CHECK(cudaFuncSetAttribute(read_bulk<S, kStage>, cudaFuncAttributeMaxDynamicSharedMemorySize, S * kStage));
      report("bulk 6x32K 1x256", time_graph(pool, sz.bytes, reps, [&](uint8_t* p, cudaStream_t st) {
               read_bulk<S, kStage><<<sms, 256, S * kStage, st>>>(p, sz.bytes, out);
             }));
    }
  }
  PROBE_CHECK(cudaGetLastError());
  PROBE_CHECK(cudaDeviceSynchronize());
  return 0;
}
