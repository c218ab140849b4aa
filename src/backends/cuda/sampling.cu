// Argmax and top-k/top-p sampling (definitions in cuda_sampling.h). One block of 1024 threads per
// row; no workspace: every pass re-reads the row (it stays in L2) and recomputes p_v.
//   top-k and top-p thresholds: a 4-pass radix select (8 bits a pass) over order-preserving 32-bit
//   keys of s_v, counting 1 per token (top-k) or summing p_v (top-p) in a 256-bucket histogram;
//   the result is the largest key whose tokens at or above it weigh at least the target.
//   draw: each thread sums a contiguous chunk; a block scan gives chunk offsets; the one thread
//   whose chunk holds the target walks it.
#include <cub/block/block_scan.cuh>
#include <cuda_runtime.h>

#include <climits>

#include "cuda_check.h"
#include "cuda_sampling.h"
#include "cuda_types.cuh"
#include "reduce.cuh"

namespace lamina::cuda {
namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ float sanitize(float v) { return v != v ? -INFINITY : v; }
// Logits arrive as float32 or in the engine dtype (float16 / bfloat16): every read widens.
template <typename T>
__device__ __forceinline__ float logit(const T* z, int v) { return sanitize(to_float(z[v])); }

// Order-preserving map float -> uint32 (larger float, larger key).
__device__ __forceinline__ uint32_t float_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// The lowest index among the largest values of x[0, V); NaN is skipped. All threads get it.
template <typename T>
__device__ int block_argmax(const T* x, int V) {
  __shared__ float s_val[32];
  __shared__ int s_idx[32];
  float best = -INFINITY;
  int best_i = INT_MAX;
  for (int v = threadIdx.x; v < V; v += blockDim.x) {
    const float f = logit(x, v);
    if (f > best || (f == best && v < best_i)) best = f, best_i = v;
  }
  auto better = [](float a, int ia, float b, int ib) { return a > b || (a == b && ia < ib); };
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (better(ov, oi, best, best_i)) best = ov, best_i = oi;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) s_val[warp] = best, s_idx[warp] = best_i;
  __syncthreads();
  best = lane < (blockDim.x >> 5) ? s_val[lane] : -INFINITY;
  best_i = lane < (blockDim.x >> 5) ? s_idx[lane] : INT_MAX;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (better(ov, oi, best, best_i)) best = ov, best_i = oi;
  }
  return best_i == INT_MAX ? 0 : best_i;
}

template <typename T>
__global__ void slice_argmax_kernel(const T* __restrict__ logits, int V, int64_t row_stride,
                                    lamina::SliceArgmax* __restrict__ out) {
  const T* row = logits + static_cast<size_t>(blockIdx.x) * row_stride;
  const int best = block_argmax(row, V);
  if (threadIdx.x == 0) out[blockIdx.x] = lamina::SliceArgmax{to_float(row[best]), best};
}

template <typename T>
__global__ void argmax_kernel(const T* __restrict__ logits, int V, int32_t* __restrict__ out) {
  const int best = block_argmax(logits + static_cast<size_t>(blockIdx.x) * V, V);
  if (threadIdx.x == 0) out[blockIdx.x] = best;
}

// Everything a pass needs to recompute s_v, its key and p_v from a logit.
template <typename T>
struct Row {
  const T* z;
  int V;
  float inv_t;    // 1 / temperature
  float s_max;    // max s_v
  __device__ float s(int v) const { return logit(z, v) * inv_t; }
  __device__ float p(float s_v) const { return exp2f((s_v - s_max) * 1.4426950408889634f); }
};

// Largest key θ such that the weight of tokens with key >= max(θ, floor) reaches `target`
// (weight 1 each, or p_v when `by_mass`). When rounding leaves the target out of reach, the
// smallest key with weight is returned (every token with weight is kept).
template <typename T>
__device__ uint32_t radix_select(const Row<T>& row, uint32_t floor, bool by_mass, float target) {
  __shared__ float hist[256];
  __shared__ uint32_t s_prefix;
  __shared__ float s_target;
  uint32_t prefix = 0;
  for (int pass = 0; pass < 4; ++pass) {
    const int shift = 24 - 8 * pass;
    const uint32_t high_mask = pass == 0 ? 0u : (0xffffffffu << (shift + 8));
    for (int i = threadIdx.x; i < 256; i += blockDim.x) hist[i] = 0.0f;
    __syncthreads();
    for (int v = threadIdx.x; v < row.V; v += blockDim.x) {
      const float s = row.s(v);
      const uint32_t key = float_key(s);
      if (key >= floor && (key & high_mask) == prefix) atomicAdd(&hist[(key >> shift) & 255u], by_mass ? row.p(s) : 1.0f);
    }
    __syncthreads();
    if (threadIdx.x < 32) {
      // Lane l owns buckets 255-8l down to 248-8l (descending key order across lanes).
      const int lane = threadIdx.x;
      float own = 0.0f;
#pragma unroll
      for (int k = 0; k < 8; ++k) own += hist[255 - 8 * lane - k];
      float incl = own;  // inclusive prefix over lanes
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const float up = __shfl_up_sync(0xffffffffu, incl, o);
        if (lane >= o) incl += up;
      }
      const float tgt = pass == 0 ? target : s_target;
      const unsigned reached = __ballot_sync(0xffffffffu, incl >= tgt);
      const unsigned nonzero = __ballot_sync(0xffffffffu, own > 0.0f);
      // The lane holding the cut: the first to reach the target, else the last with weight.
      const int cut_lane = reached ? __ffs(reached) - 1 : (nonzero ? 31 - __clz(nonzero) : 31);
      if (lane == cut_lane) {
        int bucket = -1;
        float before = incl - own;  // weight of the buckets above this lane's
        if (reached) {
          for (int k = 0; k < 8; ++k) {
            const int b = 255 - 8 * lane - k;
            if (before + hist[b] >= tgt) {
              bucket = b;
              break;
            }
            before += hist[b];
          }
        }
        if (bucket < 0) {  // out of reach (rounding): keep all, i.e. cut at the lowest bucket with weight
          bucket = 255 - 8 * lane - 7;
          for (int k = 0; k < 8; ++k)
            if (hist[255 - 8 * lane - k] > 0.0f) bucket = 255 - 8 * lane - k;
          before = incl - own;
          for (int k = 0; k < 8; ++k)
            if (255 - 8 * lane - k > bucket) before += hist[255 - 8 * lane - k];
        }
        s_prefix = prefix | (static_cast<uint32_t>(bucket) << shift);
        s_target = tgt - before;
      }
    }
    __syncthreads();
    prefix = s_prefix;
  }
  return prefix;
}

