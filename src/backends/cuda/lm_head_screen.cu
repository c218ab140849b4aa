// The screened greedy lm_head. A decode step of a few tokens reads lm_head [V, H] once a token (1.05
// GB in bf16 for Llama 3 8B: 10 % of an FP8 step, 14 % of a W4A16 one), yet greedy decoding keeps
// only each row's argmax. Here:
//   1. the one-token int8 GEMV (gemv_quant.cu) over an int8 copy of lm_head (per-row scales, made
//      at load) gives approximate logits a_v [R, V], reading half the bytes;
//   2. each approximate logit has an error bound e_v = |x| * bound_v + 2^-7 |a_v|, where bound_v =
//      1.01 |w_v - scale_v q_v| + c_H |w_v| (Cauchy-Schwarz over the quantization error, plus the
//      two GEMVs' fp32 rounding, c_H >= 3 H 2^-24) and the 2^-7 covers the rounding of a_v to
//      16 bits. With the 16-bit rounding of the exact logit (2^-8 relative) and margin, every row's
//      exact 16-bit logit lies in [lo_v, hi_v] = a_v -/+ (e_v + 2^-6 (|a_v| + e_v));
//   3. the argmax's row has hi >= its logit >= every other row's logit >= that row's lo, so only
//      rows with hi_v >= max_u lo_u can win (every row that ties for the maximum among them);
//   4. those candidates (a few hundred of 128k with random weights, fewer with trained ones) are
//      multiplied in full, by one warp each (a block's warps share its candidates) that replays
//      the one-token GEMV's 256-thread block (gemv.cu: thread i sums chunks i, i + 256, ... with
//      fmaf in order, warps reduce by xor shuffles, then the 8 warp sums in order from 0), so each
//      gets the GEMV's logit bit for bit; the largest (lowest index on ties, NaN never) is kept
//      with one 64-bit atomicMax a candidate.
// The result is the argmax of the logits the GEMV would have written, exactly: the same ids as
// select_tokens / slice_argmax_rows after matmul. Rows with non-finite weights, or a step whose
// bounds are not finite (x with inf or NaN), make every row a candidate (slow, still exact).
#include "backends/cuda/lm_head_screen.h"

#include <algorithm>
#include <cmath>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/pdl.cuh"
#include "backends/cuda/quant_kernels.h"
#include "backends/cuda/reduce.cuh"

