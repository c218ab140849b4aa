// Skinny matmul over int4 weights on the tensor cores, M <= 8 tokens:
//   out[M, N] = x[M, K] · dequant(w)[N, K]^T,  w in the int4 tile layout (mma_layout.h).
// The time should be the weight read (half a byte a weight). Decoding int4 to floats one weight at
// a time (shift, mask, convert, fma: ~5 instructions a weight) left the plain int4 GEMV
// (gemv_quant.cu) bound by instruction issue at 41-62 % of copy bandwidth. Here each 32-bit word
// of w is already an mma A fragment's worth (16 rows x 16 k over the warp): shifts and four lop3
// put pairs of nibbles u into 16-bit floats 128 + u (bf16) / 1024 + u (f16), four packed
// subtracts make them u - 8 exactly, and one mma.sync m16n8k16 multiplies them by x (B: k x token,
// the M tokens in the n columns) with fp32 accumulation: ~12 instructions per word (8 weights) a
// lane instead of ~40.
//   A block of W warps owns one 16-row tile; warp w takes 64-column chunks w, w + W, ... of it
//   (512 contiguous bytes a chunk, 16 a lane), U chunks per load group with the next group in
//   flight. A group's loads are everything its math needs: the weights and the two rows' group
//   scales (a group is a multiple of 64 columns), and x (kSharedX: x[M, K] is staged in shared
//   memory once per block instead). So no global load waits inside the math: a first version
//   loaded the scales and x at their use, and every chunk paid a load latency (20-78 % of copy
//   bandwidth). A chunk past the end has zero scales and x and adds nothing. The first group's
//   weights and scales load before pdl_wait(). The warps' partial 16 x 8 tiles are summed through
//   shared memory. kGateUp (the MLP's gate_up with its SwiGLU) runs a gate tile and its up tile in
//   one block, W/2 warps each; kRopeKv (the attention's qkv with rope and the KV-cache write) a
//   tile of a head's first half and the tile D/2 rows below it, so rotate-half pairs meet.
// The streaming form (gemv_int4_stream_kernel) brings the chunks into shared memory with cp.async,
// a pipeline a warp, so the bytes in flight are not bounded by registers; the matrices of at most
// 2 tiles an SM (o, down) take it where x fits in shared memory.
#include <cuda_runtime.h>

#include <cstdlib>
#include <type_traits>

#include "activation.cuh"
#include "cuda_check.h"
#include "cp_async.cuh"
#include "cuda_types.cuh"
#include "gemv_epilogue.cuh"
#include "mma.cuh"
#include "mma_layout.h"
#include "pdl.cuh"
#include "quant_kernels.h"

