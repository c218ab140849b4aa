// The tensor-core decode attention's work on one 16-key group, shared by the kernel that loads a
// group's K and V rows into registers (attention_decode_mma.cu) and the one that stages them in
// shared memory by bulk copies (attention_decode_bulk.cu). A warp holds 8 q heads of one kv head
// as the n = 8 columns of mma.sync m16n8k16 and a group's keys as its 16 rows; lane (g, q) =
// (lane / 4, lane % 4) holds the K and V slices of mma_layout.h's decode_* maps:
//   S^T[16 keys, 8 heads] = K · Q^T, the online softmax per head (column), O^T[D, 8] += V^T · P^T
// with P^T from the S^T accumulators by one movmatrix.trans per 8 keys. An FP8 cache runs the mma
// in float16 (e4m3 converts to f16x2 in one instruction; q clamped to float16's range).
#pragma once
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>
#include <type_traits>

#include "attention_common.cuh"
#include "mma.cuh"
#include "mma_layout.h"

namespace lamina::cuda {

// Shapes for cache element type C and head_dim D. M: the mma's input type.
template <typename T, typename C, int D>
struct MmaDecodeShape {
  using M = std::conditional_t<kIsFp8Kv<C>, __half, T>;
  static constexpr int KD = D / 16;                          // k-steps of S^T, m-tiles of O^T
  static constexpr int KW = D / 4, VW = D / 8;               // dims of a K / V row a lane holds
  static constexpr int KWORDS = KW * int(sizeof(C)) / 4;     // 32-bit words of them
  static constexpr int VWORDS = VW * int(sizeof(C)) / 4;
  static_assert(KWORDS % 4 == 0 && (VWORDS % 4 == 0 || VWORDS == 2), "16- or 8-byte loads");
};

// One lane's cache data of one 16-key group.
template <int KWORDS, int VWORDS>
struct GroupRegs {
  uint32_t k[2][KWORDS];  // keys g, g + 8
  uint32_t v[4][VWORDS];  // keys 2q, 2q + 1, 2q + 8, 2q + 9
  // Warp-uniform: some key of the group is past the split's end or has no pool row. Then `ok`
  // (bits 0, 1: the K keys; 2..5: the V keys) says which of this lane's keys exist; the others
  // were loaded from a stand-in row and are masked (scores -inf, V zeros) before use.
  bool partial;
  uint32_t ok;
};

// WORDS 32-bit words from src (16-byte aligned, or 8 for WORDS == 2) through L2: rope_kv_write,
// the kernel before, wrote the step's rows (pdl.cuh).
template <int WORDS>
__device__ __forceinline__ void load_words(uint32_t (&w)[WORDS], const void* src) {
  if constexpr (WORDS % 4 == 0) {
#pragma unroll
    for (int i = 0; i < WORDS / 4; ++i) {
      const uint4 x = __ldcg(reinterpret_cast<const uint4*>(src) + i);
      w[4 * i] = x.x, w[4 * i + 1] = x.y, w[4 * i + 2] = x.z, w[4 * i + 3] = x.w;
    }
  } else {
    static_assert(WORDS == 2, "16- or 8-byte rows");
    const uint2 x = __ldcg(reinterpret_cast<const uint2*>(src));
    w[0] = x.x, w[1] = x.y;
  }
}

// Two e4m3 (the low 16 bits of w) as f16x2, the low byte in the low half.
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint32_t w) {
  const __half2_raw r = __nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(w & 0xffffu), __NV_E4M3);
  return static_cast<uint32_t>(r.x) | (static_cast<uint32_t>(r.y) << 16);
}

// The transpose of an 8x8 16-bit matrix held in mma fragment layout (lane: row lane/4, columns
// 2(lane%4), +1), in the same layout.
__device__ __forceinline__ uint32_t transpose8x8(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

// Q^T as B fragments: qb[kk][j] = the q row q_head (a head's D elements of T; nullptr: zeros,
// a column past the kv head's q heads) at elements decode_k_elem(kk, j), + 1 of lane q's dims.
template <typename T, typename C, int D>
__device__ __forceinline__ void load_q_fragments(uint32_t (&qb)[D / 16][2], const T* q_head, int q) {
  using S = MmaDecodeShape<T, C, D>;
  using M = typename S::M;
  uint32_t raw[S::KW / 2];  // KW elements of T
  if (q_head != nullptr) {
    load_words<S::KW / 2>(raw, q_head + mma_layout::decode_k_first(D, q));
  } else {
#pragma unroll
    for (int w = 0; w < S::KW / 2; ++w) raw[w] = 0;
  }
#pragma unroll
  for (int kk = 0; kk < S::KD; ++kk)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t w = raw[mma_layout::decode_k_elem(kk, h) / 2];
      if constexpr (std::is_same_v<M, T>) {
        qb[kk][h] = w;
      } else {  // T -> float16 for the FP8 cache's mma, clamped to float16's range
        const T* e = reinterpret_cast<const T*>(&w);
        constexpr float kMax = 65504.0f;
        qb[kk][h] = pack2<M>(fminf(fmaxf(to_float(e[0]), -kMax), kMax), fminf(fmaxf(to_float(e[1]), -kMax), kMax));
      }
    }
}

