// Skinny matmul over quantized weights for decode: out[M,N] = x[M,K] · dequant(w)[N,K]^T, M <= 8.
// The time is the weight read (1 byte a weight for int8/fp8, half a byte for int4), so the kernel
// streams w as gemv.cu does: a block owns R consecutive rows; thread i reads the 16-byte chunks
// i, i + B, i + 2B, ... (B threads a block; a chunk is 16 int8/fp8 or 32 int4 weights) of each
// row, and the next chunk of every row is loading while the current one is decoded. The first
// loads are issued before pdl_wait() (they overlap the previous kernel). Per chunk, each thread
// decodes a word of w at a time (quant_decode.cuh) and accumulates x·q in fp32; int4 applies the
// chunk's group scale to the chunk's partial sums (a group is a multiple of 32 weights, so a
// chunk never straddles two groups); int8/fp8 apply the row (or tensor) scale after the block
// reduction. int4 rows have half as many chunks, so its blocks have 128 threads, not 256.
// One token over plain 8-bit rows whose 8-row block fits 48 KB of shared memory (K <= 6144: the o
// projection, the lm_head screen) stages each block's rows there instead (kStaged): they are all in
// flight before the wait.
// K not a multiple of the chunk, or an unaligned x, takes a scalar kernel (one warp per output).
// kGateUp: the MLP's gate_up [2N, K] with its SwiGLU, as in gemv.cu (2 gate + 2 up rows a block,
// out = silu(gate) * up). int4 weights in the tile layout go to gemv_int4_tiles.cu instead.
#include <cuda_runtime.h>

#include "ab_switch.h"
#include "activation.cuh"
#include "cp_async.cuh"
#include "cuda_check.h"
#include "cuda_types.cuh"
#include "kernels.h"
#include "pdl.cuh"
#include "quant_decode.cuh"
#include "quant_kernels.h"
#include "reduce.cuh"
#include "gemv_epilogue.cuh"