namespace lamina::cuda {
namespace {

// 16-bit float bit patterns: kMagic has the ulp 1, so OR-ing a nibble u into its low mantissa
// bits gives kMagic + u; subtracting kMagic + 8 leaves u - 8 exactly.
template <typename T>
struct Int4Magic;
template <>
struct Int4Magic<__nv_bfloat16> {
  static constexpr uint32_t kBase = 0x43004300u;    // bf16x2 (128, 128)
  static constexpr uint32_t kOffset = 0x43084308u;  // (136, 136)
};
template <>
struct Int4Magic<__half> {
  static constexpr uint32_t kBase = 0x64006400u;    // f16x2 (1024, 1024)
  static constexpr uint32_t kOffset = 0x64086408u;  // (1032, 1032)
};

// (a & mask) | bits in one instruction.
__device__ __forceinline__ uint32_t and_or(uint32_t a, uint32_t mask, uint32_t bits) {
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(a), "r"(mask), "r"(bits));
  return r;
}

template <typename T>
__device__ __forceinline__ uint32_t sub2(uint32_t a, uint32_t b) {
  using T2 = std::conditional_t<std::is_same_v<T, __half>, __half2, __nv_bfloat162>;
  const T2 r = __hsub2(*reinterpret_cast<const T2*>(&a), *reinterpret_cast<const T2*>(&b));
  return *reinterpret_cast<const uint32_t*>(&r);
}

// The A fragment (4 registers) of one 32-bit word of the tile layout: register r holds nibbles
// r (low half) and r + 4 (high half) as T values u - 8.
template <typename T>
__device__ __forceinline__ void decode_a(uint32_t w, uint32_t (&a)[4]) {
#pragma unroll
  for (int r = 0; r < 4; ++r) a[r] = sub2<T>(and_or(w >> (4 * r), 0x000f000fu, Int4Magic<T>::kBase), Int4Magic<T>::kOffset);
}

// Where the math finds x: kSharedX, the whole x[M, K] staged in shared memory once per block
// (at most kMaxSharedXBytes); otherwise each load group also loads the lane's 16 x values of each
// chunk from global memory into registers (8 more registers a chunk).
inline constexpr size_t kMaxSharedXBytes = 64 * 1024;

// What one load group brings in for the math of its U chunks.
template <int U, bool kSharedX>
struct Group {
  uint4 w[U];                      // the lane's 16 bytes of each chunk
  float s_lo[U], s_hi[U];          // group scales of rows g and g + 8
  uint4 x[kSharedX ? 1 : U][2];    // register x: x[g][16t .. 16t + 15] of each chunk (zeros for g >= M)
};

// Weights and scales of chunks kc, kc + W, ... (U of them); zeros past the last chunk.
template <int W, int U, bool kSharedX>
__device__ __forceinline__ void load_weights(Group<U, kSharedX>& grp, const uint4* lane_tile, const float* scale_lo,
                                             const float* scale_hi, int kc, int chunks, int chunks_per_group) {
#pragma unroll
  for (int u = 0; u < U; ++u) {
    const int c = kc + u * W;
    const bool in = c < chunks;
    grp.w[u] = in ? load_stream16(lane_tile + static_cast<size_t>(c) * 32) : uint4{};
    grp.s_lo[u] = in ? __ldg(scale_lo + c / chunks_per_group) : 0.0f;
    grp.s_hi[u] = in ? __ldg(scale_hi + c / chunks_per_group) : 0.0f;
  }
}

// The lane's 16 x values of chunk c (zeros for absent tokens or chunks): x_lane is x[g] + 16t.
template <typename T>
__device__ __forceinline__ void load_x_chunk(uint4 (&out)[2], const T* x_lane, bool in, int c) {
  const uint4* p = reinterpret_cast<const uint4*>(x_lane + static_cast<size_t>(c) * mma_layout::kInt4TileCols);
  out[0] = in ? p[0] : uint4{};
  out[1] = in ? p[1] : uint4{};
}

template <int W, int U, bool kSharedX, typename T>
__device__ __forceinline__ void load_x_registers(Group<U, kSharedX>& grp, const T* x_lane, bool has_token, int kc,
                                                 int chunks) {
  if constexpr (!kSharedX) {
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = kc + u * W;
      const bool in = has_token && c < chunks;
      const uint4* p = reinterpret_cast<const uint4*>(x_lane + static_cast<size_t>(c) * mma_layout::kInt4TileCols);
      grp.x[u][0] = in ? __ldg(p) : uint4{};
      grp.x[u][1] = in ? __ldg(p + 1) : uint4{};
    }
  }
}

// acc (C tile: rows g, g + 8 x tokens 2t, 2t + 1) += the group's chunks, each scaled per row.
// x_lane: the lane's x in shared memory (kSharedX) or unused.
template <typename T, int W, int U, bool kSharedX>
__device__ __forceinline__ void multiply(const Group<U, kSharedX>& grp, const T* x_lane, bool has_token, int kc,
                                         int chunks, float (&acc)[4]) {
  uint4 xs[U][2];
#pragma unroll
  for (int u = 0; u < U; ++u) {
    if constexpr (kSharedX) {
      load_x_chunk(xs[u], x_lane, has_token && kc + u * W < chunks, kc + u * W);
    } else {
      xs[u][0] = grp.x[u][0];
      xs[u][1] = grp.x[u][1];
    }
  }
#pragma unroll
  for (int u = 0; u < U; ++u) {
    float part[4] = {};
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      uint32_t a[4];
      decode_a<T>(word_of(grp.w[u], j), a);
      const uint4& xv = xs[u][j / 2];  // columns 16t + 4j .. + 3: words 2j, 2j + 1 of the 16 values
      const uint32_t b0 = (j % 2) ? xv.z : xv.x, b1 = (j % 2) ? xv.w : xv.y;
      mma_16816<T>(part, a, b0, b1);
    }
    acc[0] = fmaf(part[0], grp.s_lo[u], acc[0]);
    acc[1] = fmaf(part[1], grp.s_lo[u], acc[1]);
    acc[2] = fmaf(part[2], grp.s_hi[u], acc[2]);
    acc[3] = fmaf(part[3], grp.s_hi[u], acc[3]);
  }
}

