// Lane <-> element maps of the warp-level tensor-core instructions the prefill attention kernel
// uses (PTX ISA: mma.sync.m16n8k16 with 16-bit inputs, ldmatrix.m8n8.x4), kept apart from the
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

}  // namespace lamina::cuda::mma_layout
