// Lane <-> element maps of the warp-level tensor-core instructions the attention kernels and the
// int4 GEMV use (PTX ISA: mma.sync.m16n8k16 with 16-bit inputs, ldmatrix.m8n8.x4), kept apart from the
// kernel so a host test (tests/ops/test_mma_layout.cpp) can check them without a GPU.
//
// mma.sync.m16n8k16 (g = lane / 4, q = lane % 4; each register holds two 16-bit elements, the
// lower column / k index in the low half):
//   A 16x16 row-major, 4 regs: a0 (g, 2q..2q+1)  a1 (g+8, 2q..)  a2 (g, 2q+8..)  a3 (g+8, 2q+8..)
//   B 16x8  (k, n),   2 regs: b0 (k 2q..2q+1, n g)  b1 (k 2q+8.., n g)
//   C 16x8  fp32,     4 regs: c0, c1 (g, 2q..2q+1)  c2, c3 (g+8, 2q..2q+1)
// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i; register i of a lane then
// holds matrix i's row lane/4, columns 2(lane%4)..+1 (with .trans: rows 2(lane%4)..+1, column lane/4).
#pragma once

#if defined(__CUDACC__)
#define LAMINA_HD __host__ __device__ __forceinline__
#else
#define LAMINA_HD inline
#endif

namespace lamina::cuda::mma_layout {

struct RowCol {
  int row, col;
};

// A operand 16x16 at (0, 0) of a row-major tile: the row and column whose address this lane
// gives to ldmatrix.x4, so that registers 0..3 are a0..a3.
LAMINA_HD RowCol a_x4(int lane) { return {(lane & 7) + ((lane >> 3) & 1) * 8, (lane >> 4) * 8}; }

// B operands of two n-tiles from a tile stored [n][k] (K rows: n = key, k = head dim), without
// .trans: registers 0, 1 are b0, b1 of n-tile 0 (n 0..7) and 2, 3 those of n-tile 1 (n 8..15).
LAMINA_HD RowCol b_nk_x4(int lane) { return {(lane & 7) + (lane >> 4) * 8, ((lane >> 3) & 1) * 8}; }

// B operands of two n-tiles from a tile stored [k][n] (V rows: k = key, n = head dim), with
// .trans: registers 0, 1 are b0, b1 of n-tile 0 (n 0..7) and 2, 3 those of n-tile 1 (n 8..15).
LAMINA_HD RowCol b_kn_trans_x4(int lane) { return {(lane & 7) + ((lane >> 3) & 1) * 8, (lane >> 4) * 8}; }

// Row and column of accumulator element e (0..3) of this lane in a 16x8 C tile.
LAMINA_HD RowCol c_elem(int lane, int e) { return {(lane >> 2) + (e >> 1) * 8, (lane & 3) * 2 + (e & 1)}; }

// int4 weights laid out as A fragments ("int4 tiles", the int4 GEMV's layout): a [N, K] weight with
// N % 16 == 0 and K % 64 == 0 is cut into 16 x 64 tiles, stored tile row by tile row
// (tile (rt, kc) at byte ((rt * K/64) + kc) * 512). In a tile, lane l (g = l / 4, t = l % 4) owns
// 16 bytes at 16 * l: rows g and g + 8, columns 16t..16t+15, so that its x for the whole tile is
// 16 consecutive values (two 16-byte loads). Word j (0..3) feeds one mma over columns 16t + 4j ..
// 16t + 4j + 3 of each quad lane t: the mma's k order is permuted, the same way in A and B, which
// leaves the product unchanged. Nibble i (bits 4i..4i+3) of a word is half i / 4 of A register
// i % 4, so that (w >> 4r) & 0x000f000f puts register r's two elements in the low bits of each
// 16-bit half; register r holds row g + 8 (r & 1), columns 16t + 4j + 2 (r >> 1) + {0, 1}, and
// B register 0 / 1 holds x at columns 16t + 4j + {0, 1} / {2, 3}. Row and column of nibble i of
// word j of lane l in the tile:
LAMINA_HD RowCol int4_tile_elem(int lane, int word, int nibble) {
  const int r = nibble & 3, h = nibble >> 2;
  return {(lane >> 2) + (r & 1) * 8, (lane & 3) * 16 + word * 4 + (r >> 1) * 2 + h};
}
inline constexpr int kInt4TileRows = 16, kInt4TileCols = 64, kInt4TileBytes = 512;

// The tensor-core decode attention (attention_decode_mma.cu) holds K, V and q in registers in its
// own order of head dims: a dot product does not care which dims meet in which mma k slot as long
// as both operands agree, and so each lane's share of a row is contiguous. Head dim D, lane l
// (g = l / 4, q = l % 4):
//   S^T = K · Q^T (rows: 16 keys, columns: 8 q heads). The lane holds K rows g and g + 8, and q
//   head g, at dims decode_k_first(D, q) + 0 .. D/4 - 1. At k-step kk, A register i (row
//   g + 8 (i & 1)) and B register j = i >> 1 hold elements decode_k_elem(kk, i >> 1) and + 1 of those.
//   O^T = V^T · P^T (rows: head dims, columns: q heads). The lane holds V rows (keys) 2q, 2q + 1,
//   2q + 8, 2q + 9 at dims decode_v_first(D, g) + 0 .. D/8 - 1. M-tile mt's A register i is
//   element decode_v_elem(mt, i & 1) of those (row g + 8 (i & 1)) at keys 2q + 8 (i >> 1) + {0, 1};
//   accumulator element e is element decode_v_elem(mt, e >> 1), q head 2q + (e & 1).
LAMINA_HD int decode_k_first(int D, int q) { return D / 4 * q; }
LAMINA_HD int decode_k_elem(int kk, int half) { return 4 * kk + 2 * half; }
LAMINA_HD int decode_v_first(int D, int g) { return D / 8 * g; }
LAMINA_HD int decode_v_elem(int mt, int upper) { return 2 * mt + upper; }

}  // namespace lamina::cuda::mma_layout