// The block's output tile: the W warps' 16 x 8 C tiles (acc: rows g, g + 8 x tokens 2t, 2t + 1)
// summed through shared memory, partial[warp][row][token]. Thread i < 16 M gets (row i % 16, token
// i / 16): the sum over the first WT warps in `s` and, with kPaired (two tiles a block, W/2 warps
// each), the sum over the others in `second`; other threads get false.
template <int W, bool kPaired>
__device__ __forceinline__ bool sum_warp_tiles(const float (&acc)[4], int M, float& s, float& second) {
  constexpr int kRows = mma_layout::kInt4TileRows;
  constexpr int WT = kPaired ? W / 2 : W;  // warps a tile
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  __shared__ float partial[W][kRows][8];
  partial[warp][g][2 * t] = acc[0];
  partial[warp][g][2 * t + 1] = acc[1];
  partial[warp][g + 8][2 * t] = acc[2];
  partial[warp][g + 8][2 * t + 1] = acc[3];
  __syncthreads();
  if (threadIdx.x >= kRows * M) return false;
  const int row = threadIdx.x % kRows, m = threadIdx.x / kRows;
  s = 0.0f;
  second = 0.0f;
#pragma unroll
  for (int i = 0; i < WT; ++i) {
    s += partial[i][row][m];
    if constexpr (kPaired) second += partial[WT + i][row][m];
  }
  return true;
}

// Rows blockIdx.x * 16 .. + 15 of out[M, N]: the sums, or with kGateUp (the first W/2 warps' sum
// is the gate, the others' the up) silu(gate) * up.
template <typename T, int W, bool kGateUp>
__device__ __forceinline__ void write_warp_tiles(T* __restrict__ out, const float (&acc)[4], int M, int N) {
  constexpr int kRows = mma_layout::kInt4TileRows;
  float s, up;
  if (!sum_warp_tiles<W, kGateUp>(acc, M, s, up)) return;
  if constexpr (kGateUp) s = silu(s) * up;
  out[static_cast<size_t>(threadIdx.x / kRows) * N + blockIdx.x * kRows + threadIdx.x % kRows] = from_float<T>(s);
}

// kRopeKv: the qkv projection [(Hq + 2 Hkv) D, K] with rope_kv_write's work in the epilogue
// (gemv_epilogue.cuh). Block b owns one tile of a head's first half and the tile D/2 rows below it,
// W/2 warps each, so each of its rows meets its rotate-half partner in the block: thread (row, m)
// rotates the pair and stores both rows, and k and v rows also go to the token's KV-cache row.
__device__ __forceinline__ int rope_tile(int b, int second, int D) {
  const int pairs = D / 32, head = b / pairs;  // tile pairs a head
  return head * (D / 16) + b % pairs + second * pairs;
}