namespace lamina::cuda {
namespace {

// LAMINA_GEMV_REGISTER_CAP=0: the one-token 8-bit GEMVs keep the compiler's register choice (A/B).
bool gemv_register_cap_enabled() {
  static const bool on = ab_switch_on("LAMINA_GEMV_REGISTER_CAP");
  return on;
}

// LAMINA_GEMV_STAGED=0: the one-token 8-bit plain GEMVs hold their weights in registers, not staged
// in shared memory (A/B).
bool gemv_staged_enabled() {
  static const bool on = ab_switch_on("LAMINA_GEMV_STAGED");
  return on;
}

// out[i] = float(p[i]) for i < E: E consecutive elements, E * sizeof(T) a multiple of 8 bytes and p
// aligned to it.
template <typename T, int E>
__device__ __forceinline__ void load_x(const T* p, float (&out)[E]) {
  constexpr int V = kVec<T>;
  if constexpr (E >= V) {
#pragma unroll
    for (int i = 0; i < E / V; ++i) {
      float t[V];
      load_vec_ro(p + i * V, t);
#pragma unroll
      for (int j = 0; j < V; ++j) out[i * V + j] = t[j];
    }
  } else {
    static_assert(E * sizeof(T) == 8, "x sub-chunk must be 8 or a multiple of 16 bytes");
    const uint2 raw = __ldg(reinterpret_cast<const uint2*>(p));
    const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < E; ++i) out[i] = to_float(e[i]);
  }
}

// The weight row that row r (0..R-1) of the block starting at output n0 reads: n0 + r, or with
// kGateUp (w = gate_up [2N, K], R/2 outputs a block) gate row n0 + r for r < R/2 and up row
// N + n0 + r - R/2 after. Rows past N re-read row N-1 and are not written.
template <int R, bool kGateUp>
__device__ __forceinline__ int weight_row(int n0, int r, int N) {
  constexpr int kOuts = kGateUp ? R / 2 : R;
  return min(n0 + r % kOuts, N - 1) + (kGateUp && r >= kOuts ? N : 0);
}

// kRopeKv: w is the attention's qkv and the block owns the four rows of gemv_epilogue.cuh (R = 4).
// Run by gemv_quant_kernel, and by gemv_quant_capped_kernel with its registers capped.
template <typename T, WeightFormat F, int M, int R, int B, bool kGateUp, bool kRopeKv, bool kStaged>
__device__ __forceinline__ void gemv_quant_body(T* __restrict__ out, const T* __restrict__ x,
                                                const uint8_t* __restrict__ w, const float* __restrict__ scales,
                                                int N, int K, int group, int scale_stride, const RopeKvArgs& rope) {
  using D = Decode<F>;
  constexpr int EW = D::kPerWord;       // weights a 32-bit word
  constexpr int kPerChunk = 4 * EW;     // weights a 16-byte chunk
  constexpr bool kGrouped = F == WeightFormat::Int4Group;
  constexpr int kBlockWarps = B / 32;
  constexpr int kOuts = kGateUp ? R / 2 : R;  // outputs a block writes
  static_assert(!kGateUp || (R % 2 == 0 && M * R <= 32), "gate/up pairs meet within warp 0");
  static_assert(!kRopeKv || (!kGateUp && R == 4 && M * R <= 32), "rope pairs meet within warp 0");
  // The weight row that row r of this block reads.
  auto row_for = [&](int r) {
    return kRopeKv ? rope_row(blockIdx.x, r, rope.p.head_dim) : weight_row<R, kGateUp>(blockIdx.x * kOuts, r, N);
  };
  pdl_launch_dependents();
  const int n0 = blockIdx.x * kOuts;
  const int chunks = K / kPerChunk;
  const int groups = kGrouped ? K / group : 0;
  const uint4* w_row[R];
  int row_of[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    row_of[r] = row_for(r);
    w_row[r] = reinterpret_cast<const uint4*>(w) + static_cast<size_t>(row_of[r]) * chunks;
  }

  uint4 cur[R], next[R];
  int c = threadIdx.x;
  // kStaged: the block's whole [R, K] slab is copied into shared memory (dynamic, [R][chunks]),
  // every copy issued before the wait. Copies hold no registers, so the block has all its rows in
  // flight while the kernels before it finish, not one chunk of each.
  extern __shared__ uint4 staged_rows[];
  if constexpr (kStaged) {
#pragma unroll
    for (int r = 0; r < R; ++r)
      for (int cc = c; cc < chunks; cc += B) cp_async16(smem_u32(staged_rows + r * chunks + cc), w_row[r] + cc, true);
    cp_async_commit();
  } else {
#pragma unroll
    for (int r = 0; r < R; ++r) cur[r] = c < chunks ? load_stream16(w_row[r] + c) : uint4{};
  }
  RopeKvPrep prep;
  rope_kv_prepare_early<M, R, kRopeKv>(rope, /*waited=*/false, prep);
  pdl_wait();  // x and out belong to earlier kernels
  rope_kv_prepare_early<M, R, kRopeKv>(rope, /*waited=*/true, prep);
  if constexpr (kStaged) cp_async_wait<0>();  // a thread reads back only the chunks it copied: no barrier

  float acc[M][R] = {};
  for (; c < chunks; c += B) {
    const bool more = c + B < chunks;
    if constexpr (kStaged) {
#pragma unroll
      for (int r = 0; r < R; ++r) cur[r] = staged_rows[r * chunks + c];
    } else if (more) {
#pragma unroll
      for (int r = 0; r < R; ++r) next[r] = load_stream16(w_row[r] + c + B);
    }
    float part[M][R] = {};
#pragma unroll
    for (int wi = 0; wi < 4; ++wi) {
      float wf[R][EW];
#pragma unroll
      for (int r = 0; r < R; ++r) D::word(word_of(cur[r], wi), wf[r]);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float xv[EW];
        load_x<T, EW>(x + static_cast<size_t>(m) * K + static_cast<size_t>(c) * kPerChunk + wi * EW, xv);
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int e = 0; e < EW; ++e) part[m][r] = fmaf(xv[e], wf[r][e], part[m][r]);
      }
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const float s =
          kGrouped ? __ldg(scales + static_cast<size_t>(row_of[r]) * groups + (c * kPerChunk) / group) : 1.0f;
#pragma unroll
      for (int m = 0; m < M; ++m) acc[m][r] = fmaf(part[m][r], s, acc[m][r]);
    }
    if (!kStaged && more) {
#pragma unroll
      for (int r = 0; r < R; ++r) cur[r] = next[r];
    }
  }

  float s = 0.0f;
  const bool has_sum = block_sum_each<kBlockWarps>(acc, s);  // thread m * R + r: row r's sum for token m
  if (has_sum && !kGrouped) s *= scales[static_cast<size_t>(scale_stride) * row_for(threadIdx.x % R)];
  write_block_sums<T, R, kGateUp, kRopeKv>(out, N, n0, s, has_sum, rope, prep);
}

