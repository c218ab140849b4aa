// One-shot all-reduce fused with the residual add and RMSNorm that follow each row-parallel
// projection of a layer (attention-out, MLP-down). One kernel a call on every rank:
//   residual[T,H] += Σ_ranks x[T,H];  out[T,H] = residual · rsqrt(mean(residual²) + eps) · w
// instead of PeerAllReduce's all-reduce kernel and then the norm kernel: one kernel boundary
// less, and no barrier round trip. Bit-identical to all_reduce_sum followed by add_rms_norm: the
// same float32 sum in rank order rounded to the dtype, the same norm block shape
// (rms_norm_shape.h). float16 and bfloat16 only.
//
// Data moves one way and is its own flag (the scheme of TensorRT-LLM's "Lamport" one-shot
// all-reduce). Every rank owns landing buffers [3 slots][W ranks][slot_elems] in its own memory,
// filled with a marker: the bit pattern of -0.0 in every 16-bit element. Call k on rank r:
//   1. writes x into slot k % 3, row r, of every peer, sending -0.0 as +0.0 so that no value
//      equals the marker (the rank-order sum starts from +0.0, so its result is unchanged);
//   2. refills with the marker what the previous call left in slot (k - 1) % 3;
//   3. block b takes token rows b, b + G, ...: it reads its own landing slot until no element of
//      the row is the marker, sums the ranks in order (its own x read in place), adds the
//      residual and normalises.
// A rank reads only its own memory and waits on no flag. A peer runs at most one call ahead (it
// cannot finish call k + 1 without our call-(k + 1) data), so during our call k peers write
// slots k % 3 and (k + 1) % 3 only; slot (k - 1) % 3, cleared now, is next written at call k + 2,
// which needs our call-(k + 1) push, made after this kernel ended. The call counters live in
// device memory, one per block of a fixed grid, so captured CUDA graphs replay correctly.
#include "backends/cuda/peer_all_reduce_norm.h"

#include <type_traits>

#include "backends/cuda/ab_switch.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/l2_prefetch.cuh"
#include "backends/cuda/pdl.cuh"
#include "backends/cuda/peer_wait.cuh"
#include "backends/cuda/rank_order_sum.cuh"
#include "backends/cuda/reduce.cuh"
#include "backends/cuda/rms_norm_shape.h"
#include "backends/cuda/slice_argmax_join.cuh"