namespace lamina::cuda {
namespace {

constexpr int kThreads = 256;      // a block of the kernels here
constexpr int kGemvThreads = 256;  // gemv.cu's block, whose sums the exact logits replay
constexpr int kScanBlocks = 256;   // blocks that scan one row's V approximate logits
constexpr int kScreenMaxHidden = 16384;  // x rows staged in shared memory (32 KB in 16 bits)
constexpr int kScreenMaxListed = 1024;   // candidates a block lists: its whole share of V

// The screen buffer: the int8 copy and its per-row numbers, then a step's workspace.
struct ScreenView {
  int8_t* q;                  // [V, H] int8, w ~ scale * q
  float* scale;               // [V]
  float* bound;               // [V] (step 2 above; inf for a row with non-finite weights)
  float* lo_max;              // [kScreenMaxRows][kScanBlocks]: each scan block's largest lo
  float* xnorm;               // [kScreenMaxRows]: |x_r| (rounded up)
  unsigned long long* best;   // [kScreenMaxRows]: the best candidate's key (pack_key), 0: none
};

size_t align256(size_t n) { return (n + 255) / 256 * 256; }

ScreenView screen_view(void* base, int V, int H) {
  auto* p = static_cast<char*>(base);
  ScreenView s;
  s.q = reinterpret_cast<int8_t*>(p);
  p += align256(size_t(V) * size_t(H));
  s.scale = reinterpret_cast<float*>(p);
  p += align256(size_t(V) * sizeof(float));
  s.bound = reinterpret_cast<float*>(p);
  p += align256(size_t(V) * sizeof(float));
  s.lo_max = reinterpret_cast<float*>(p);
  p += align256(size_t(kScreenMaxRows) * kScanBlocks * sizeof(float));
  s.xnorm = reinterpret_cast<float*>(p);
  p += align256(size_t(kScreenMaxRows) * sizeof(float));
  s.best = reinterpret_cast<unsigned long long*>(p);
  return s;
}

// The 16-bit element at p through L2 (the data was written by an earlier kernel of the step).
template <typename T>
__device__ __forceinline__ float load_l2(const T* p) {
  static_assert(sizeof(T) == 2, "16-bit elements");
  const unsigned short b = __ldcg(reinterpret_cast<const unsigned short*>(p));
  return to_float(*reinterpret_cast<const T*>(&b));
}

// One row of the int8 copy: scale = max|w| / 127 over the finite weights, q = round(w / scale).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    make_screen_kernel(ScreenView s, const T* __restrict__ w, int H, float rounding_coef) {
  __shared__ float scratch[32];
  const int v = blockIdx.x;
  const T* row = w + size_t(v) * size_t(H);
  float amax = 0.0f, bad = 0.0f;
  for (int k = threadIdx.x; k < H; k += kThreads) {
    const float x = to_float(row[k]);
    if (isfinite(x)) amax = fmaxf(amax, fabsf(x));
    else bad = 1.0f;
  }
  amax = block_max(amax, scratch);
  bad = block_max(bad, scratch);
  const float sc = amax > 0.0f ? amax / 127.0f : 1.0f;
  float d2 = 0.0f, w2 = 0.0f;
  for (int k = threadIdx.x; k < H; k += kThreads) {
    const float x = to_float(row[k]);
    float q = isfinite(x) ? rintf(x / sc) : 0.0f;
    q = fminf(fmaxf(q, -127.0f), 127.0f);
    s.q[size_t(v) * size_t(H) + k] = static_cast<int8_t>(q);
    const float d = x - sc * q;
    d2 = fmaf(d, d, d2);
    w2 = fmaf(x, x, w2);
  }
  d2 = block_sum(d2, scratch);
  w2 = block_sum(w2, scratch);
  if (threadIdx.x == 0) {
    s.scale[v] = sc;
    s.bound[v] = bad > 0.0f ? INFINITY : 1.01f * sqrtf(d2) + rounding_coef * sqrtf(w2);
  }
}

// Step 2's bound of an approximate logit a, and the interval of the exact 16-bit logit.
__device__ __forceinline__ float screen_error(float a, float xnorm, float bound) {
  return xnorm * bound + 0x1p-7f * fabsf(a);
}
__device__ __forceinline__ float screen_lo(float a, float e) { return a - e - 0x1p-6f * (fabsf(a) + e); }
__device__ __forceinline__ float screen_hi(float a, float e) { return a + e + 0x1p-6f * (fabsf(a) + e); }

__device__ __forceinline__ void scan_range(int V, int& begin, int& end) {
  const int per = (V + kScanBlocks - 1) / kScanBlocks;
  begin = min(V, int(blockIdx.x) * per);
  end = min(V, begin + per);
}

// grid (kScanBlocks, R): |x_r|, and each block's largest lo over its share of row r.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    screen_threshold_kernel(ScreenView s, const T* __restrict__ x, const T* __restrict__ approx, int V, int H) {
  __shared__ float scratch[32];
  pdl_launch_dependents();
  pdl_wait();  // x and the approximate logits come from the kernels before
  const int r = blockIdx.y;
  float ss = 0.0f;
  for (int k = threadIdx.x; k < H; k += kThreads) {
    const float v = load_l2(x + size_t(r) * size_t(H) + k);
    ss = fmaf(v, v, ss);
  }
  const float xnorm = sqrtf(block_sum(ss, scratch)) * 1.001f;
  int begin, end;
  scan_range(V, begin, end);
  float lo = -INFINITY;
  for (int v = begin + int(threadIdx.x); v < end; v += kThreads) {
    const float a = load_l2(approx + size_t(r) * size_t(V) + v);
    lo = fmaxf(lo, screen_lo(a, screen_error(a, xnorm, __ldg(s.bound + v))));
  }
  lo = block_max(lo, scratch);
  if (threadIdx.x == 0) {
    s.lo_max[r * kScanBlocks + blockIdx.x] = lo;
    if (blockIdx.x == 0) {
      s.xnorm[r] = xnorm;
      s.best[r] = 0ull;
    }
  }
}

