// Argmax and top-k/top-p sampling (definitions in cuda_sampling.h). One block of 1024 threads per
// row; no workspace: every pass re-reads the row (it stays in L2, 16 bytes a load: for_each_logit)
// and recomputes p_v.
//   top-k and top-p thresholds: a 4-pass radix select (8 bits a pass) over order-preserving 32-bit
//   keys of s_v, counting 1 per token (top-k) or summing p_v (top-p) in a 256-bucket histogram;
//   the result is the largest key whose tokens at or above it weigh at least the target. A first
//   pass (measure_cuts) finds a floor below which no kept token lies, so the radix passes
//   histogram only the few tokens near the top.
//   draw: each thread sums a contiguous chunk; a block scan gives chunk offsets; the one thread
//   whose chunk holds the target walks it.
#include <cub/block/block_scan.cuh>
#include <cuda_runtime.h>

#include <climits>

#include "cuda_check.h"
#include "cuda_sampling.h"
#include "cuda_types.cuh"
#include "reduce.cuh"
#include "slice_argmax_join.cuh"

namespace lamina::cuda {
namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ float sanitize(float v) { return v != v ? -INFINITY : v; }
// Logits arrive as float32 or in the engine dtype (float16 / bfloat16): every read widens.
template <typename T>
__device__ __forceinline__ float logit(const T* z, int v) { return sanitize(to_float(z[v])); }

// Calls f(v, logit(z, v)) for this thread's share of v in [0, V): a pass over the row. The row
// is read 16 bytes at a time (4 loads in flight a thread), with the elements before the first
// 16-byte boundary and after the last whole vector read one by one. A thread's v are not visited
// in ascending order: passes combine them with order-free operations (max, sums, argmax with an
// index tie-break). One element at a time, a pass over 128k bf16 logits made ~125 dependent
// rounds a thread; this makes ~4.
template <typename T, typename F>
__device__ __forceinline__ void for_each_logit(const T* z, int V, F&& f) {
  constexpr int E = 16 / sizeof(T), kUnroll = 4;
  const int lead = min(V, static_cast<int>(((16 - (reinterpret_cast<uintptr_t>(z) & 15)) & 15) / sizeof(T)));
  const int nvec = (V - lead) / E;
  const int tail = lead + nvec * E;
  const uint4* vz = reinterpret_cast<const uint4*>(z + lead);
  for (int v = threadIdx.x; v < lead; v += blockDim.x) f(v, logit(z, v));
  for (int i = threadIdx.x; i < nvec; i += kUnroll * blockDim.x) {
    uint4 raw[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = i + u * blockDim.x;
      raw[u] = j < nvec ? __ldg(vz + j) : uint4{};
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int j = i + u * blockDim.x;
      if (j >= nvec) break;
      const T* e = reinterpret_cast<const T*>(&raw[u]);
#pragma unroll
      for (int k = 0; k < E; ++k) f(lead + j * E + k, sanitize(to_float(e[k])));
    }
  }
  for (int v = tail + threadIdx.x; v < V; v += blockDim.x) f(v, logit(z, v));
}

// Whether (a, ia) beats (b, ib): a larger value, or the same value at a lower index.
__device__ __forceinline__ bool better(float a, int ia, float b, int ib) { return a > b || (a == b && ia < ib); }

// The best (value, index) over the lanes of a warp (all 32 calling); every lane gets it.
__device__ __forceinline__ void warp_best(float& best, int& best_i) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, best, o);
    const int oi = __shfl_xor_sync(0xffffffffu, best_i, o);
    if (better(ov, oi, best, best_i)) best = ov, best_i = oi;
  }
}