// kGateUp: w is an MLP's gate_up [2N, K] (gate tiles, then up tiles) and out[M, N] = silu(gate) *
// up: block b runs gate tile b on its first W/2 warps and up tile b + N/16 on the others.
// kRopeKv: the qkv projection with rope and the KV write (rope_tile above; N = (Hq + 2 Hkv) D).
template <typename T, int W, int U, bool kSharedX, bool kGateUp, bool kRopeKv = false>
__global__ void __launch_bounds__(W * 32)
    gemv_int4_tiles_kernel(T* __restrict__ out, const T* __restrict__ x, const uint4* __restrict__ w,
                           const float* __restrict__ scales, int M, int N, int K, int group,
                           const __grid_constant__ RopeKvArgs rope) {
  constexpr int kRows = mma_layout::kInt4TileRows, kCols = mma_layout::kInt4TileCols;
  constexpr bool kPaired = kGateUp || kRopeKv;  // two tiles a block
  constexpr int WT = kPaired ? W / 2 : W;      // warps a tile
  extern __shared__ uint4 x_shared[];          // kSharedX: x[M, K]
  pdl_launch_dependents();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int rt = kRopeKv ? rope_tile(blockIdx.x, warp >= WT, rope.p.head_dim)
                         : blockIdx.x + (kGateUp && warp >= WT ? N / kRows : 0);  // the weight's tile row
  const int chunks = K / kCols, chunks_per_group = group / kCols;
  const uint4* lane_tile = w + static_cast<size_t>(rt) * chunks * 32 + lane;  // chunk 0 of this lane
  const int groups = K / group;
  const float* scale_lo = scales + static_cast<size_t>(rt * kRows + g) * groups;  // row g of the tile
  const float* scale_hi = scale_lo + static_cast<size_t>(8) * groups;             // row g + 8
  const bool has_token = g < M;  // B column g is token g; lanes of absent tokens feed zeros
  const size_t x_offset = static_cast<size_t>(has_token ? g : 0) * K + 16 * t;
  const T* x_lane = kSharedX ? reinterpret_cast<const T*>(x_shared) + x_offset : x + x_offset;

  Group<U, kSharedX> cur, next;
  int kc = warp % WT;
  load_weights<WT, U>(cur, lane_tile, scale_lo, scale_hi, kc, chunks, chunks_per_group);  // no wait needed
  // kRopeKv: thread (row, m) < 16 M prepares its first-half row (the pair shares the angle and the
  // cache row) while the weights stream, before or after the wait (rope_prepares_now).
  const int rope_row_a = kRopeKv ? rope_tile(blockIdx.x, 0, rope.p.head_dim) * kRows + threadIdx.x % kRows : 0;
  RopeKvPrep prep;
  if (kRopeKv && rope_prepares_now(rope, /*waited=*/false) && threadIdx.x < kRows * M)
    prep = rope_kv_prepare_row(threadIdx.x / kRows, rope_row_a, rope);
  pdl_wait();  // x (and out) belong to earlier kernels
  if (kRopeKv && rope_prepares_now(rope, /*waited=*/true) && threadIdx.x < kRows * M)
    prep = rope_kv_prepare_row(threadIdx.x / kRows, rope_row_a, rope);
  if constexpr (kSharedX) {
    const uint4* src = reinterpret_cast<const uint4*>(x);
    for (int i = threadIdx.x; i < M * K / 8; i += W * 32) x_shared[i] = __ldg(src + i);
    __syncthreads();
  } else {
    load_x_registers<WT, U>(cur, x_lane, has_token, kc, chunks);
  }

  float acc[4] = {};
  constexpr int kStep = WT * U;
  for (; kc < chunks; kc += kStep) {
    const bool more = kc + kStep < chunks;
    if (more) {
      load_weights<WT, U>(next, lane_tile, scale_lo, scale_hi, kc + kStep, chunks, chunks_per_group);
      load_x_registers<WT, U>(next, x_lane, has_token, kc + kStep, chunks);
    }
    multiply<T, WT, U>(cur, x_lane, has_token, kc, chunks, acc);
    if (more) cur = next;
  }

  if constexpr (kRopeKv) {
    float a, b;  // rows rope_row_a and rope_row_a + D/2 of token m
    if (!sum_warp_tiles<W, true>(acc, M, a, b)) return;
    const int m = threadIdx.x / kRows;
    if (rope.prepare_late) prep = rope_kv_prepare_row(m, rope_row_a, rope);
    rope_kv_store_row(out, N, m, rope_row_a, a, b, rope, prep);
    rope_kv_store_row(out, N, m, rope_row_a + rope.p.head_dim / 2, b, a, rope, prep);
  } else {
    write_warp_tiles<T, W, kGateUp>(out, acc, M, N);
  }
}