template <typename T, WeightFormat F, int M, int R, int B, bool kGateUp, bool kRopeKv = false>
__global__ void __launch_bounds__(B)
    gemv_quant_kernel(T* __restrict__ out, const T* __restrict__ x, const uint8_t* __restrict__ w,
                      const float* __restrict__ scales, int N, int K, int group, int scale_stride,
                      const __grid_constant__ RopeKvArgs rope) {
  gemv_quant_body<T, F, M, R, B, kGateUp, kRopeKv, false>(out, x, w, scales, N, K, group, scale_stride, rope);
}

// The same with a thread's registers capped so that an SM holds kMinBlocks blocks, and the weights
// staged in shared memory where kStaged.
template <typename T, WeightFormat F, int M, int R, int B, bool kGateUp, int kMinBlocks, bool kStaged = false>
__global__ void __launch_bounds__(B, kMinBlocks)
    gemv_quant_capped_kernel(T* __restrict__ out, const T* __restrict__ x, const uint8_t* __restrict__ w,
                             const float* __restrict__ scales, int N, int K, int group, int scale_stride,
                             const __grid_constant__ RopeKvArgs rope) {
  gemv_quant_body<T, F, M, R, B, kGateUp, false, kStaged>(out, x, w, scales, N, K, group, scale_stride, rope);
}

// Shared memory of a staged block of R rows of K 8-bit weights.
constexpr size_t kMaxStagedBytes = 48u << 10;  // no opt-in attribute needed below this
inline size_t staged_bytes(int R, int K) { return static_cast<size_t>(R) * static_cast<size_t>(K); }

// Fallback: one warp per (m, n), scalar decode (kGateUp: the gate and up dot products of n).
template <typename T, WeightFormat F>
__device__ __forceinline__ float scalar_dot(const T* x_row, const uint8_t* w, const float* scales, int row, int K,
                                            int group, int scale_stride, int lane) {
  constexpr bool kGrouped = F == WeightFormat::Int4Group;
  float acc = 0.0f;
  for (int k = lane; k < K; k += 32) {
    float wv = Decode<F>::scalar(w, static_cast<size_t>(row) * K + k);
    if (kGrouped) wv *= scales[static_cast<size_t>(row) * (K / group) + k / group];
    acc = fmaf(to_float(x_row[k]), wv, acc);
  }
  acc = warp_sum(acc);
  return kGrouped ? acc : acc * scales[static_cast<size_t>(scale_stride) * row];
}

template <typename T, WeightFormat F, bool kGateUp>
__global__ void gemv_quant_scalar_kernel(T* __restrict__ out, const T* __restrict__ x, const uint8_t* __restrict__ w,
                                         const float* __restrict__ scales, int M, int N, int K, int group,
                                         int scale_stride) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long item = static_cast<long long>(blockIdx.x) * (blockDim.x / 32) + warp;
  if (item >= static_cast<long long>(M) * N) return;
  const int m = static_cast<int>(item / N), n = static_cast<int>(item % N);
  const T* x_row = x + static_cast<size_t>(m) * K;
  float v = scalar_dot<T, F>(x_row, w, scales, n, K, group, scale_stride, lane);
  if constexpr (kGateUp) v = silu(v) * scalar_dot<T, F>(x_row, w, scales, N + n, K, group, scale_stride, lane);
  if (lane == 0) out[static_cast<size_t>(m) * N + n] = from_float<T>(v);
}