namespace lamina::cuda {
namespace {

// LAMINA_AR_OWN_LOADS_FIRST=0: each call reads its own values after the call's state, and a rank
// after the first its own x once the peers' arrived (A/B of the order below).
bool own_loads_first() {
  static const bool on = ab_switch_on("LAMINA_AR_OWN_LOADS_FIRST");
  return on;
}

// LAMINA_AR_L2_WARM=0: the call's state, residual row and landing units are not asked of L2
// before the wait (A/B of warm_landing_call).
bool warm_before_wait() {
  static const bool on = ab_switch_on("LAMINA_AR_L2_WARM");
  return on;
}

constexpr uint32_t kMarkerPair = 0x80008000u;  // two 16-bit markers (-0.0)
constexpr int kMaxThreads = 1024;
constexpr int kMaxChunks = 2;  // 16-byte accesses a thread makes in a row: H <= 2 × 1024 × 8

// Peers' stores land in our memory while we poll it: volatile, so every poll reads memory.
__device__ __forceinline__ uint4 load_volatile16(const void* p) {
  uint4 r;
  asm volatile("ld.volatile.global.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
               : "l"(p)
               : "memory");
  return r;
}

__device__ __forceinline__ void store_volatile16(void* p, const uint4& v) {
  asm volatile("st.volatile.global.v4.u32 [%0], {%1, %2, %3, %4};" ::"l"(p), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
               : "memory");
}

__device__ __forceinline__ bool word_has_marker(uint32_t w) {
  return (w & 0xFFFFu) == 0x8000u || (w >> 16) == 0x8000u;
}

// Each 16-bit element is checked: a 16-byte store from a peer may become visible in parts.
__device__ __forceinline__ bool has_marker(const uint4& v) {
  return word_has_marker(v.x) || word_has_marker(v.y) || word_has_marker(v.z) || word_has_marker(v.w);
}

__device__ __forceinline__ uint32_t word_without_marker(uint32_t w) {
  if ((w & 0xFFFFu) == 0x8000u) w &= 0xFFFF0000u;
  if ((w >> 16) == 0x8000u) w &= 0x0000FFFFu;
  return w;
}

// 16-bit elements of one 16-byte landing unit.
constexpr int kUnitElems = 8;

// A peer's 16-byte unit in our landing memory, once it has arrived (no element is the marker);
// past the wait's limit the kernel traps (peer_wait.h).
__device__ __forceinline__ uint4 wait_landed(const void* p, const PeerWait& wait, int rank, int peer) {
  uint4 v = load_volatile16(p);
  PeerWaitClock clock;
  while (has_marker(v)) {
    clock.poll(wait, rank, peer);
    v = load_volatile16(p);
  }
  return v;
}

// A block's call of the landing protocol: its number, and the 16-bit elements a rank sent at the
// previous call. Its state was written by that call's kernel, so it is read after the wait; every
// thread reads it (one broadcast load, no barrier).
struct LandingCall {
  uint32_t number;
  size_t prev_n;
};
__device__ __forceinline__ LandingCall begin_landing_call(const uint32_t* state) {
  return {__ldcg(state + 2 * blockIdx.x) + 1, __ldcg(state + 2 * blockIdx.x + 1)};
}

// Read by this block only, at the next call (after this grid completed); the barrier makes sure
// every thread of the block has read it by now.
__device__ __forceinline__ void end_landing_call(uint32_t* state, const LandingCall& c, size_t n) {
  __syncthreads();
  if (threadIdx.x == 0) {
    state[2 * blockIdx.x] = c.number;
    state[2 * blockIdx.x + 1] = uint32_t(n);
  }
}

// 16-bit element offset of row `q` of call c's slot in a landing buffer [3][W][slot_elems].
template <int W>
__device__ __forceinline__ size_t landing_row(uint32_t call, int q, size_t slot_elems) {
  return (call % kLandingSlots) * (size_t(W) * slot_elems) + size_t(q) * slot_elems;
}

// Before pdl_wait(): the lines this block reads right after it, asked of L2. They were last
// touched a projection or two ago, and the weights streamed since have evicted them, so each read
// would be a DRAM round trip on the call's path: the block's call state (read before the push),
// the residual row (read before the sum) and the landing units it will poll. Which landing slot
// this call uses is in the state, so all three slots' units are asked for. A prefetch returns
// nothing, so asking ahead of the kernels that write these lines (earlier calls, the peers'
// pushes) is harmless. `rows` rows of H elements; block b takes row b first.
template <typename T, int W>
__device__ __forceinline__ void warm_landing_call(const LandingPtrs& landing, int rank, const uint32_t* state,
                                                  const T* residual, int rows, int H, size_t slot_elems) {
  if (threadIdx.x == 0) l2_prefetch_line(state + 2 * blockIdx.x);
  if (int(blockIdx.x) >= rows) return;
  constexpr int kLineElems = 128 / sizeof(T);
  const size_t base = size_t(blockIdx.x) * H;
  const T* mine = static_cast<const T*>(landing.rank[rank]);
  // Not unrolled: this runs once a call, and unrolled it took registers that the sums need.
#pragma unroll 1
  for (int c = threadIdx.x * kLineElems; c < H; c += blockDim.x * kLineElems) {
    if (residual != nullptr) l2_prefetch_line(residual + base + c);
#pragma unroll 1
    for (int unit = 0; unit < kLandingSlots * W; ++unit) {  // (slot, rank)
      const int q = unit % W;
      if (q != rank) l2_prefetch_line(mine + landing_row<W>(unit / W, q, slot_elems) + base + c);
    }
  }
}

// Refills with the marker what peers wrote into slot (call - 1) % 3 at the previous call; thread
// `tid` of `nthreads` in the grid.
template <int W>
__device__ __forceinline__ void refill_previous_slot(const LandingPtrs& landing, int rank, const LandingCall& c,
                                                     size_t slot_elems, size_t tid, size_t nthreads) {
  uint16_t* const previous = static_cast<uint16_t*>(landing.rank[rank]) +
                             landing_row<W>(c.number + kLandingSlots - 1, 0, slot_elems);
  const size_t prev_units = c.prev_n / kUnitElems;
  const uint4 marker = make_uint4(kMarkerPair, kMarkerPair, kMarkerPair, kMarkerPair);
  for (size_t u = tid; u < size_t(W) * prev_units; u += nthreads) {
    const size_t q = u / prev_units;
    if (q != size_t(rank))
      *reinterpret_cast<uint4*>(previous + q * slot_elems + (u % prev_units) * kUnitElems) = marker;
  }
}

template <typename T, int W>
__global__ void __launch_bounds__(kMaxThreads)
    peer_all_reduce_add_rms_norm_kernel(const __grid_constant__ LandingPtrs landing, uint32_t* state, int rank,
                                        const T* __restrict__ x, T* __restrict__ residual, T* __restrict__ out,
                                        const T* __restrict__ w, int rows, int H, float eps, size_t slot_elems,
                                        const char* __restrict__ prefetch, uint32_t prefetch_share,
                                        bool own_first, bool warm, const PeerWait wait) {
  static_assert(sizeof(T) == 2, "the landing marker is a 16-bit pattern");
  constexpr int V = kVec<T>;
  __shared__ float scratch[32];
  pdl_launch_dependents();  // the next GEMV may start streaming its weights now
  // The norm weight: no kernel writes it, so it loads before the wait.
  float g[kMaxChunks][V];
#pragma unroll
  for (int k = 0; k < kMaxChunks; ++k) {
    const int c = (threadIdx.x + k * blockDim.x) * V;
    if (c < H) load_vec_ro(w + c, g[k]);
  }
  if (warm) warm_landing_call<T, W>(landing, rank, state, residual, rows, H, slot_elems);
  pdl_wait();  // x is the previous kernel's output; state was written by our previous call
  const size_t n = size_t(rows) * H;
  const size_t tid = size_t(blockIdx.x) * blockDim.x + threadIdx.x, nthreads = size_t(gridDim.x) * blockDim.x;
  // This thread's first unit of x is loaded before the call's state: the two L2 round trips
  // overlap instead of following one another (the push needs both; one decode token is one unit
  // a thread).
  uint4 first_unit{};
  if (own_first && tid < n / V) first_unit = *reinterpret_cast<const uint4*>(x + tid * V);
  const LandingCall call = begin_landing_call(state);

  // 1. Push x into row `rank` of slot call % 3 on every peer.
  const size_t to_row = landing_row<W>(call.number, rank, slot_elems);
  for (size_t u = tid; u < n / V; u += nthreads) {
    uint4 v = own_first && u == tid ? first_unit : *reinterpret_cast<const uint4*>(x + u * V);
    v = make_uint4(word_without_marker(v.x), word_without_marker(v.y), word_without_marker(v.z),
                   word_without_marker(v.w));
#pragma unroll
    for (int q = 0; q < W; ++q)
      if (q != rank) store_volatile16(static_cast<T*>(landing.rank[q]) + to_row + u * V, v);
  }

  // 1b. The next projection's first weights into L2 while this kernel waits on its peers: the
  // projection before has ended, so DRAM is idle until the next one starts (l2_prefetch.cuh).
  // 2.405-2.421 against 2.437-2.446 ms an 8B token at tp 2 without (LAMINA_L2_PREFETCH_MB=0).
  l2_prefetch_block_share(prefetch, prefetch_share);

  // 2. Refill with the marker what peers wrote into slot (call - 1) % 3 at the previous call.
  refill_previous_slot<W>(landing, rank, call, slot_elems, tid, nthreads);

  // 3. This block's rows: wait for every peer's values, sum in rank order, add, normalise.
  const T* const arrived = static_cast<const T*>(landing.rank[rank]) + landing_row<W>(call.number, 0, slot_elems);
  for (int row = blockIdx.x; row < rows; row += gridDim.x) {
    const size_t base = size_t(row) * H;
    float v[kMaxChunks][V];
    float ss = 0.0f;
    // Our own x of the first chunk (the only one up to H = 8192) is loaded first, so it is in
    // flight while we wait for the peers on every rank: a rank after the first had read it only
    // once the others' values arrived. (All chunks early spilled registers at 3+ ranks.)
    const uint4 own0 = own_first && threadIdx.x * V < H ? *reinterpret_cast<const uint4*>(x + base + threadIdx.x * V) : uint4{};
#pragma unroll
    for (int k = 0; k < kMaxChunks; ++k) {
      const int c = (threadIdx.x + k * blockDim.x) * V;
      if (c >= H) break;
      float r[V];
      load_vec(residual + base + c, r);  // issued with the landing reads, not after them
      uint4 raw[W];
#pragma unroll
      for (int q = 0; q < W; ++q)
        if (q == rank) raw[q] = own_first && k == 0 ? own0 : *reinterpret_cast<const uint4*>(x + base + c);
        else raw[q] = wait_landed(arrived + size_t(q) * slot_elems + base + c, wait, rank, q);
      float acc[V];
      sum_in_rank_order<T, W>(raw, acc);
      // As all_reduce_sum then add_rms_norm round: the sum to T, then residual + sum to T.
#pragma unroll
      for (int i = 0; i < V; ++i) v[k][i] = to_float(from_float<T>(r[i] + to_float(from_float<T>(acc[i]))));
      store_vec(residual + base + c, v[k]);
#pragma unroll
      for (int i = 0; i < V; ++i) ss += v[k][i] * v[k][i];
    }
    const float inv = rsqrtf(block_sum(ss, scratch) / static_cast<float>(H) + eps);
#pragma unroll
    for (int k = 0; k < kMaxChunks; ++k) {
      const int c = (threadIdx.x + k * blockDim.x) * V;
      if (c >= H) break;
#pragma unroll
      for (int i = 0; i < V; ++i) v[k][i] = v[k][i] * inv * g[k][i];
      store_vec(out + base + c, v[k]);
    }
  }
  end_landing_call(state, call, n);
}

// The greedy choice over a vocabulary split across the ranks, as one call of the same protocol:
// each rank sends its R slice argmaxes (one 16-byte unit a row, encode_pair) and every rank joins
// all of them in rank order (SliceArgmaxJoin), instead of spreading them into a float32 buffer of
// zeros, all-reducing it and joining in three kernels. Row r is thread r's (rows <= the grid's
// threads take one pass). mine null: this slice has no candidate (NaN).
constexpr int kGatherThreads = 128;

// A (value, index) pair as one landing unit whose 16-bit elements are never the marker: its 64
// bits in five 15-bit elements (bit 15 clear), then three zero elements.
__device__ __forceinline__ uint4 encode_pair(float value, int32_t index) {
  const uint64_t bits = (uint64_t(__float_as_uint(value)) << 32) | uint32_t(index);
  uint32_t e[5];
#pragma unroll
  for (int i = 0; i < 5; ++i) e[i] = uint32_t(bits >> (15 * i)) & 0x7FFFu;
  return make_uint4(e[0] | (e[1] << 16), e[2] | (e[3] << 16), e[4], 0u);
}

__device__ __forceinline__ void decode_pair(const uint4& u, float& value, int32_t& index) {
  const uint32_t e[5] = {u.x & 0x7FFFu, (u.x >> 16) & 0x7FFFu, u.y & 0x7FFFu, (u.y >> 16) & 0x7FFFu, u.z & 0x7FFFu};
  uint64_t bits = 0;
#pragma unroll
  for (int i = 0; i < 5; ++i) bits |= uint64_t(e[i]) << (15 * i);
  value = __uint_as_float(uint32_t(bits >> 32));
  index = int32_t(uint32_t(bits));
}

// This rank's pair of row r (written by the kernel before: read through L2 after the wait).
__device__ __forceinline__ void own_pair(const SliceArgmax* mine, int r, float& value, int32_t& index) {
  value = mine ? __ldcg(&mine[r].value) : __int_as_float(0x7fc00000);
  index = mine ? __ldcg(&mine[r].index) : 0;
}

template <int W>
__global__ void __launch_bounds__(kGatherThreads)
    peer_gather_slice_argmax_kernel(const __grid_constant__ LandingPtrs landing, uint32_t* state, int rank,
                                    const SliceArgmax* mine, int32_t* __restrict__ ids, int rows,
                                    int64_t vocab_per_rank, size_t slot_elems, bool own_first, bool warm,
                                    const PeerWait wait) {
  pdl_launch_dependents();
  if (warm) warm_landing_call<uint16_t, W>(landing, rank, state, nullptr, rows, kUnitElems, slot_elems);
  pdl_wait();  // mine is the previous kernel's output; state was written by our previous call
  const size_t tid = size_t(blockIdx.x) * blockDim.x + threadIdx.x, nthreads = size_t(gridDim.x) * blockDim.x;
  // This thread's first pair is loaded before the call's state, so the two round trips overlap.
  float first_value = 0.0f;
  int32_t first_index = 0;
  if (own_first && tid < size_t(rows)) own_pair(mine, int(tid), first_value, first_index);
  const LandingCall call = begin_landing_call(state);
  // Our pair of row r: the one loaded above where it is this thread's first row.
  const auto ours = [&](size_t r, float& value, int32_t& index) {
    if (own_first && r == tid) {
      value = first_value;
      index = first_index;
    } else {
      own_pair(mine, int(r), value, index);
    }
  };

  // 1. Push our pairs into row `rank` of slot call % 3 on every peer.
  const size_t to_row = landing_row<W>(call.number, rank, slot_elems);
  for (size_t r = tid; r < size_t(rows); r += nthreads) {
    float value;
    int32_t index;
    ours(r, value, index);
    const uint4 v = encode_pair(value, index);
#pragma unroll
    for (int q = 0; q < W; ++q)
      if (q != rank) store_volatile16(static_cast<uint16_t*>(landing.rank[q]) + to_row + r * kUnitElems, v);
  }

  // 2. Refill the previous call's slot with the marker.
  refill_previous_slot<W>(landing, rank, call, slot_elems, tid, nthreads);

  // 3. Join every rank's pair of each row, in rank order.
  const uint16_t* const arrived = static_cast<const uint16_t*>(landing.rank[rank]) + landing_row<W>(call.number, 0, slot_elems);
  for (size_t r = tid; r < size_t(rows); r += nthreads) {
    SliceArgmaxJoin join;
#pragma unroll
    for (int q = 0; q < W; ++q) {
      float value;
      int32_t index;
      if (q == rank) ours(r, value, index);
      else decode_pair(wait_landed(arrived + size_t(q) * slot_elems + r * kUnitElems, wait, rank, q), value, index);
      join.take(value, int64_t(q) * vocab_per_rank + index);
    }
    ids[r] = join.id();
  }
  end_landing_call(state, call, size_t(rows) * kUnitElems);
}

__global__ void fill_marker_kernel(uint4* p, size_t n) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x)
    p[i] = make_uint4(kMarkerPair, kMarkerPair, kMarkerPair, kMarkerPair);
}