// The streaming form of the kernel above, for M * K small enough to stage x in shared memory.
// Above, a lane's chunks in flight sit in registers (U of them, and U more for the next group),
// which caps the bytes in flight an SM at what its resident blocks' registers hold: o and down
// (256 tiles, 2 blocks of 16 warps an SM) kept ~32 KB an SM in flight and streamed at 59-69 % of
// copy bandwidth. Here each warp runs its own pipeline of P asynchronous copies (cp.async, 16
// bytes a lane) into a ring of P chunk slots in shared memory: a lane copies its own 16 bytes of
// a chunk and later reads the same 16 bytes back, so no barrier is needed between warps or lanes,
// and the bytes in flight (W x P x 512 an SM's block) cost shared memory, not registers. The first
// P chunks a warp and the tiles' group scales are requested before pdl_wait(), so they stream
// while the kernel before finishes; x[M, K] is staged once a block after it.
//   shared memory: ring [W][P][32 lanes] uint4 | scales [tiles][16 rows][K / group] f32 | x [M][K] T
template <typename T, int W, int P, bool kGateUp>
__global__ void __launch_bounds__(W * 32)
    gemv_int4_stream_kernel(T* __restrict__ out, const T* __restrict__ x, const uint4* __restrict__ w,
                            const float* __restrict__ scales, int M, int N, int K, int group) {
  constexpr int kRows = mma_layout::kInt4TileRows, kCols = mma_layout::kInt4TileCols;
  constexpr int kTiles = kGateUp ? 2 : 1;  // a gate tile and its up tile, or one tile
  constexpr int WT = W / kTiles;           // warps a tile
  extern __shared__ uint4 smem[];
  pdl_launch_dependents();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const int chunks = K / kCols, chunks_per_group = group / kCols, groups = K / group;
  uint4* ring = smem + warp * P * 32 + lane;  // this lane's 16 bytes of slot 0
  float* scale_shared = reinterpret_cast<float*>(smem + W * P * 32);
  T* x_shared = reinterpret_cast<T*>(scale_shared + kTiles * kRows * groups);

  // The tiles' scales: a tile's 16 rows of K / group floats are contiguous.
  const int scale_vecs = kRows * groups / 4;
  for (int i = threadIdx.x; i < kTiles * scale_vecs; i += W * 32) {
    const int rt = blockIdx.x + (i / scale_vecs) * (N / kRows);
    const uint4* src = reinterpret_cast<const uint4*>(scales + static_cast<size_t>(rt) * kRows * groups);
    cp_async16(smem_u32(reinterpret_cast<uint4*>(scale_shared) + i), src + i % scale_vecs, true);
  }
  cp_async_commit();
  const int tile = kGateUp && warp >= WT ? 1 : 0, wt = warp - tile * WT;
  const int rt = blockIdx.x + tile * (N / kRows);  // the weight's tile row
  const uint4* lane_tile = w + static_cast<size_t>(rt) * chunks * 32 + lane;
  // Chunk c of this warp into slot `slot` (zeros past the last chunk), one copy group each.
  auto request = [&](int c, int slot) {
    cp_async16(smem_u32(ring + slot * 32), lane_tile + static_cast<size_t>(min(c, chunks - 1)) * 32, c < chunks);
    cp_async_commit();
  };
#pragma unroll
  for (int j = 0; j < P; ++j) request(wt + j * WT, j);  // no wait needed: weights are no kernel's output

  pdl_wait();  // x (and out) belong to earlier kernels
  const uint4* x_src = reinterpret_cast<const uint4*>(x);
  for (int i = threadIdx.x; i < M * K / 8; i += W * 32) reinterpret_cast<uint4*>(x_shared)[i] = __ldcg(x_src + i);
  cp_async_wait<P>();  // this thread's scale copies (the oldest group)
  __syncthreads();

  const bool has_token = g < M;  // B column g is token g; lanes of absent tokens feed zeros
  const T* x_lane = x_shared + static_cast<size_t>(has_token ? g : 0) * K + 16 * t;
  const float* scale_lo = scale_shared + (tile * kRows + g) * groups;  // row g of the tile
  const float* scale_hi = scale_lo + 8 * groups;                      // row g + 8
  float acc[4] = {};
  int slot = 0;
  for (int c = wt; c < chunks; c += WT) {
    cp_async_wait<P - 1>();  // chunk c's group: P - 1 newer ones may still be in flight
    Group<1, true> grp;
    grp.w[0] = ring[slot * 32];
    grp.s_lo[0] = scale_lo[c / chunks_per_group];
    grp.s_hi[0] = scale_hi[c / chunks_per_group];
    multiply<T, WT, 1, true>(grp, x_lane, has_token, c, chunks, acc);
    request(c + P * WT, slot);  // after the math has read the slot
    slot = slot + 1 == P ? 0 : slot + 1;
  }
  cp_async_wait<0>();  // no copy may land after the block has gone

  write_warp_tiles<T, W, kGateUp>(out, acc, M, N);
}

// Shared memory of the streaming kernel (see its layout), and the most it may take: two blocks an
// SM must fit.
inline constexpr size_t kMaxStreamSmemBytes = 110 * 1024;
size_t stream_smem_bytes(int W, int P, bool gate_up, int M, int K, int group) {
  const size_t tiles = gate_up ? 2 : 1;
  return size_t(W) * P * 512 + tiles * mma_layout::kInt4TileRows * (K / group) * 4 + size_t(M) * K * 2;
}

// N: outputs (kGateUp: F, of a [2F, K] weight). False (nothing launched) where the shared memory
// would exceed kMaxStreamSmemBytes.
template <int W, int P, bool kGateUp = false>
bool launch_stream(DType dt, void* out, const void* x, const DeviceQuantWeight& w, int M, int N, int K,
                   cudaStream_t stream) {
  static_assert(W * 32 >= mma_layout::kInt4TileRows * 8, "the final sum needs a thread per (row, token)");
  const size_t bytes = stream_smem_bytes(W, P, kGateUp, M, K, w.group_size);
  if (bytes > kMaxStreamSmemBytes) return false;
  auto run = [&](auto tag) {
    using E = typename decltype(tag)::type;
    auto* kernel = gemv_int4_stream_kernel<E, W, P, kGateUp>;
    allow_dynamic_smem(reinterpret_cast<const void*>(kernel), kMaxStreamSmemBytes);
    launch_pdl(kernel, dim3(N / mma_layout::kInt4TileRows), dim3(W * 32), bytes, stream, static_cast<E*>(out),
               static_cast<const E*>(x), static_cast<const uint4*>(w.data), w.scales, M, N, K, w.group_size);
  };
  if (dt == DType::F16) run(TypeTag<__half>{});
  else run(TypeTag<__nv_bfloat16>{});
  return true;
}

