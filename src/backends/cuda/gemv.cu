// Skinny matmul for decode: out[M,N] = x[M,K] · w[N,K]^T with M <= 8 (one token per sequence).
// The time is the weight read (N*K elements once), so the kernel is built to stream w:
//   a block of 256 threads owns R consecutive rows of w; thread i reads the 16-byte chunks
//   i, i + 256, i + 512, ... of each row, U chunks of every row at a time (R*U loads), and the
//   next group is already loading while the current one is multiplied (two groups in flight).
//   Blocks are small (N/R of them: 1024 for N = 4096 at R = 4), so they spread evenly over the
//   SMs and the last wave is short. A block reduction finishes each of the M*R dot products.
//   The first group of weight loads is issued before pdl_wait(): it overlaps the previous kernel.
//   x (M*K elements, shared by every block) is read through the read-only cache.
//   One token (batch-1 decode) takes the (R, U) that timing chose for this matrix on this GPU
//   (gemv_tuner.h, TunedShapes below); several tokens take R = 4, U = 1.
// Epilogues (what a block does with its M x R dot products):
//   kPlain   out[m, n] = the dot product.
//   kGateUp  w is an MLP's gate_up [2N, K] (gate rows, then up rows) and out[M, N] = silu(x · gate^T)
//            * (x · up^T): a block owns R/2 gate rows and the R/2 matching up rows, so the SwiGLU
//            costs no kernel and no [M, 2N] round trip, and the down projection after it is a
//            plain GEMV.
//   kRopeKv  w is the attention's qkv [(Hq + 2 Hkv) D, K] and the kernel does rope_kv_write's work
//            (kernels.h) on its outputs: a block owns rows j, j + 1, j + D/2, j + D/2 + 1 of one
//            head (R = 4), i.e. two rotate-half pairs, rotates q and k heads by positions[m] *
//            inv_freq[j..j+1] (angles in double precision, as rope_kv_write), writes q, k, v to
//            out and k, v to the token's KV-cache row: one kernel and one qkv round trip less.
// Rows of K not a multiple of 8 (16-bit) / 4 (fp32), or unaligned pointers, take a scalar kernel.
#include <cuda_runtime.h>

#include "ab_switch.h"
#include "activation.cuh"
#include "attention_common.cuh"
#include "cuda_check.h"
#include "cuda_types.cuh"
#include "kernels.h"
#include "pdl.cuh"
#include "reduce.cuh"
#include "gemv_epilogue.cuh"
#include "gemv_tuner.h"

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <type_traits>

namespace lamina::cuda {

bool rope_prepare_late() {
  static const bool late = [] {
    const char* e = std::getenv("LAMINA_ROPE_PREPARE_LATE");
    return e != nullptr && std::string(e) == "1";
  }();
  return late;
}

bool rope_prepare_before_wait_allowed() {
  static const bool allowed = ab_switch_on("LAMINA_ROPE_PREPARE_BEFORE_WAIT");
  return allowed;
}

uint32_t kv_l2_prefetch_budget(size_t w_bytes) {
  static const int mode = env_choice("LAMINA_KV_L2_PREFETCH", {0, 1, 2}, 1);
  if (mode != 1) return mode == 2 ? UINT32_MAX : 0;
  // The L2 of the calling thread's device (a rank's thread keeps one device).
  thread_local int device = -1, l2_bytes = 0;
  int now = 0;
  CUDA_CHECK(cudaGetDevice(&now));
  if (now != device) {
    CUDA_CHECK(cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, now));
    device = now;
  }
  const size_t l2 = size_t(l2_bytes);
  if (w_bytes > l2 / 2) return 0;
  return uint32_t(std::min<size_t>((l2 - w_bytes) / 2, UINT32_MAX));
}

namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32;

template <typename T>
__device__ __forceinline__ void unpack(const uint4& raw, float (&out)[kVec<T>]) {
  const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
  for (int i = 0; i < kVec<T>; ++i) out[i] = to_float(e[i]);
}

// Chunk c (kVec<T> elements) of row m of the GEMV's input.
template <typename T>
__device__ __forceinline__ void load_x(const T* x, int m, int K, int c, float (&out)[kVec<T>]) {
  load_vec_ro(x + static_cast<size_t>(m) * K + static_cast<size_t>(c) * kVec<T>, out);
}

enum class Epilogue { kPlain, kGateUp, kRopeKv };

// Issues the loads of chunks c0, c0 + 256, ... (U of them) of each of the R rows.
template <int R, int U>
__device__ __forceinline__ void load_group(uint4 (&buf)[U][R], const char* const (&rows)[R], int c0, int chunks) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int c = c0 + u * kThreads;
#pragma unroll
    for (int r = 0; r < R; ++r) buf[u][r] = c < chunks ? load_stream16(rows[r] + static_cast<size_t>(c) * 16) : uint4{};
  }
}