// pick(std::integral_constant<int, W>) for W = world (2..kLandingMaxRanks): the kernel of that
// many ranks, for launches and preload_peer_norm_kernels.
template <typename Pick>
auto kernel_for_world(int world, Pick pick) {
  switch (world) {
    case 2: return pick(std::integral_constant<int, 2>{});
    case 3: return pick(std::integral_constant<int, 3>{});
    case 4: return pick(std::integral_constant<int, 4>{});
    case 5: return pick(std::integral_constant<int, 5>{});
    case 6: return pick(std::integral_constant<int, 6>{});
    case 7: return pick(std::integral_constant<int, 7>{});
    case 8: return pick(std::integral_constant<int, 8>{});
    default: fail("the fused all-reduce supports 2 to ", kLandingMaxRanks, " ranks, not ", world);
  }
}

template <typename T>
auto norm_kernel_for_world(int world) {
  return kernel_for_world(world, [](auto w) { return peer_all_reduce_add_rms_norm_kernel<T, decltype(w)::value>; });
}

auto gather_kernel_for_world(int world) {
  return kernel_for_world(world, [](auto w) { return peer_gather_slice_argmax_kernel<decltype(w)::value>; });
}

template <typename T>
void launch_typed(int world, const LandingPtrs& landing, size_t slot_elems, uint32_t* state, int rank, const void* x,
                  void* residual, void* out, const void* w, int rows, int H, float eps, const void* prefetch,
                  uint32_t prefetch_share, cudaStream_t stream) {
  launch_pdl(norm_kernel_for_world<T>(world), dim3(kFusedNormBlocks), dim3(rms_norm_threads(H, kVec<T>)), 0, stream,
             landing, state, rank, static_cast<const T*>(x), static_cast<T*>(residual), static_cast<T*>(out),
             static_cast<const T*>(w), rows, H, eps, slot_elems, static_cast<const char*>(prefetch),
             prefetch_share, own_loads_first(), warm_before_wait(), peer_wait());
}

}  // namespace