// The one-token GEMV's logit of row w for x (x: [H] staged in shared memory as 16-byte chunks),
// replayed by one warp: lane l plays the block's threads l + 32 j (j < 8; thread i: chunks i, i +
// 256, ..., fmaf(x, w, acc) over each chunk's 8 elements in order), each played warp reduces by
// the same xor shuffles as the block's warp j, and the 8 warp sums add up in order from 0
// (reduce.cuh, block_sum_each). The loads of 2 rounds of chunks (16 a lane) are issued before
// their math: one latency a round instead of one a chunk.
template <typename T>
__device__ __forceinline__ float gemv_logit(const uint4* xs, const T* w, int H, int lane) {
  constexpr int kPlayed = kGemvThreads / 32, kRounds = 2;
  const int chunks = H / kVec<T>;
  const uint4* w16 = reinterpret_cast<const uint4*>(w);
  float acc[kPlayed] = {};
  for (int t0 = 0; t0 * kGemvThreads < chunks; t0 += kRounds) {
    uint4 wv[kRounds][kPlayed];
#pragma unroll
    for (int t = 0; t < kRounds; ++t)
#pragma unroll
      for (int j = 0; j < kPlayed; ++j) {
        const int c = lane + 32 * j + (t0 + t) * kGemvThreads;
        wv[t][j] = c < chunks ? __ldg(w16 + c) : uint4{};
      }
#pragma unroll
    for (int t = 0; t < kRounds; ++t)
#pragma unroll
      for (int j = 0; j < kPlayed; ++j) {
        const int c = lane + 32 * j + (t0 + t) * kGemvThreads;
        if (c >= chunks) continue;
        const uint4 xr = xs[c];
        const T* xe = reinterpret_cast<const T*>(&xr);
        const T* we = reinterpret_cast<const T*>(&wv[t][j]);
#pragma unroll
        for (int e = 0; e < kVec<T>; ++e) acc[j] = fmaf(to_float(xe[e]), to_float(we[e]), acc[j]);
      }
  }
  float total = 0.0f;
#pragma unroll
  for (int j = 0; j < kPlayed; ++j) total += warp_sum(acc[j]);
  return to_float(from_float<T>(total));
}

// (value, index) as one 64-bit key whose largest is the largest value, then the lowest index.
// -0 is taken as +0 (they tie as logits); NaN never gets here.
__device__ __forceinline__ unsigned long long pack_key(float value, int index) {
  if (value == 0.0f) value = 0.0f;
  return (static_cast<unsigned long long>(float_key(value)) << 32) | (0xFFFFFFFFu - static_cast<unsigned>(index));
}

__device__ __forceinline__ SliceArgmax unpack_key(unsigned long long key) {
  SliceArgmax a;
  a.value = key_float(static_cast<uint32_t>(key >> 32));
  a.index = static_cast<int32_t>(0xFFFFFFFFu - static_cast<unsigned>(key & 0xFFFFFFFFu));
  return a;
}

// grid (kScanBlocks, R): the candidates of each block's share of row r (hi >= the largest lo),
// listed in shared memory so the block's 8 warps share them, their exact logits, and the best of
// them into s.best[r].
template <typename T>
__global__ void __launch_bounds__(kThreads)
    screen_candidates_kernel(ScreenView s, const T* __restrict__ x, const T* __restrict__ lm_head,
                             const T* __restrict__ approx, int V, int H) {
  __shared__ float scratch[32];
  __shared__ uint4 xs[kScreenMaxHidden / 8];  // x row r, 16-byte chunks
  __shared__ int listed[kScreenMaxListed];
  __shared__ int count;
  pdl_launch_dependents();
  pdl_wait();  // the threshold kernel's maxima, |x| and the reset key
  const int r = blockIdx.y;
  const uint4* x16 = reinterpret_cast<const uint4*>(x + size_t(r) * size_t(H));
  for (int i = threadIdx.x; i < H / 8; i += kThreads) xs[i] = __ldcg(x16 + i);
  if (threadIdx.x == 0) count = 0;
  float thr = -INFINITY;
  for (int i = threadIdx.x; i < kScanBlocks; i += kThreads) thr = fmaxf(thr, __ldcg(s.lo_max + r * kScanBlocks + i));
  thr = block_max(thr, scratch);  // its barriers also publish xs and count
  if (!isfinite(thr)) thr = -INFINITY;  // no finite bound: every row is a candidate
  const float xnorm = __ldcg(s.xnorm + r);
  int begin, end;
  scan_range(V, begin, end);
  for (int v = begin + int(threadIdx.x); v < end; v += kThreads) {
    const float a = load_l2(approx + size_t(r) * size_t(V) + v);
    if (!(screen_hi(a, screen_error(a, xnorm, __ldg(s.bound + v))) < thr)) listed[atomicAdd(&count, 1)] = v;  // NaN too
  }
  __syncthreads();
  const int n = count, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int i = warp; i < n; i += kThreads / 32) {
    const int v = listed[i];
    const float logit = gemv_logit(xs, lm_head + size_t(v) * size_t(H), H, lane);
    if (lane == 0 && !isnan(logit)) atomicMax(s.best + r, pack_key(logit, v));
  }
}