template <typename T, int M, int R, int U, Epilogue E>
__global__ void __launch_bounds__(kThreads)
    gemv_kernel(T* __restrict__ out, const T* __restrict__ x, const T* __restrict__ w, int N, int K,
                const __grid_constant__ RopeKvArgs rope) {
  constexpr int V = kVec<T>;
  constexpr bool kGateUp = E == Epilogue::kGateUp, kRopeKv = E == Epilogue::kRopeKv;
  constexpr int kOuts = kGateUp ? R / 2 : R;  // outputs a block writes
  static_assert(!kGateUp || (R % 2 == 0 && M * R <= 32), "gate/up pairs meet within warp 0");
  static_assert(!kRopeKv || (R == 4 && M * R <= 32), "rope pairs meet within warp 0");
  pdl_launch_dependents();
  const int n0 = blockIdx.x * kOuts;
  const int chunks = K / V;
  const char* rows[R];
#pragma unroll
  for (int r = 0; r < R; ++r) {  // rows past N re-read row N-1; their sums are not stored
    int n = min(n0 + r % kOuts, N - 1) + (kGateUp && r >= kOuts ? N : 0);  // up row n follows gate row n by N
    if constexpr (kRopeKv) n = rope_row(blockIdx.x, r, rope.p.head_dim);
    rows[r] = reinterpret_cast<const char*>(w + static_cast<size_t>(n) * K);
  }

  uint4 cur[U][R], next[U][R];
  int c0 = threadIdx.x;
  load_group<R, U>(cur, rows, c0, chunks);  // weights only: no wait needed
  if constexpr (kRopeKv) kv_rows_l2_prefetch<T>(rope, M);
  RopeKvPrep prep;
  rope_kv_prepare_early<M, R, kRopeKv>(rope, /*waited=*/false, prep);
  pdl_wait();  // x (and out) belong to earlier kernels
  rope_kv_prepare_early<M, R, kRopeKv>(rope, /*waited=*/true, prep);

  float acc[M][R] = {};
  constexpr int kStep = kThreads * U;
  for (; c0 < chunks; c0 += kStep) {
    const bool more = c0 + kStep < chunks;
    if (more) load_group<R, U>(next, rows, c0 + kStep, chunks);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + u * kThreads;
      if (c >= chunks) break;
      float wf[R][V];
#pragma unroll
      for (int r = 0; r < R; ++r) unpack<T>(cur[u][r], wf[r]);
#pragma unroll
      for (int m = 0; m < M; ++m) {
        float xv[V];
        load_x<T>(x, m, K, c, xv);
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int e = 0; e < V; ++e) acc[m][r] = fmaf(xv[e], wf[r][e], acc[m][r]);
      }
    }
    if (more) {
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int r = 0; r < R; ++r) cur[u][r] = next[u][r];
    }
  }

  float s = 0.0f;
  const bool has_sum = block_sum_each<kWarps>(acc, s);  // thread m * R + r: row r's sum for token m
  write_block_sums<T, R, kGateUp, kRopeKv>(out, N, n0, s, has_sum, rope, prep);
}

// Fallback: one warp per (m, n), scalar loads (kGateUp: the gate and up dot products of n).
template <typename T, bool kGateUp>
__global__ void gemv_scalar_kernel(T* __restrict__ out, const T* __restrict__ x, const T* __restrict__ w, int M,
                                   int N, int K) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long item = static_cast<long long>(blockIdx.x) * (blockDim.x / 32) + warp;
  if (item >= static_cast<long long>(M) * N) return;
  const int m = static_cast<int>(item / N), n = static_cast<int>(item % N);
  const T* gate = w + static_cast<size_t>(n) * K;
  const T* up = w + static_cast<size_t>(N + n) * K;  // read only when kGateUp
  float acc = 0.0f, acc_up = 0.0f;
  for (int k = lane; k < K; k += 32) {
    const float xv = to_float(x[static_cast<size_t>(m) * K + k]);
    acc = fmaf(xv, to_float(gate[k]), acc);
    if constexpr (kGateUp) acc_up = fmaf(xv, to_float(up[k]), acc_up);
  }
  acc = warp_sum(acc);
  if constexpr (kGateUp) acc = silu(acc) * warp_sum(acc_up);
  if (lane == 0) out[static_cast<size_t>(m) * N + n] = from_float<T>(acc);
}