template <typename T, WeightFormat F, int M, bool kGateUp>
void launch_m(T* out, const T* x, const uint8_t* w, const float* s, int N, int K, int group, int stride,
              cudaStream_t stream) {
  // As gemv.cu: 4 rows a block, one chunk of each row in flight plus the next. (8 rows a block
  // for int4, sharing each x load among more rows, measured the same on an H100: 41-62% of copy
  // bandwidth at M = 1; the int4 GEMV is bound by its decode and x traffic, not by this shape.)
  // gate_up with its SwiGLU: 2 gate + 2 up rows a block.
  // fp8 at M = 1 with long rows (down, K = 14336): 8 rows and 128 threads a block, 91.7 % of copy
  // against 86.6 % (gemv-fp8-shape lines of bench_kernels, H100).
  if constexpr (F == WeightFormat::Fp8PerTensor && M == 1 && !kGateUp) {
    if (K >= 8192) {
      launch_pdl(gemv_quant_kernel<T, F, M, 8, 128, false>, dim3(ceil_div(N, 8)), dim3(128), 0, stream, out, x, w, s,
                 N, K, group, stride, RopeKvArgs{});
      return;
    }
  }
  constexpr int R = 4, B = F == WeightFormat::Int4Group ? 128 : 256;
  constexpr int kOuts = kGateUp ? R / 2 : R;
  // One token over 8-bit weights: registers capped for 4 blocks an SM (the compiler's own choice
  // for the plain kernel, 66-70 a thread, holds 3), so more weight loads are in flight: FP8 decode
  // 3.123 against 3.134 ms/token on an H100 (docs/performance.md). LAMINA_GEMV_REGISTER_CAP=0: off.
  if constexpr (M == 1 && F != WeightFormat::Int4Group) {
    // Plain rows (o, the lm_head screen) of K <= 6144: 8 rows a block, staged in shared memory
    // (gemv_quant_body), so the o projection's rows load during the attention before it: FP8
    // decode 3.068 against 3.123 ms/token on an H100 (docs/performance.md). Staging qkv or gate_up
    // measured slower (3.089 and 3.146 with o's).
    if constexpr (!kGateUp) {
      if (gemv_staged_enabled() && staged_bytes(8, K) <= kMaxStagedBytes) {
        launch_pdl(gemv_quant_capped_kernel<T, F, M, 8, B, false, 4, true>, dim3(ceil_div(N, 8)), dim3(B),
                   staged_bytes(8, K), stream, out, x, w, s, N, K, group, stride, RopeKvArgs{});
        return;
      }
    }
    if (gemv_register_cap_enabled()) {
      launch_pdl(gemv_quant_capped_kernel<T, F, M, R, B, kGateUp, 4>, dim3(ceil_div(N, kOuts)), dim3(B), 0, stream,
                 out, x, w, s, N, K, group, stride, RopeKvArgs{});
      return;
    }
  }
  launch_pdl(gemv_quant_kernel<T, F, M, R, B, kGateUp>, dim3(ceil_div(N, kOuts)), dim3(B), 0, stream, out, x, w, s, N,
             K, group, stride, RopeKvArgs{});
}

template <typename T, WeightFormat F, bool kGateUp>
void launch_format(T* out, const T* x, const uint8_t* w, const float* s, int M, int N, int K, int group, int stride,
                   cudaStream_t stream) {
  constexpr int kPerChunk = 4 * Decode<F>::kPerWord;
  if (K % kPerChunk != 0 || !is_aligned16(x) || !is_aligned16(w)) {
    const long long items = static_cast<long long>(M) * N;
    gemv_quant_scalar_kernel<T, F, kGateUp><<<static_cast<unsigned>(ceil_div_ll(items, 8)), 256, 0, stream>>>(
        out, x, w, s, M, N, K, group, stride);
    return;
  }
  switch (M) {
    case 1: launch_m<T, F, 1, kGateUp>(out, x, w, s, N, K, group, stride, stream); break;
    case 2: launch_m<T, F, 2, kGateUp>(out, x, w, s, N, K, group, stride, stream); break;
    case 3: launch_m<T, F, 3, kGateUp>(out, x, w, s, N, K, group, stride, stream); break;
    case 4: launch_m<T, F, 4, kGateUp>(out, x, w, s, N, K, group, stride, stream); break;
    case 5: launch_m<T, F, 5, kGateUp>(out, x, w, s, N, K, group, stride, stream); break;
    case 6: launch_m<T, F, 6, kGateUp>(out, x, w, s, N, K, group, stride, stream); break;
    case 7: launch_m<T, F, 7, kGateUp>(out, x, w, s, N, K, group, stride, stream); break;
    default: launch_m<T, F, 8, kGateUp>(out, x, w, s, N, K, group, stride, stream); break;
  }
}