// N: outputs (kGateUp: F, of a [2F, K] weight).
template <int W, int U, bool kSharedX, bool kGateUp = false, bool kRopeKv = false>
void launch_shape(DType dt, void* out, const void* x, const DeviceQuantWeight& w, int M, int N, int K,
                  cudaStream_t stream, const RopeKvArgs& rope = {}) {
  static_assert(W * 32 >= mma_layout::kInt4TileRows * 8, "the final sum needs a thread per (row, token)");
  const size_t x_bytes = kSharedX ? static_cast<size_t>(M) * K * 2 : 0;
  LAMINA_CHECK(x_bytes <= kMaxSharedXBytes, "x of ", M, " x ", K, " does not fit the int4 GEMV's shared memory");
  auto run = [&](auto tag) {
    using E = typename decltype(tag)::type;
    auto* kernel = gemv_int4_tiles_kernel<E, W, U, kSharedX, kGateUp, kRopeKv>;
    if (kSharedX) allow_dynamic_smem(reinterpret_cast<const void*>(kernel), kMaxSharedXBytes);
    const int blocks = N / mma_layout::kInt4TileRows / (kRopeKv ? 2 : 1);  // kRopeKv: a tile pair a block
    launch_pdl(kernel, dim3(blocks), dim3(W * 32), x_bytes, stream, static_cast<E*>(out), static_cast<const E*>(x),
               static_cast<const uint4*>(w.data), w.scales, M, N, K, w.group_size, rope);
  };
  if (dt == DType::F16) run(TypeTag<__half>{});
  else run(TypeTag<__nv_bfloat16>{});
}

// LAMINA_INT4_STREAM=0 in the environment: the register-pipelined kernel only (A/B).
bool stream_enabled() {
  static const bool on = [] {
    const char* env = std::getenv("LAMINA_INT4_STREAM");
    return !(env && env[0] == '0');
  }();
  return on;
}

int multiprocessors() {
  int device = 0, n = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device));
  return n;
}

void check_args(DType dt, const void* x, const DeviceQuantWeight& w, int M, int N, int K) {
  LAMINA_CHECK(w.format == WeightFormat::Int4Group && w.int4_tiles, "the int4 tile GEMV takes int4 tile weights");
  LAMINA_CHECK(dt == DType::F16 || dt == DType::BF16, "the int4 tile GEMV runs in float16 or bfloat16, not ",
               dtype_user_name(dt));
  LAMINA_CHECK(M >= 1 && M <= 8, "the int4 tile GEMV takes 1 to 8 tokens, got ", M);
  LAMINA_CHECK(int4_tiles_fit(N, K, w.group_size), "int4 tiles of [", N, ", ", K, "] with group ", w.group_size);
  LAMINA_CHECK(is_aligned16(x), "the int4 tile GEMV needs 16-byte aligned activations");
}

}  // namespace

void launch_gemv_int4_tiles(DType dt, void* out, const void* x, const DeviceQuantWeight& w, int M, int N, int K,
                            cudaStream_t stream) {
  check_args(dt, x, w, M, N, K);
  // Block shapes measured on an H100 at M = 1 (bench_kernels' gemv-int4-tiles lines, % of copy
  // bandwidth): with at most 2 tiles an SM (o, down: 256 tiles) 16 warps a tile with x in shared
  // memory are best (59 / 69 %, against 56 / 63 % with 8 warps and x in registers, which stays
  // for x too large for shared memory); with up to 4 (qkv) 4 warps and 4 chunks a group (64 %);
  // with more tiles than that (gate_up), x in shared memory, read from global memory once a block
  // instead of once a warp, wins (83 % against 76 %).
  static const int sms = multiprocessors();
  const int tiles = N / mma_layout::kInt4TileRows;
  // With at most 2 tiles an SM (o, down) the streaming kernel, 16 warps a tile and 2 chunks in
  // flight a warp (bench_kernels' gemv-int4-stream lines): down 13.4 us (78 % of copy) against
  // 15.4 for the best register-pipelined shape on an H100 (12.1 against 14.8 on an H200), o 4.9
  // against 5.1 (4.8 against 4.9); 8 chunks in flight were slower (down 15.4, 14.1). qkv keeps the
  // register kernel (7.0 against 7.7 us at its best streaming shape, H100).
  if (tiles <= 2 * sms && stream_enabled() && is_aligned16(w.scales) &&
      launch_stream<16, 2>(dt, out, x, w, M, N, K, stream)) {
    CUDA_CHECK_LAUNCH();
    return;
  }
  const bool x_fits = static_cast<size_t>(M) * K * 2 <= kMaxSharedXBytes;
  if (tiles <= 2 * sms && x_fits) launch_shape<16, 2, true>(dt, out, x, w, M, N, K, stream);
  else if (tiles <= 2 * sms) launch_shape<8, 2, false>(dt, out, x, w, M, N, K, stream);
  else if (tiles <= 4 * sms || !x_fits) launch_shape<4, 4, false>(dt, out, x, w, M, N, K, stream);
  else launch_shape<4, 4, true>(dt, out, x, w, M, N, K, stream);
  CUDA_CHECK_LAUNCH();
}