template <typename T, int M, int R, int U, Epilogue E>
void launch_config(T* out, const T* x, const T* w, int N, int K, cudaStream_t stream, const RopeKvArgs& rope = {}) {
  constexpr int kOuts = E == Epilogue::kGateUp ? R / 2 : R;
  launch_pdl(gemv_kernel<T, M, R, U, E>, dim3(ceil_div(N, kOuts)), dim3(kThreads), 0, stream, out, x, w, N, K, rope);
}

// Several tokens (and qkv with rope at any M): 4 rows a block, one chunk of each row per group (two
// groups in flight); gate_up with its SwiGLU: 2 gate + 2 up rows a block.
template <typename T, int M, Epilogue E>
void launch_m(T* out, const T* x, const T* w, int N, int K, cudaStream_t stream, const RopeKvArgs& rope) {
  launch_config<T, M, 4, 1, E>(out, x, w, N, K, stream, rope);
}

// M = 1 launch shapes that gemv_tuner.h times against each other, and the built-in choice among
// them. Built in, from an H100 at M = 1 (bench_kernels' gemv-shape lines): 4 rows a block reach
// 91-104% of copy bandwidth on the Llama-3-8B projections, and 1 row a block is best on the long
// rows of the down projection (K = 14336: 100.7% against 97.7%); deeper groups (U = 2, 4) lose
// 4-30% there. On an H200 at Llama-3-70B's tp 4 slices, R = 2 or U = 2 win by 2-9% instead.
struct Shape {
  int R, U;
};
template <Epilogue E>
struct TunedShapes;
template <>
struct TunedShapes<Epilogue::kPlain> {
  static constexpr Shape v[] = {{1, 1}, {1, 2}, {2, 1}, {2, 2}, {4, 1}, {4, 2}, {8, 1}};
  static int builtin(int K) { return K >= 8192 ? 0 : 4; }
};
template <>
struct TunedShapes<Epilogue::kGateUp> {
  static constexpr Shape v[] = {{2, 1}, {2, 2}, {4, 1}, {8, 1}};
  static int builtin(int) { return 2; }
};

template <typename T, Epilogue E, int I = 0>
void launch_tuned_shape(int index, T* out, const T* x, const T* w, int N, int K, cudaStream_t stream) {
  constexpr auto& shapes = TunedShapes<E>::v;
  if constexpr (I < static_cast<int>(sizeof(shapes) / sizeof(shapes[0]))) {
    if (index == I) return launch_config<T, 1, shapes[I].R, shapes[I].U, E>(out, x, w, N, K, stream);
    launch_tuned_shape<T, E, I + 1>(index, out, x, w, N, K, stream);
  }
}

// One token: the tuned shape for this matrix on this GPU (kPlain, kGateUp; kRopeKv writes the KV
// cache, so it keeps its one shape rather than run on scratch).
template <typename T, Epilogue E>
void launch_one_token(T* out, const T* x, const T* w, int N, int K, cudaStream_t stream, const RopeKvArgs& rope) {
  if constexpr (E == Epilogue::kRopeKv) {
    launch_m<T, 1, E>(out, x, w, N, K, stream, rope);
  } else {
    using Shapes = TunedShapes<E>;
    constexpr bool kGateUp = E == Epilogue::kGateUp;
    GemvTuneRequest req;
    req.key = std::string(sizeof(T) == 4 ? "f32" : std::is_same_v<T, __half> ? "f16" : "bf16") +
              (kGateUp ? " gate_up+swiglu" : " gemv") + " N" + std::to_string(N) + " K" + std::to_string(K);
    req.matrix = std::string(kGateUp ? "gate_up:" : "gemv:") + std::to_string(N) + "x" + std::to_string(K);
    req.weight_bytes = size_t(kGateUp ? 2 : 1) * N * K * sizeof(T);
    req.x_bytes = size_t(K) * sizeof(T);
    req.out_bytes = size_t(N) * sizeof(T);
    req.candidates = gemv_one_token_shapes(kGateUp);
    req.fallback = Shapes::builtin(K);
    const int index = tuned_gemv_choice(req, stream, [&](int i, const void* sw, const void* sx, void* so, cudaStream_t st) {
      launch_tuned_shape<T, E>(i, static_cast<T*>(so), static_cast<const T*>(sx), static_cast<const T*>(sw), N, K, st);
      CUDA_CHECK_LAUNCH();
    });
    launch_tuned_shape<T, E>(index, out, x, w, N, K, stream);
  }
}