template <bool kGateUp>
void launch_quant(DType dt, void* out, const void* x, const DeviceQuantWeight& w, int M, int N, int K,
                  cudaStream_t stream) {
  const auto* wb = static_cast<const uint8_t*>(w.data);
  if (w.format == WeightFormat::Int4Group)
    LAMINA_CHECK(w.group_size > 0 && w.group_size % 32 == 0 && K % w.group_size == 0, "int4 gemv: group size ",
                 w.group_size, " must be a multiple of 32 dividing K=", K);
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    auto* o = static_cast<E*>(out);
    auto* a = static_cast<const E*>(x);
    switch (w.format) {
      case WeightFormat::Int8PerChannel:
        launch_format<E, WeightFormat::Int8PerChannel, kGateUp>(o, a, wb, w.scales, M, N, K, 0, 1, stream);
        break;
      case WeightFormat::Fp8PerTensor:
        launch_format<E, WeightFormat::Fp8PerTensor, kGateUp>(o, a, wb, w.scales, M, N, K, 0, 0, stream);
        break;
      case WeightFormat::Int4Group:
        launch_format<E, WeightFormat::Int4Group, kGateUp>(o, a, wb, w.scales, M, N, K, w.group_size, 0, stream);
        break;
    }
    CUDA_CHECK_LAUNCH();
  });
}

// The qkv GEMV with rope and the KV write over 8-bit weights: 4 rows a block, as the plain GEMV.
template <typename T, WeightFormat F, int M>
void launch_rope_m(T* out, const T* x, const uint8_t* w, const float* s, int N, int K, int stride,
                   const RopeKvArgs& rope, cudaStream_t stream) {
  launch_pdl(gemv_quant_kernel<T, F, M, 4, 256, false, true>, dim3(N / 4), dim3(256), 0, stream, out, x, w, s, N, K, 0,
             stride, rope);
}

template <typename T, WeightFormat F>
void launch_rope(T* out, const T* x, const uint8_t* w, const float* s, int M, int N, int K, int stride,
                 const RopeKvArgs& rope, cudaStream_t stream) {
  switch (M) {
    case 1: return launch_rope_m<T, F, 1>(out, x, w, s, N, K, stride, rope, stream);
    case 2: return launch_rope_m<T, F, 2>(out, x, w, s, N, K, stride, rope, stream);
    case 3: return launch_rope_m<T, F, 3>(out, x, w, s, N, K, stride, rope, stream);
    case 4: return launch_rope_m<T, F, 4>(out, x, w, s, N, K, stride, rope, stream);
    case 5: return launch_rope_m<T, F, 5>(out, x, w, s, N, K, stride, rope, stream);
    case 6: return launch_rope_m<T, F, 6>(out, x, w, s, N, K, stride, rope, stream);
    case 7: return launch_rope_m<T, F, 7>(out, x, w, s, N, K, stride, rope, stream);
    default: return launch_rope_m<T, F, 8>(out, x, w, s, N, K, stride, rope, stream);
  }
}

// bench_kernels' shape sweep: the fp8 kernel at M = 1 with R rows and B threads a block.
template <int R, int B>
void launch_fp8_shape(const __nv_bfloat16* x, const DeviceQuantWeight& w, __nv_bfloat16* out, int N, int K,
                      cudaStream_t stream) {
  launch_pdl(gemv_quant_kernel<__nv_bfloat16, WeightFormat::Fp8PerTensor, 1, R, B, false>, dim3(ceil_div(N, R)),
             dim3(B), 0, stream, out, x, static_cast<const uint8_t*>(w.data), w.scales, N, K, 0, 0, RopeKvArgs{});
}

}  // namespace