bool launch_gemv_int4_tiles_gate_up(DType dt, void* out, const void* x, const DeviceQuantWeight& w, int M, int F,
                                    int K, cudaStream_t stream) {
  if (F % mma_layout::kInt4TileRows != 0) return false;  // a gate tile and its up tile per block
  check_args(dt, x, w, M, 2 * F, K);
  // The block's 8 warps on a gate tile and its up tile (4 a tile), x staged in shared memory once
  // for both, 2 chunks a group. H100, Llama-3-8B (bench_kernels' gemv-int4-tiles gate_up+swiglu
  // lines): 25.5 us (81 % of copy bandwidth) against 28.6 with 4 chunks a group, which plain
  // gate_up's best shape has; 8B W4A16 decode 2.591 against 2.678 ms/token in one run.
  // The streaming kernel's best shape here (8 warps, 4 chunks in flight a warp) is not faster:
  // 27.0 against 25.8 us on an H100, 24.9 against 25.9 on an H200 (gemv-int4-stream lines).
  if (static_cast<size_t>(M) * K * 2 <= kMaxSharedXBytes) launch_shape<8, 2, true, true>(dt, out, x, w, M, F, K, stream);
  else launch_shape<8, 4, false, true>(dt, out, x, w, M, F, K, stream);
  CUDA_CHECK_LAUNCH();
  return true;
}

bool launch_gemv_int4_tiles_qkv_rope_kv_write(DType dt, void* qkv, const void* x, const DeviceQuantWeight& w, int M,
                                              int K, const RopeKvArgs& rope, cudaStream_t stream) {
  const int N = (rope.p.Hq + 2 * rope.p.Hkv) * rope.p.head_dim;
  if (rope.p.head_dim % 32 != 0) return false;  // whole tiles in each half of a head
  check_args(dt, x, w, M, N, K);
  // 4 warps a tile and 4 chunks a group, as the plain qkv GEMV, but x staged in shared memory once
  // for both tiles: 99 registers a thread, 2 blocks of 8 warps an SM, so the 192 tile pairs of the
  // Llama-3-8B qkv run in one wave (x in registers took 168: one block an SM, two waves). H100, 8B
  // W4A16 decode: 2.391 ms/token against 2.421 with the separate rope kernel (LAMINA_FUSED_ROPE=0);
  // 8 warps with 2 chunks a group took 2.430 (x in registers) and 2.455 (shared), 4 warps 2.560.
  if (static_cast<size_t>(M) * K * 2 <= kMaxSharedXBytes)
    launch_shape<8, 4, true, false, true>(dt, qkv, x, w, M, N, K, stream, rope);
  else
    launch_shape<8, 2, false, false, true>(dt, qkv, x, w, M, N, K, stream, rope);
  CUDA_CHECK_LAUNCH();
  return true;
}