// kRopeKv takes the fast kernel only (the caller checks K and alignment); the others fall back to
// the scalar kernel for odd K or unaligned pointers.
template <Epilogue Ep>
void launch(DType dt, void* out, const void* x, const void* w, int M, int N, int K, cudaStream_t stream,
            const RopeKvArgs& rope = {}) {
  if (M <= 0 || N <= 0) return;
  LAMINA_CHECK(M <= kGemvMaxM, "gemv takes at most ", kGemvMaxM, " rows, got ", M);
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    auto* o = static_cast<E*>(out);
    auto* a = static_cast<const E*>(x);
    auto* b = static_cast<const E*>(w);
    if (K % kVec<E> != 0 || !is_aligned16(a) || !is_aligned16(b)) {
      LAMINA_CHECK(Ep != Epilogue::kRopeKv, "the qkv GEMV with rope needs K % ", kVec<E>, " == 0 and aligned rows");
      const long long items = static_cast<long long>(M) * N;
      gemv_scalar_kernel<E, Ep == Epilogue::kGateUp>
          <<<static_cast<unsigned>(ceil_div_ll(items, 8)), 256, 0, stream>>>(o, a, b, M, N, K);
      CUDA_CHECK_LAUNCH();
      return;
    }
    switch (M) {
      case 1: launch_one_token<E, Ep>(o, a, b, N, K, stream, rope); break;
      case 2: launch_m<E, 2, Ep>(o, a, b, N, K, stream, rope); break;
      case 3: launch_m<E, 3, Ep>(o, a, b, N, K, stream, rope); break;
      case 4: launch_m<E, 4, Ep>(o, a, b, N, K, stream, rope); break;
      case 5: launch_m<E, 5, Ep>(o, a, b, N, K, stream, rope); break;
      case 6: launch_m<E, 6, Ep>(o, a, b, N, K, stream, rope); break;
      case 7: launch_m<E, 7, Ep>(o, a, b, N, K, stream, rope); break;
      default: launch_m<E, 8, Ep>(o, a, b, N, K, stream, rope); break;
    }
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

void launch_gemv(DType dt, void* out, const void* x, const void* w, int M, int N, int K, cudaStream_t stream) {
  launch<Epilogue::kPlain>(dt, out, x, w, M, N, K, stream);
}

void launch_gate_up_swiglu_gemv(DType dt, void* out, const void* x, const void* gate_up, int M, int F, int K,
                                cudaStream_t stream) {
  launch<Epilogue::kGateUp>(dt, out, x, gate_up, M, F, K, stream);
}

bool launch_qkv_rope_kv_write_gemv(DType dt, void* qkv, const void* x, const void* w, int M, int K,
                                   const int32_t* positions, const int32_t* slots, const float* inv_freq,
                                   KVCacheLayer cache, const AttentionShape& s, cudaStream_t stream) {
  const int N = (s.num_q_heads + 2 * s.num_kv_heads) * s.head_dim;
  const int vec = 16 / static_cast<int>(dtype_size(dt));
  RopeKvArgs rope;
  if (K % vec != 0 || !is_aligned16(x) || !is_aligned16(w) ||
      !make_rope_kv_args(rope, M, positions, slots, inv_freq, cache, s))
    return false;
  rope.kv_prefetch_bytes = kv_l2_prefetch_budget(size_t(N) * K * dtype_size(dt));
  launch<Epilogue::kRopeKv>(dt, qkv, x, w, M, N, K, stream, rope);
  return true;
}

std::vector<std::string> gemv_one_token_shapes(bool gate_up_swiglu) {
  std::vector<std::string> names;
  auto add = [&](const auto& shapes) {
    for (const Shape& sh : shapes) names.push_back("R" + std::to_string(sh.R) + " U" + std::to_string(sh.U));
  };
  if (gate_up_swiglu) add(TunedShapes<Epilogue::kGateUp>::v);
  else add(TunedShapes<Epilogue::kPlain>::v);
  return names;
}

void launch_gemv_one_token_shape(DType dt, int index, bool gate_up_swiglu, void* out, const void* x, const void* w,
                                 int N, int K, cudaStream_t stream) {
  const int count = static_cast<int>(gemv_one_token_shapes(gate_up_swiglu).size());
  LAMINA_CHECK(index >= 0 && index < count, "GEMV shape ", index, " out of range (", count, " shapes)");
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    LAMINA_CHECK(K % kVec<E> == 0 && is_aligned16(x) && is_aligned16(w), "GEMV shapes need 16-byte rows");
    if (gate_up_swiglu)
      launch_tuned_shape<E, Epilogue::kGateUp>(index, static_cast<E*>(out), static_cast<const E*>(x),
                                               static_cast<const E*>(w), N, K, stream);
    else
      launch_tuned_shape<E, Epilogue::kPlain>(index, static_cast<E*>(out), static_cast<const E*>(x),
                                              static_cast<const E*>(w), N, K, stream);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace lamina::cuda