// (value, index) of the largest of x[0, V) with the lowest index on ties; NaN is skipped; index
// INT_MAX when nothing was found (V == 0, or every value NaN). All threads get it.
template <typename T>
__device__ SliceArgmax block_best(const T* x, int V) {
  __shared__ float s_val[32];
  __shared__ int s_idx[32];
  float best = -INFINITY;
  int best_i = INT_MAX;
  for_each_logit(x, V, [&](int v, float f) {
    if (better(f, v, best, best_i)) best = f, best_i = v;
  });
  warp_best(best, best_i);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) s_val[warp] = best, s_idx[warp] = best_i;
  __syncthreads();
  best = lane < (blockDim.x >> 5) ? s_val[lane] : -INFINITY;
  best_i = lane < (blockDim.x >> 5) ? s_idx[lane] : INT_MAX;
  warp_best(best, best_i);
  return SliceArgmax{best, best_i};
}

// The lowest index among the largest values of x[0, V); NaN is skipped. All threads get it.
template <typename T>
__device__ int block_argmax(const T* x, int V) {
  const int best_i = block_best(x, V).index;
  return best_i == INT_MAX ? 0 : best_i;
}

// A greedy row's argmax split over gridDim.x blocks (few rows, as at batch 1: one block of a
// 128k-token row took ~9 us): block (s, b) writes the best of chunk s of row b into
// partials[b * gridDim.x + s]; sample_kernel joins them. Rows that sample are left to it.
constexpr int kSplitThreads = 256;
template <typename T>
__global__ void __launch_bounds__(kSplitThreads)
    greedy_partial_kernel(const T* __restrict__ logits, int V, int chunk, const SampleParams* __restrict__ params,
                          SliceArgmax* __restrict__ partials) {
  const int s = blockIdx.x, b = blockIdx.y;
  if (params[b].temperature > 0.0f) return;
  const int start = min(V, s * chunk);
  const SliceArgmax best = block_best(logits + static_cast<size_t>(b) * V + start, min(chunk, V - start));
  if (threadIdx.x == 0)
    partials[static_cast<size_t>(b) * gridDim.x + s] = {best.value, best.index == INT_MAX ? INT_MAX : start + best.index};
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

// The sum of v over the lanes of `active` (the calling lanes, all of them calling): a butterfly
// when the whole warp is there, else one shuffle per lane (tails of a pass only).
__device__ __forceinline__ float sum_over_lanes(unsigned active, float v) {
  if (active == 0xffffffffu) return warp_sum(v);
  float total = 0.0f;
  for (unsigned rest = active; rest; rest &= rest - 1) total += __shfl_sync(active, v, __ffs(rest) - 1);
  return total;
}

// hist[bucket] += w for every lane of the calling warp's converged lanes that has a bucket (>= 0),
// with one shared-memory atomic per distinct bucket: logits cluster in a few buckets (the first
// radix pass keys on the exponent), and one atomic a lane on the same few addresses serialised
// there (top_k 50, top_p 0.9 over 128k bf16 logits, bench_kernels on an H100: 1.36 ms a row with
// an atomic a lane, 1.08 with this; 0.38 with the floors of measure_cuts as well).
__device__ __forceinline__ void warp_aggregated_add(float* hist, int bucket, float w) {
  const unsigned active = __activemask();
  const unsigned lane = threadIdx.x & 31u;
  const unsigned peers = __match_any_sync(active, bucket);
  unsigned todo = active;
  while (todo) {  // warp-uniform: todo and grp are the same in every lane of `active`
    const int leader = __ffs(todo) - 1;
    const unsigned grp = __shfl_sync(active, peers, leader);
    const float part = sum_over_lanes(active, (grp >> lane) & 1u ? w : 0.0f);
    const int b = __shfl_sync(active, bucket, leader);
    if (static_cast<int>(lane) == leader && b >= 0) atomicAdd(&hist[b], part);
    todo &= ~grp;
  }
}

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
    for_each_logit(row.z, row.V, [&](int, float f) {
      const float s = f * row.inv_t;
      const uint32_t key = float_key(s);
      const bool counts = key >= floor && (key & high_mask) == prefix;
      if (__any_sync(__activemask(), counts))  // tokens below the floor or off the prefix cost a vote only
        warp_aggregated_add(hist, counts ? static_cast<int>((key >> shift) & 255u) : -1,
                            counts ? (by_mass ? row.p(s) : 1.0f) : 0.0f);
    });
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

// Cuts s_v >= s_max - delta_j, delta_j = base * 2^j (p_v >= e^-delta_j), tightest first. measure_cuts counts the
// tokens and sums the mass p_v at or above each cut in one pass with no atomics; a radix select
// given as floor a cut that already holds its target finds the same θ (nothing below the floor can
// be in the answer), while its passes histogram only the tokens above the floor, which are few. Its
// first pass over all 128k logits otherwise piles them into a handful of exponent buckets.
// (6 cuts a pass: with 1024 threads a block a thread has 64 registers, and 10 cuts spilled.) A
// first pass takes base 0.5 (cuts 0.5 .. 16); where its tightest cut still holds more than
// kRefineAbove tokens (flat logits: 4 % of a 128k vocabulary within 0.5 of the max), a second
// pass measures 6 cuts 64 times tighter, so a top_k of 50 gets a floor near its 50 tokens.
constexpr int kCuts = 6;
constexpr float kCoarseCutBase = 0.5f, kFineCutBase = kCoarseCutBase / 64.0f;
constexpr float kRefineAbove = 256.0f;
__device__ __forceinline__ float cut_delta(float base, int j) { return base * static_cast<float>(1 << j); }

// key[j] = the key of cut j of `base`, count[j] and mass[j] what it holds (shared arrays; every
// thread calls, every thread sees the results).
template <typename T>
__device__ void measure_cuts(const Row<T>& row, float base, uint32_t* key, float* count, float* mass) {
  __shared__ float part[32][2 * kCuts];  // [warp][count of each cut, then mass of each cut]
  uint32_t k[kCuts];
#pragma unroll
  for (int j = 0; j < kCuts; ++j) k[j] = float_key(row.s_max - cut_delta(base, j));
  float c[kCuts] = {}, m[kCuts] = {};
  for_each_logit(row.z, row.V, [&](int, float f) {
    const float s = f * row.inv_t;
    const uint32_t sk = float_key(s);
    const float p = row.p(s);
#pragma unroll
    for (int j = 0; j < kCuts; ++j) {
      const bool in = sk >= k[j];  // keys, as radix_select compares them (-0 below +0)
      c[j] += in ? 1.0f : 0.0f;
      m[j] += in ? p : 0.0f;
    }
  });
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
#pragma unroll
  for (int j = 0; j < kCuts; ++j) {
    c[j] = warp_sum(c[j]);
    m[j] = warp_sum(m[j]);
  }
  if (lane == 0) {
#pragma unroll
    for (int j = 0; j < kCuts; ++j) part[warp][j] = c[j], part[warp][kCuts + j] = m[j];
  }
  __syncthreads();
  if (threadIdx.x < 2 * kCuts) {
    float total = 0.0f;
    for (int w = 0; w < static_cast<int>(blockDim.x >> 5); ++w) total += part[w][threadIdx.x];
    if (threadIdx.x < kCuts) {
      count[threadIdx.x] = total;
      key[threadIdx.x] = float_key(row.s_max - cut_delta(base, threadIdx.x));
    } else {
      mass[threadIdx.x - kCuts] = total;
    }
  }
  __syncthreads();
}

// split > 0: greedy rows take the join of greedy_partial_kernel's split partials instead.
template <typename T>
__global__ void __launch_bounds__(kThreads) sample_kernel(const T* __restrict__ logits, int V, const SampleParams* __restrict__ params,
                              int32_t* __restrict__ out, const SliceArgmax* __restrict__ partials, int split) {
  using Scan = cub::BlockScan<float, kThreads>;
  __shared__ typename Scan::TempStorage scan_storage;
  __shared__ float scratch[32];
  __shared__ int s_owner;
  __shared__ int s_token;

  const int b = blockIdx.x;
  const SampleParams P = params[b];
  const T* z = logits + static_cast<size_t>(b) * V;
  if (!(P.temperature > 0.0f) && split > 0) {  // warp 0 joins the partials, two a lane
    if (threadIdx.x >= 32) return;
    float best = -INFINITY;
    int best_i = INT_MAX;
    for (int i = threadIdx.x; i < split; i += 32) {
      const SliceArgmax p = partials[static_cast<size_t>(b) * split + i];
      if (better(p.value, p.index, best, best_i)) best = p.value, best_i = p.index;
    }
    warp_best(best, best_i);
    if (threadIdx.x == 0) out[b] = best_i == INT_MAX ? 0 : best_i;
    return;
  }
  if (!(P.temperature > 0.0f)) {
    const int best = block_argmax(z, V);
    if (threadIdx.x == 0) out[b] = best;
    return;
  }
  Row<T> row{z, V, 1.0f / P.temperature, -INFINITY};
  float mx = -INFINITY;
  for_each_logit(z, V, [&](int, float f) { mx = fmaxf(mx, f * row.inv_t); });
  row.s_max = block_max(mx, scratch);
  if (row.s_max == -INFINITY) {  // nothing can be drawn
    if (threadIdx.x == 0) out[b] = 0;
    return;
  }

  const bool top_k_on = P.top_k > 0 && P.top_k < V, top_p_on = P.top_p < 1.0f;
  // Cuts tightest first: the fine pass's (when it runs) in [0, kCuts), the coarse pass's after.
  __shared__ uint32_t cut_key[2 * kCuts];
  __shared__ float cut_count[2 * kCuts], cut_mass[2 * kCuts];
  const bool cuts = isfinite(row.s_max) && (top_k_on || top_p_on);
  int first_cut = 2 * kCuts;  // none
  if (cuts) {
    measure_cuts(row, kCoarseCutBase, cut_key + kCuts, cut_count + kCuts, cut_mass + kCuts);
    first_cut = kCuts;
    if (cut_count[kCuts] > kRefineAbove) {  // the same value in every thread: a uniform branch
      measure_cuts(row, kFineCutBase, cut_key, cut_count, cut_mass);
      first_cut = 0;
    }
  }
  uint32_t theta = 0;
  if (top_k_on) {
    uint32_t floor = 0;  // the tightest cut holding top_k tokens
    for (int j = first_cut; j < 2 * kCuts; ++j)
      if (cut_count[j] >= static_cast<float>(P.top_k)) {
        floor = cut_key[j];
        break;
      }
    theta = radix_select(row, floor, false, static_cast<float>(P.top_k));
  }
  if (top_p_on) {
    float mass = 0.0f;
    for_each_logit(z, V, [&](int, float f) {
      const float s = f * row.inv_t;
      if (float_key(s) >= theta) mass += row.p(s);
    });
    mass = block_sum(mass, scratch);
    const float target = P.top_p * mass;
    // The tightest cut above θ holding the target mass, with a margin for the sums' rounding
    // (the cuts' and the radix passes' add the same p_v in other orders).
    uint32_t floor = theta;
    for (int j = first_cut; j < 2 * kCuts; ++j)
      if (cut_key[j] >= theta && cut_mass[j] >= target * 1.001f) {
        floor = cut_key[j];
        break;
      }
    theta = radix_select(row, floor, true, target);
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

// gathered[b, tp, 2]: this rank's pair in slot `rank`, zeros elsewhere (one thread a slot).
__global__ void spread_slice_argmax_kernel(float* __restrict__ gathered, const lamina::SliceArgmax* __restrict__ mine,
                                           int B, int rank, int tp) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;  // slot i of B * tp
  if (i >= B * tp) return;
  const int b = i / tp, k = i % tp;
  float value = 0.0f, index = 0.0f;
  if (k == rank) {
    value = mine ? mine[b].value : __int_as_float(0x7fc00000);  // NaN: no candidate in this slice
    index = mine ? float(mine[b].index) : 0.0f;
  }
  gathered[2 * i] = value;
  gathered[2 * i + 1] = index;
}

// ids[b] = combine_slice_argmax of row b's tp pairs (one thread a row; tp is small): ranks in
// vocabulary order, so keeping the first of equal values keeps the lowest index; NaN never wins.
__global__ void join_slice_argmax_kernel(int32_t* __restrict__ ids, const float* __restrict__ gathered, int B, int tp,
                                         int64_t vocab_per_rank) {
  const int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= B) return;
  SliceArgmaxJoin join;
  for (int k = 0; k < tp; ++k)
    join.take(gathered[2 * (b * tp + k)], int64_t(k) * vocab_per_rank + int64_t(gathered[2 * (b * tp + k) + 1]));
  ids[b] = join.id();
}

}  // namespace