void launch_gemv_quant(DType dt, void* out, const void* x, const DeviceQuantWeight& w, int M, int N, int K,
                       cudaStream_t stream) {
  if (M <= 0 || N <= 0) return;
  LAMINA_CHECK(M <= kGemvMaxM, "gemv takes at most ", kGemvMaxM, " rows, got ", M);
  if (w.int4_tiles) return launch_gemv_int4_tiles(dt, out, x, w, M, N, K, stream);
  launch_quant<false>(dt, out, x, w, M, N, K, stream);
}

bool launch_gemv_quant_gate_up(DType dt, void* out, const void* x, const DeviceQuantWeight& w, int M, int F, int K,
                               cudaStream_t stream) {
  if (M <= 0 || F <= 0) return true;
  LAMINA_CHECK(M <= kGemvMaxM, "gemv takes at most ", kGemvMaxM, " rows, got ", M);
  if (w.int4_tiles) return launch_gemv_int4_tiles_gate_up(dt, out, x, w, M, F, K, stream);
  launch_quant<true>(dt, out, x, w, M, F, K, stream);
  return true;
}

bool launch_gemv_quant_qkv_rope_kv_write(DType dt, void* qkv, const void* x, const DeviceQuantWeight& w, int M, int K,
                                        const int32_t* positions, const int32_t* slots, const float* inv_freq,
                                        KVCacheLayer cache, const AttentionShape& s, cudaStream_t stream) {
  const int N = (s.num_q_heads + 2 * s.num_kv_heads) * s.head_dim;
  const bool eight_bit = w.format == WeightFormat::Int8PerChannel || w.format == WeightFormat::Fp8PerTensor;
  RopeKvArgs rope;
  if (!make_rope_kv_args(rope, M, positions, slots, inv_freq, cache, s)) return false;
  if (w.format == WeightFormat::Int4Group && w.int4_tiles)
    return launch_gemv_int4_tiles_qkv_rope_kv_write(dt, qkv, x, w, M, K, rope, stream);
  if (!eight_bit || K % 16 != 0 || !is_aligned16(x) || !is_aligned16(w.data)) return false;
  const auto* wb = static_cast<const uint8_t*>(w.data);
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    auto* o = static_cast<E*>(qkv);
    auto* a = static_cast<const E*>(x);
    if (w.format == WeightFormat::Int8PerChannel)
      launch_rope<E, WeightFormat::Int8PerChannel>(o, a, wb, w.scales, M, N, K, 1, rope, stream);
    else
      launch_rope<E, WeightFormat::Fp8PerTensor>(o, a, wb, w.scales, M, N, K, 0, rope, stream);
    CUDA_CHECK_LAUNCH();
  });
  return true;
}

bool launch_gemv_fp8_variant(int rows_per_block, int threads, const void* x, const DeviceQuantWeight& w, void* out,
                             int N, int K, cudaStream_t stream) {
  if (w.format != WeightFormat::Fp8PerTensor || K % 16 != 0) return false;
  const auto* xb = static_cast<const __nv_bfloat16*>(x);
  auto* o = static_cast<__nv_bfloat16*>(out);
#define LAMINA_FP8_SHAPE(R, B) \
  if (rows_per_block == R && threads == B) return launch_fp8_shape<R, B>(xb, w, o, N, K, stream), true;
  LAMINA_FP8_SHAPE(2, 128) LAMINA_FP8_SHAPE(2, 256) LAMINA_FP8_SHAPE(4, 64) LAMINA_FP8_SHAPE(4, 128)
  LAMINA_FP8_SHAPE(4, 256) LAMINA_FP8_SHAPE(8, 64) LAMINA_FP8_SHAPE(8, 128) LAMINA_FP8_SHAPE(8, 256)
#undef LAMINA_FP8_SHAPE
  return false;
}

}  // namespace lamina::cuda