bool launch_gemv_int4_tiles_variant(int warps, int chunks_per_group, bool shared_x, DType dt, void* out,
                                    const void* x, const DeviceQuantWeight& w, int M, int N, int K,
                                    cudaStream_t stream) {
  check_args(dt, x, w, M, N, K);
  switch ((shared_x ? 1000 : 0) + warps * 10 + chunks_per_group) {
    case 41: launch_shape<4, 1, false>(dt, out, x, w, M, N, K, stream); break;
    case 42: launch_shape<4, 2, false>(dt, out, x, w, M, N, K, stream); break;
    case 44: launch_shape<4, 4, false>(dt, out, x, w, M, N, K, stream); break;
    case 81: launch_shape<8, 1, false>(dt, out, x, w, M, N, K, stream); break;
    case 82: launch_shape<8, 2, false>(dt, out, x, w, M, N, K, stream); break;
    case 84: launch_shape<8, 4, false>(dt, out, x, w, M, N, K, stream); break;
    case 1042: launch_shape<4, 2, true>(dt, out, x, w, M, N, K, stream); break;
    case 1044: launch_shape<4, 4, true>(dt, out, x, w, M, N, K, stream); break;
    case 1048: launch_shape<4, 8, true>(dt, out, x, w, M, N, K, stream); break;
    case 1082: launch_shape<8, 2, true>(dt, out, x, w, M, N, K, stream); break;
    case 1084: launch_shape<8, 4, true>(dt, out, x, w, M, N, K, stream); break;
    case 1088: launch_shape<8, 8, true>(dt, out, x, w, M, N, K, stream); break;
    // 16 warps a tile: half the chunks a warp, for the matrices of few tiles (o, down), where each
    // warp's chain of load round trips sets the time.
    case 1162: launch_shape<16, 2, true>(dt, out, x, w, M, N, K, stream); break;
    case 1164: launch_shape<16, 4, true>(dt, out, x, w, M, N, K, stream); break;
    default: return false;
  }
  CUDA_CHECK_LAUNCH();
  return true;
}

bool launch_gemv_int4_stream_variant(int warps, int depth, bool gate_up, DType dt, void* out, const void* x,
                                     const DeviceQuantWeight& w, int M, int N, int K, cudaStream_t stream) {
  check_args(dt, x, w, M, gate_up ? 2 * N : N, K);
  if (!is_aligned16(w.scales) || (gate_up && N % mma_layout::kInt4TileRows != 0)) return false;
  bool launched = false;
  switch ((gate_up ? 1000 : 0) + warps * 10 + depth) {
    case 44: launched = launch_stream<4, 4>(dt, out, x, w, M, N, K, stream); break;
    case 48: launched = launch_stream<4, 8>(dt, out, x, w, M, N, K, stream); break;
    case 84: launched = launch_stream<8, 4>(dt, out, x, w, M, N, K, stream); break;
    case 88: launched = launch_stream<8, 8>(dt, out, x, w, M, N, K, stream); break;
    case 162: launched = launch_stream<16, 2>(dt, out, x, w, M, N, K, stream); break;
    case 164: launched = launch_stream<16, 4>(dt, out, x, w, M, N, K, stream); break;
    case 168: launched = launch_stream<16, 8>(dt, out, x, w, M, N, K, stream); break;
    case 1084: launched = launch_stream<8, 4, true>(dt, out, x, w, M, N, K, stream); break;
    case 1088: launched = launch_stream<8, 8, true>(dt, out, x, w, M, N, K, stream); break;
    case 1164: launched = launch_stream<16, 4, true>(dt, out, x, w, M, N, K, stream); break;
    case 1168: launched = launch_stream<16, 8, true>(dt, out, x, w, M, N, K, stream); break;
    default: return false;
  }
  if (launched) CUDA_CHECK_LAUNCH();
  return launched;
}

bool launch_gemv_int4_tiles_gate_up_variant(int warps, int chunks_per_group, DType dt, void* out, const void* x,
                                            const DeviceQuantWeight& w, int M, int F, int K, cudaStream_t stream) {
  if (F % mma_layout::kInt4TileRows != 0 || static_cast<size_t>(M) * K * 2 > kMaxSharedXBytes) return false;
  check_args(dt, x, w, M, 2 * F, K);
  switch (warps * 10 + chunks_per_group) {
    case 42: launch_shape<4, 2, true, true>(dt, out, x, w, M, F, K, stream); break;
    case 44: launch_shape<4, 4, true, true>(dt, out, x, w, M, F, K, stream); break;
    case 48: launch_shape<4, 8, true, true>(dt, out, x, w, M, F, K, stream); break;
    case 82: launch_shape<8, 2, true, true>(dt, out, x, w, M, F, K, stream); break;
    case 84: launch_shape<8, 4, true, true>(dt, out, x, w, M, F, K, stream); break;
    case 88: launch_shape<8, 8, true, true>(dt, out, x, w, M, F, K, stream); break;
    case 162: launch_shape<16, 2, true, true>(dt, out, x, w, M, F, K, stream); break;
    case 164: launch_shape<16, 4, true, true>(dt, out, x, w, M, F, K, stream); break;
    default: return false;
  }
  CUDA_CHECK_LAUNCH();
  return true;
}

}  // namespace lamina::cuda