void preload_peer_norm_kernels() {
  cudaFuncAttributes attr;
  for (int world = 2; world <= kLandingMaxRanks; ++world) {
    CUDA_CHECK(cudaFuncGetAttributes(&attr, norm_kernel_for_world<__nv_bfloat16>(world)));
    CUDA_CHECK(cudaFuncGetAttributes(&attr, norm_kernel_for_world<__half>(world)));
    CUDA_CHECK(cudaFuncGetAttributes(&attr, gather_kernel_for_world(world)));
  }
}

bool peer_norm_takes(int H, DType dtype, const void* x, const void* residual, const void* out, const void* w) {
  if (dtype != DType::F16 && dtype != DType::BF16) return false;
  if (!is_aligned16(x) || !is_aligned16(residual) || !is_aligned16(out) || !is_aligned16(w)) return false;
  return H > 0 && H % 8 == 0 && H <= kMaxChunks * kMaxThreads * 8;
}

void launch_fill_landing_marker(void* p, size_t bytes, cudaStream_t stream) {
  LAMINA_CHECK(bytes % 16 == 0 && is_aligned16(p), "landing buffers are whole 16-byte units");
  const size_t n = bytes / 16;
  if (n == 0) return;
  const int blocks = int(n / 256 + 1 < 1024 ? n / 256 + 1 : 1024);
  fill_marker_kernel<<<blocks, 256, 0, stream>>>(static_cast<uint4*>(p), n);
  CUDA_CHECK_LAUNCH();
}