void launch_spread_slice_argmax(float* gathered, const lamina::SliceArgmax* mine, int B, int rank, int tp,
                                cudaStream_t stream) {
  if (B <= 0) return;
  const int n = B * tp;
  spread_slice_argmax_kernel<<<(n + 127) / 128, 128, 0, stream>>>(gathered, mine, B, rank, tp);
  CUDA_CHECK_LAUNCH();
}

void launch_join_slice_argmax(int32_t* ids, const float* gathered, int B, int tp, int64_t vocab_per_rank,
                              cudaStream_t stream) {
  if (B <= 0) return;
  join_slice_argmax_kernel<<<(B + 127) / 128, 128, 0, stream>>>(ids, gathered, B, tp, vocab_per_rank);
  CUDA_CHECK_LAUNCH();
}

void preload_slice_argmax_join() {
  // Loaded now, not at first launch: loading a kernel may wait for the device to go idle, which
  // a rank whose all-reduce waits for a peer must never do (docs/tensor-parallel.md).
  cudaFuncAttributes attr;
  CUDA_CHECK(cudaFuncGetAttributes(&attr, spread_slice_argmax_kernel));
  CUDA_CHECK(cudaFuncGetAttributes(&attr, join_slice_argmax_kernel));
}

void launch_argmax(const float* logits, int B, int V, int32_t* out_ids, cudaStream_t stream) {
  if (B <= 0) return;
  argmax_kernel<<<B, kThreads, 0, stream>>>(logits, V, out_ids);
  CUDA_CHECK_LAUNCH();
}

void launch_sample(const float* logits, int B, int V, const SampleParams* params, int32_t* out_ids,
                   cudaStream_t stream) {
  if (B <= 0) return;
  sample_kernel<<<B, kThreads, 0, stream>>>(logits, V, params, out_ids, nullptr, 0);
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
  launch_sample_split(dt, logits, B, V, params, out_ids, nullptr, 0, stream);
}

void launch_sample_split(DType dt, const void* logits, int B, int V, const SampleParams* params, int32_t* out_ids,
                         lamina::SliceArgmax* partials, int split, cudaStream_t stream) {
  if (B <= 0) return;
  if (V <= 0 || !partials) split = 0;
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    if (split > 0) {
      const int chunk = (V + split - 1) / split;
      greedy_partial_kernel<<<dim3(split, B), kSplitThreads, 0, stream>>>(static_cast<const E*>(logits), V, chunk,
                                                                         params, partials);
      CUDA_CHECK_LAUNCH();
    }
    sample_kernel<<<B, kThreads, 0, stream>>>(static_cast<const E*>(logits), V, params, out_ids, partials, split);
  });
  CUDA_CHECK_LAUNCH();
}

}  // namespace lamina::cuda