// One block, a thread a row: the best key as a SliceArgmax (and an id).
__global__ void screen_finish_kernel(ScreenView s, SliceArgmax* __restrict__ out, int32_t* __restrict__ ids, int R) {
  pdl_launch_dependents();
  pdl_wait();
  const int r = threadIdx.x;
  if (r >= R) return;
  const unsigned long long key = __ldcg(s.best + r);
  SliceArgmax a;
  if (key == 0ull) {  // every logit NaN: slice_argmax_rows' answer
    a.value = __int_as_float(0x7fc00000);
    a.index = 0;
  } else {
    a = unpack_key(key);
  }
  if (out != nullptr) out[r] = a;
  if (ids != nullptr) ids[r] = a.index;
}

}  // namespace

bool lm_head_screen_fits(DType dt, int V, int H) {
  return (dt == DType::BF16 || dt == DType::F16) && V > 0 && V <= kScanBlocks * kScreenMaxListed && H > 0 &&
         H % 8 == 0 && H <= kScreenMaxHidden;
}

size_t lm_head_screen_bytes(int V, int H) {
  return align256(size_t(V) * size_t(H)) + 2 * align256(size_t(V) * sizeof(float)) +
         align256(size_t(kScreenMaxRows) * kScanBlocks * sizeof(float)) + align256(kScreenMaxRows * sizeof(float)) +
         align256(kScreenMaxRows * sizeof(unsigned long long));
}

void launch_make_lm_head_screen(DType dt, void* screen, const void* lm_head, int V, int H, cudaStream_t stream) {
  LAMINA_CHECK(lm_head_screen_fits(dt, V, H), "no lm_head screen for a [", V, ", ", H, "] ", dtype_user_name(dt),
               " lm_head");
  LAMINA_CHECK(is_aligned16(lm_head), "the lm_head screen needs a 16-byte aligned lm_head");
  const ScreenView s = screen_view(screen, V, H);
  // Both GEMVs' fp32 sums over H terms round by at most ~H 2^-24 of sum |x w| each.
  const float rounding_coef = std::max(2e-3f, 3.0f * float(H) * 0x1p-24f);
  dispatch_float_type(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (sizeof(T) == 2) {
      make_screen_kernel<T><<<V, kThreads, 0, stream>>>(s, static_cast<const T*>(lm_head), H, rounding_coef);
    }
  });
  CUDA_CHECK_LAUNCH();
}

void launch_screened_argmax(DType dt, SliceArgmax* out, int32_t* ids, const void* x, const void* lm_head,
                            const void* screen, void* scratch, int R, int V, int H, cudaStream_t stream) {
  LAMINA_CHECK(lm_head_screen_fits(dt, V, H), "no lm_head screen for a [", V, ", ", H, "] ", dtype_user_name(dt),
               " lm_head");
  LAMINA_CHECK(R >= 1 && R <= kScreenMaxRows, "the screened argmax takes 1 to ", kScreenMaxRows, " rows, got ", R);
  LAMINA_CHECK(is_aligned16(x) && is_aligned16(lm_head), "the screened argmax needs 16-byte aligned x and lm_head");
  const ScreenView s = screen_view(const_cast<void*>(screen), V, H);
  DeviceQuantWeight q;
  q.format = WeightFormat::Int8PerChannel;
  q.data = s.q;
  q.scales = s.scale;
  launch_gemv_quant(dt, scratch, x, q, R, V, H, stream);
  dispatch_float_type(dt, [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (sizeof(T) == 2) {
      const auto* xt = static_cast<const T*>(x);
      const auto* approx = static_cast<const T*>(scratch);
      launch_pdl(screen_threshold_kernel<T>, dim3(kScanBlocks, R), dim3(kThreads), 0, stream, s, xt, approx, V, H);
      CUDA_CHECK_LAUNCH();
      launch_pdl(screen_candidates_kernel<T>, dim3(kScanBlocks, R), dim3(kThreads), 0, stream, s, xt,
                 static_cast<const T*>(lm_head), approx, V, H);
      CUDA_CHECK_LAUNCH();
    }
  });
  launch_pdl(screen_finish_kernel, dim3(1), dim3(32), 0, stream, s, out, ids, R);
  CUDA_CHECK_LAUNCH();
}

}  // namespace lamina::cuda