void launch_peer_all_reduce_add_rms_norm(DType dtype, int world, const LandingPtrs& landing, size_t slot_elems,
                                         uint32_t* state, int rank, const void* x, void* residual, void* out,
                                         const void* w, int T, int H, float eps, const void* prefetch,
                                         size_t prefetch_bytes, cudaStream_t stream) {
  LAMINA_CHECK(peer_norm_takes(H, dtype, x, residual, out, w), "the fused all-reduce takes no rows of ", H, " ",
               dtype_user_name(dtype), " (or a buffer is not 16-byte aligned)");
  const uint32_t share = l2_prefetch_share(prefetch, prefetch_bytes, kFusedNormBlocks);
  if (dtype == DType::BF16) {
    launch_typed<__nv_bfloat16>(world, landing, slot_elems, state, rank, x, residual, out, w, T, H, eps, prefetch,
                                share, stream);
  } else {
    launch_typed<__half>(world, landing, slot_elems, state, rank, x, residual, out, w, T, H, eps, prefetch, share,
                         stream);
  }
}

void launch_peer_gather_slice_argmax(int world, const LandingPtrs& landing, size_t slot_elems, uint32_t* state, int rank,
                                     const SliceArgmax* mine, int32_t* ids, int R, int64_t vocab_per_rank,
                                     cudaStream_t stream) {
  LAMINA_CHECK(R >= 1 && size_t(R) * kUnitElems <= slot_elems, "the fused gather takes 1 to ",
               slot_elems / kUnitElems, " rows, not ", R);
  launch_pdl(gather_kernel_for_world(world), dim3(kFusedNormBlocks), dim3(kGatherThreads), 0, stream, landing, state,
             rank, mine, ids, R, vocab_per_rank, slot_elems, own_loads_first(), warm_before_wait(), peer_wait());
}

}  // namespace lamina::cuda