template <typename T>
__global__ void sample_kernel(const T* __restrict__ logits, int V, const SampleParams* __restrict__ params,
                              int32_t* __restrict__ out) {
  using Scan = cub::BlockScan<float, kThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ float scratch[32];
  __shared__ int s_owner;
  __shared__ int s_token;

  const int b = blockIdx.x;
  const SampleParams P = params[b];
  const T* z = logits + static_cast<size_t>(b) * V;
  if (!(P.temperature > 0.0f)) {
    const int best = block_argmax(z, V);
    if (threadIdx.x == 0) out[b] = best;
    return;
  }
  Row<T> row{z, V, 1.0f / P.temperature, -INFINITY};
  float mx = -INFINITY;
  for (int v = threadIdx.x; v < V; v += blockDim.x) mx = fmaxf(mx, row.s(v));
  row.s_max = block_max(mx, scratch);
  if (row.s_max == -INFINITY) {  // nothing can be drawn
    if (threadIdx.x == 0) out[b] = 0;
    return;
  }

  uint32_t theta = 0;
  if (P.top_k > 0 && P.top_k < V) theta = radix_select(row, 0u, false, static_cast<float>(P.top_k));
  if (P.top_p < 1.0f) {
    float mass = 0.0f;
    for (int v = threadIdx.x; v < V; v += blockDim.x) {
      const float s = row.s(v);
      if (float_key(s) >= theta) mass += row.p(s);
    }
    mass = block_sum(mass, scratch);
    theta = radix_select(row, theta, true, P.top_p * mass);
  }

  // Draw: thread i sums its contiguous chunk of kept p_v; a block scan orders the chunks.
  const int chunk = (V + kThreads - 1) / kThreads;
  const int begin = min(V, static_cast<int>(threadIdx.x) * chunk), end = min(V, begin + chunk);
  float own = 0.0f;
  for (int v = begin; v < end; ++v) {
    const float s = row.s(v);
    if (float_key(s) >= theta) own += row.p(s);
  }
  float before = 0.0f, total = 0.0f;
  Scan(scan_storage).ExclusiveSum(own, before, total);
  if (threadIdx.x == 0) s_owner = -1;
  __syncthreads();
  const float target = P.uniform * total;
  if (own > 0.0f && before <= target) atomicMax(&s_owner, static_cast<int>(threadIdx.x));
  __syncthreads();
  if (static_cast<int>(threadIdx.x) == s_owner) {
    float run = before;
    int pick = -1, last = -1;
    for (int v = begin; v < end; ++v) {
      const float s = row.s(v);
      if (float_key(s) < theta) continue;
      const float pv = row.p(s);
      if (pv <= 0.0f) continue;
      last = v;
      run += pv;
      if (run > target) {
        pick = v;
        break;
      }
    }
    s_token = pick >= 0 ? pick : last;
  }
  __syncthreads();
  if (threadIdx.x == 0) out[b] = s_owner >= 0 ? s_token : 0;
}

}  // namespace

void launch_argmax(const float* logits, int B, int V, int32_t* out_ids, cudaStream_t stream) {
  if (B <= 0) return;
  argmax_kernel<<<B, kThreads, 0, stream>>>(logits, V, out_ids);
  CUDA_CHECK_LAUNCH();
}

void launch_sample(const float* logits, int B, int V, const SampleParams* params, int32_t* out_ids,
                   cudaStream_t stream) {
  if (B <= 0) return;
  sample_kernel<<<B, kThreads, 0, stream>>>(logits, V, params, out_ids);
  CUDA_CHECK_LAUNCH();
}

void launch_slice_argmax(DType dt, const void* logits, int B, int V, int64_t row_stride, lamina::SliceArgmax* out,
                         cudaStream_t stream) {
  if (B <= 0) return;
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    slice_argmax_kernel<<<B, kThreads, 0, stream>>>(static_cast<const E*>(logits), V, row_stride, out);
  });
  CUDA_CHECK_LAUNCH();
}

void launch_sample(DType dt, const void* logits, int B, int V, const SampleParams* params, int32_t* out_ids,
                   cudaStream_t stream) {
  if (B <= 0) return;
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    sample_kernel<<<B, kThreads, 0, stream>>>(static_cast<const E*>(logits), V, params, out_ids);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace lamina::cuda