// One group into a warp's online softmax of heads 2q, 2q + 1 (this lane's columns): running max
// m (the same in every lane of a column), this lane's part of the sum l, and O^T [D / 16 m-tiles]
// in accumulator layout. score_scale: log2(e) / sqrt(D) times the cache's K scale.
template <typename T, typename C, int D>
__device__ __forceinline__ void mma_decode_group(GroupRegs<MmaDecodeShape<T, C, D>::KWORDS, MmaDecodeShape<T, C, D>::VWORDS>& r,
                                                 const uint32_t (&qb)[D / 16][2], float score_scale, float (&m)[2],
                                                 float (&l)[2], float (&o)[D / 16][4]) {
  using S = MmaDecodeShape<T, C, D>;
  namespace ml = mma_layout;
  if (r.partial) {  // V rows of missing keys become zeros (their scores become -inf below)
#pragma unroll
    for (int h = 0; h < 4; ++h)
      if (!((r.ok >> (2 + h)) & 1u))
#pragma unroll
        for (int w = 0; w < S::VWORDS; ++w) r.v[h][w] = 0;
  }
  float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // S^T: (key g, head 2q), (g, 2q+1), (g+8, 2q), (g+8, 2q+1)
#pragma unroll
  for (int kk = 0; kk < S::KD; ++kk) {
    uint32_t a[4];  // register i: key g + 8 (i & 1), elements decode_k_elem(kk, i >> 1) and + 1
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int el = ml::decode_k_elem(kk, i >> 1);
      if constexpr (kIsFp8Kv<C>) {  // 4 elements a word
        a[i] = e4m3x2_to_f16x2(r.k[i & 1][el / 4] >> (8 * (el % 4)));
      } else {  // 2 elements a word
        a[i] = r.k[i & 1][el / 2];
      }
    }
    mma_16816<typename S::M>(s, a, qb[kk][0], qb[kk][1]);
  }
#pragma unroll
  for (int e = 0; e < 4; ++e) s[e] = !r.partial || ((r.ok >> (e >> 1)) & 1u) ? s[e] * score_scale : -INFINITY;

  float alpha[2], pr[4];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    float mx = fmaxf(s[h], s[h + 2]);
#pragma unroll
    for (int x = 4; x < 32; x <<= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, x));
    const float m_new = fmaxf(m[h], mx);
    const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // nothing visible yet: no inf - inf
    alpha[h] = exp2f(m[h] - m_use);
    m[h] = m_new;
    pr[h] = exp2f(s[h] - m_use);
    pr[h + 2] = exp2f(s[h + 2] - m_use);
    l[h] = fmaf(l[h], alpha[h], pr[h] + pr[h + 2]);
  }
  // P^T as B fragments: keys 2q, 2q+1 (b0) and 2q+8, 2q+9 (b1) of head g.
  const uint32_t b0 = transpose8x8(pack2<typename S::M>(pr[0], pr[1]));
  const uint32_t b1 = transpose8x8(pack2<typename S::M>(pr[2], pr[3]));
#pragma unroll
  for (int mt = 0; mt < S::KD; ++mt) {
    // Register i: element decode_v_elem(mt, i & 1) of the lane's V dims (row g + 8 (i & 1)) at
    // keys 2q + 8 (i >> 1) (low half) and + 1, i.e. of r.v[2 (i >> 1)] and r.v[2 (i >> 1) + 1].
    uint32_t a[4];
    const int el = ml::decode_v_elem(mt, 0);  // even; the odd row is el + 1, next to it
    if constexpr (kIsFp8Kv<C>) {  // bytes el % 4, + 1 of word el / 4 of two keys, interleaved
      const uint32_t sel = el % 4 == 2 ? 0x7362u : 0x5140u;
#pragma unroll
      for (int kp = 0; kp < 2; ++kp) {
        const uint32_t two = __byte_perm(r.v[2 * kp][el / 4], r.v[2 * kp + 1][el / 4], sel);
        a[2 * kp] = e4m3x2_to_f16x2(two);
        a[2 * kp + 1] = e4m3x2_to_f16x2(two >> 16);
      }
    } else {  // the low (el) and high (el + 1) halves of word el / 2 of two keys
#pragma unroll
      for (int kp = 0; kp < 2; ++kp) {
        a[2 * kp] = __byte_perm(r.v[2 * kp][el / 2], r.v[2 * kp + 1][el / 2], 0x5410u);
        a[2 * kp + 1] = __byte_perm(r.v[2 * kp][el / 2], r.v[2 * kp + 1][el / 2], 0x7632u);
      }
    }
    o[mt][0] *= alpha[0];
    o[mt][1] *= alpha[1];
    o[mt][2] *= alpha[0];
    o[mt][3] *= alpha[1];
    mma_16816<typename S::M>(o[mt], a, b0, b1);
  }
}

}  // namespace lamina::cuda
