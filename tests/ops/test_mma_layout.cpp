// Host check (no GPU) of the fragment bookkeeping of the mma.sync prefill attention kernel
// (src/backends/cuda/attention_prefill_mma.cu), of the tensor-core decode attention's register
// layout (attention_decode_mma.cu) and of the int4 tile GEMV: ldmatrix, movmatrix and mma.sync
// m16n8k16 are emulated from their PTX ISA definitions, written here independently of
// src/backends/cuda/mma_layout.h, and one warp's products are run with the kernel's loop structure
// and lane addresses, then compared with plain loops. Small integers keep every product exact.
#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <random>
#include <vector>

#include "backends/cuda/mma_layout.h"

namespace lamina::optest {
namespace {

namespace ml = lamina::cuda::mma_layout;
using Reg = std::array<float, 2>;   // one .b32 register: two 16-bit elements, [0] the low half
using Frag = std::array<Reg, 4>;    // ldmatrix.x4 result / A fragment
using Acc = std::array<float, 4>;   // m16n8 fp32 accumulator of one lane

// A row-major shared tile of `ld` elements a row.
struct Tile {
  int rows, ld;
  std::vector<float> v;
  float at(int r, int c) const { return v[size_t(r) * ld + c]; }
};

// ldmatrix.sync.m8n8.x4 (.trans): lane 8i + j gives the address of row j of matrix i.
std::array<Frag, 32> ldmatrix_x4(const Tile& t, int row0, int col0, ml::RowCol (*addr)(int), bool trans) {
  std::array<std::array<int, 2>, 32> start{};  // (row, col) each lane points at
  for (int l = 0; l < 32; ++l) {
    const ml::RowCol a = addr(l);
    start[l] = {row0 + a.row, col0 + a.col};
  }
  std::array<Frag, 32> out{};
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i)
      for (int h = 0; h < 2; ++h) {
        // element (r, c) of matrix i is t[start[8i + r].row][start[8i + r].col + c]
        const int r = trans ? 2 * (l % 4) + h : l / 4, c = trans ? l / 4 : 2 * (l % 4) + h;
        out[l][i][h] = t.at(start[8 * i + r][0], start[8 * i + r][1] + c);
      }
  return out;
}

// mma.sync.m16n8k16.row.col: d = a · b + c, fragments as the PTX ISA lays them out.
void mma(std::array<Acc, 32>& c, const std::array<Frag, 32>& a, const std::array<std::array<Reg, 2>, 32>& b) {
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, q = l % 4;
    for (int i = 0; i < 4; ++i)
      for (int h = 0; h < 2; ++h) A[g + 8 * (i % 2)][2 * q + 8 * (i / 2) + h] = a[l][i][h];
    for (int i = 0; i < 2; ++i)
      for (int h = 0; h < 2; ++h) B[2 * q + 8 * i + h][g] = b[l][i][h];
  }
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, q = l % 4;
    for (int e = 0; e < 4; ++e) {
      const int r = g + 8 * (e / 2), n = 2 * q + e % 2;
      float s = 0;
      for (int k = 0; k < 16; ++k) s += A[r][k] * B[k][n];
      c[l][e] += s;
    }
  }
}

std::array<std::array<Reg, 2>, 32> b_pair(const std::array<Frag, 32>& f, int first) {
  std::array<std::array<Reg, 2>, 32> b{};
  for (int l = 0; l < 32; ++l) b[l] = {f[l][first], f[l][first + 1]};
  return b;
}

Tile random_tile(std::mt19937_64& rng, int rows, int cols, int ld) {
  std::uniform_int_distribution<int> d(-3, 3);
  Tile t{rows, ld, std::vector<float>(size_t(rows) * ld, 1e9f)};  // padding must never be read
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) t.v[size_t(r) * ld + c] = float(d(rng));
  return t;
}

void check_warp(int D) {
  std::mt19937_64 rng(1234 + D);
  const int ld = D + 8, BK = 64, NT = BK / 8, KD = D / 16, warp = 2;
  const Tile Q = random_tile(rng, 64, D, ld), K = random_tile(rng, BK, D, ld), V = random_tile(rng, BK, D, ld);

  // Q fragments, as the kernel loads them.
  std::vector<std::array<Frag, 32>> qf(KD);
  for (int kk = 0; kk < KD; ++kk) qf[kk] = ldmatrix_x4(Q, 16 * warp, 16 * kk, ml::a_x4, false);

  // S = Q_w · K^T.
  std::vector<std::array<Acc, 32>> s(NT, std::array<Acc, 32>{});
  for (int kk = 0; kk < KD; ++kk)
    for (int np = 0; np < NT / 2; ++np) {
      const auto b = ldmatrix_x4(K, 16 * np, 16 * kk, ml::b_nk_x4, false);
      mma(s[2 * np], qf[kk], b_pair(b, 0));
      mma(s[2 * np + 1], qf[kk], b_pair(b, 2));
    }
  for (int l = 0; l < 32; ++l)
    for (int j = 0; j < NT; ++j)
      for (int e = 0; e < 4; ++e) {
        const ml::RowCol rc = ml::c_elem(l, e);
        float want = 0;
        for (int d = 0; d < D; ++d) want += Q.at(16 * warp + rc.row, d) * K.at(8 * j + rc.col, d);
        ASSERT_EQ(s[j][l][e], want) << "S lane " << l << " tile " << j << " e " << e << " D " << D;
      }

  // O = P · V with P taken from the S accumulators (P = S here, to keep integers).
  std::vector<std::array<Acc, 32>> o(2 * KD, std::array<Acc, 32>{});
  for (int kk = 0; kk < BK / 16; ++kk) {
    std::array<Frag, 32> pa{};
    for (int l = 0; l < 32; ++l) {
      pa[l][0] = {s[2 * kk][l][0], s[2 * kk][l][1]};
      pa[l][1] = {s[2 * kk][l][2], s[2 * kk][l][3]};
      pa[l][2] = {s[2 * kk + 1][l][0], s[2 * kk + 1][l][1]};
      pa[l][3] = {s[2 * kk + 1][l][2], s[2 * kk + 1][l][3]};
    }
    for (int dp = 0; dp < KD; ++dp) {
      const auto b = ldmatrix_x4(V, 16 * kk, 16 * dp, ml::b_kn_trans_x4, true);
      mma(o[2 * dp], pa, b_pair(b, 0));
      mma(o[2 * dp + 1], pa, b_pair(b, 2));
    }
  }
  for (int l = 0; l < 32; ++l)
    for (int dt = 0; dt < 2 * KD; ++dt)
      for (int e = 0; e < 4; ++e) {
        const ml::RowCol rc = ml::c_elem(l, e);
        double want = 0;
        for (int key = 0; key < BK; ++key) {
          double sv = 0;
          for (int d = 0; d < D; ++d) sv += Q.at(16 * warp + rc.row, d) * K.at(key, d);
          want += sv * V.at(key, 8 * dt + rc.col);
        }
        ASSERT_EQ(o[dt][l][e], want) << "O lane " << l << " tile " << dt << " e " << e << " D " << D;
      }
}

// The int4 tile layout (ml::int4_tile_elem): every element of a 16 x 64 tile sits in exactly one
// nibble, and a warp that decodes its words as the int4 GEMV does (register r of A = nibbles r and
// r + 4 of the word, each u - 8) and feeds x as B as it does (token g in column g; lane t's 16
// consecutive x values, 4 a word) computes w · x^T through the PTX-defined mma.
TEST(MmaLayout, Int4TileWordsAreTheGemvFragments) {
  constexpr int R = ml::kInt4TileRows, C = ml::kInt4TileCols, kTokens = 8;
  std::mt19937_64 rng(77);
  std::uniform_int_distribution<int> nib(0, 15), small(-4, 4);
  int u[R][C], x[kTokens][C];
  for (auto& row : u)
    for (int& v : row) v = nib(rng);
  for (auto& row : x)
    for (int& v : row) v = small(rng);

  // Pack as the upload does, checking the map is a bijection onto the tile.
  int seen[R][C] = {};
  uint32_t words[32][4] = {};
  for (int l = 0; l < 32; ++l)
    for (int j = 0; j < 4; ++j)
      for (int i = 0; i < 8; ++i) {
        const ml::RowCol e = ml::int4_tile_elem(l, j, i);
        ASSERT_TRUE(e.row >= 0 && e.row < R && e.col >= 0 && e.col < C) << l << " " << j << " " << i;
        ++seen[e.row][e.col];
        words[l][j] |= uint32_t(u[e.row][e.col]) << (4 * i);
      }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) ASSERT_EQ(seen[r][c], 1) << "element (" << r << ", " << c << ")";
  EXPECT_EQ(R * C / 2, ml::kInt4TileBytes);

  // One warp over the tile's four k slices, as gemv_int4_tiles.cu does.
  std::array<Acc, 32> acc{};
  for (int j = 0; j < 4; ++j) {
    std::array<Frag, 32> a{};
    std::array<std::array<Reg, 2>, 32> b{};
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, t = l % 4;
      for (int r = 0; r < 4; ++r)
        a[l][r] = {float(int((words[l][j] >> (4 * r)) & 0xf) - 8), float(int((words[l][j] >> (4 * r + 16)) & 0xf) - 8)};
      const int k0 = 16 * t + 4 * j;
      b[l][0] = {float(x[g][k0]), float(x[g][k0 + 1])};
      b[l][1] = {float(x[g][k0 + 2]), float(x[g][k0 + 3])};
    }
    mma(acc, a, b);
  }
  for (int l = 0; l < 32; ++l)
    for (int e = 0; e < 4; ++e) {
      const ml::RowCol rc = ml::c_elem(l, e);  // row: weight row, col: token
      float want = 0;
      for (int k = 0; k < C; ++k) want += float(u[rc.row][k] - 8) * float(x[rc.col][k]);
      ASSERT_EQ(acc[l][e], want) << "lane " << l << " e " << e;
    }
}

// movmatrix.sync.m8n8.trans.b16: lane l holds row l / 4, columns 2 (l % 4), + 1 of an 8x8 matrix
// before and of its transpose after.
std::array<Reg, 32> movmatrix_trans(const std::array<Reg, 32>& x) {
  float m[8][8];
  for (int l = 0; l < 32; ++l)
    for (int h = 0; h < 2; ++h) m[l / 4][2 * (l % 4) + h] = x[l][h];
  std::array<Reg, 32> y{};
  for (int l = 0; l < 32; ++l)
    for (int h = 0; h < 2; ++h) y[l][h] = m[2 * (l % 4) + h][l / 4];
  return y;
}

// One warp of the tensor-core decode attention (attention_decode_mma.cu) over a 16-key group, with
// its operands laid out by mma_layout.h's decode_* maps: S^T = K · Q^T for 8 q heads, then
// O^T = V^T · P^T with P^T taken from the S^T accumulators by movmatrix (P = S^T here, integers).
// Each lane also loads only its own contiguous dims, checked against the maps' ranges.
void check_decode_group(int D) {
  std::mt19937_64 rng(99 + D);
  std::uniform_int_distribution<int> d(-3, 3);
  std::vector<std::vector<float>> K(16, std::vector<float>(D)), V(16, std::vector<float>(D)),
      Q(8, std::vector<float>(D));
  for (auto* m : {&K, &V, &Q})
    for (auto& row : *m)
      for (float& x : row) x = float(d(rng));
  const int KD = D / 16;

  std::array<Acc, 32> st{};
  for (int kk = 0; kk < KD; ++kk) {
    std::array<Frag, 32> a{};
    std::array<std::array<Reg, 2>, 32> b{};
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, q = l % 4, first = ml::decode_k_first(D, q);
      for (int i = 0; i < 4; ++i) {
        const int el = ml::decode_k_elem(kk, i >> 1);
        ASSERT_TRUE(el >= 0 && el + 1 < D / 4) << "K element " << el << " outside the lane's dims";
        a[l][i] = {K[g + 8 * (i & 1)][first + el], K[g + 8 * (i & 1)][first + el + 1]};
      }
      for (int j = 0; j < 2; ++j) {
        const int el = ml::decode_k_elem(kk, j);
        b[l][j] = {Q[g][first + el], Q[g][first + el + 1]};
      }
    }
    mma(st, a, b);
  }
  for (int l = 0; l < 32; ++l)
    for (int e = 0; e < 4; ++e) {
      const int key = l / 4 + 8 * (e >> 1), head = 2 * (l % 4) + (e & 1);
      float want = 0;
      for (int i = 0; i < D; ++i) want += K[key][i] * Q[head][i];
      ASSERT_EQ(st[l][e], want) << "S^T lane " << l << " e " << e << " D " << D;
    }

  // P^T as B: keys 2q, 2q + 1 (b0) and 2q + 8, 2q + 9 (b1) of head g.
  std::array<Reg, 32> lo{}, hi{};
  for (int l = 0; l < 32; ++l) {
    lo[l] = {st[l][0], st[l][1]};
    hi[l] = {st[l][2], st[l][3]};
  }
  const std::array<Reg, 32> b0 = movmatrix_trans(lo), b1 = movmatrix_trans(hi);
  std::array<std::array<Reg, 2>, 32> pb{};
  for (int l = 0; l < 32; ++l) pb[l] = {b0[l], b1[l]};
  for (int mt = 0; mt < KD; ++mt) {
    std::array<Frag, 32> a{};
    for (int l = 0; l < 32; ++l) {
      const int g = l / 4, q = l % 4, first = ml::decode_v_first(D, g);
      for (int i = 0; i < 4; ++i) {
        const int el = ml::decode_v_elem(mt, i & 1), key = 2 * q + 8 * (i >> 1);
        ASSERT_TRUE(el >= 0 && el < D / 8) << "V element " << el << " outside the lane's dims";
        a[l][i] = {V[key][first + el], V[key + 1][first + el]};
      }
    }
    std::array<Acc, 32> ot{};
    mma(ot, a, pb);
    for (int l = 0; l < 32; ++l)
      for (int e = 0; e < 4; ++e) {
        const int dim = ml::decode_v_first(D, l / 4) + ml::decode_v_elem(mt, e >> 1), head = 2 * (l % 4) + (e & 1);
        float want = 0;
        for (int key = 0; key < 16; ++key) {
          float p = 0;
          for (int i = 0; i < D; ++i) p += K[key][i] * Q[head][i];
          want += V[key][dim] * p;
        }
        ASSERT_EQ(ot[l][e], want) << "O^T m-tile " << mt << " lane " << l << " e " << e << " D " << D;
      }
  }
  // Every output dim comes out of exactly one (lane row, m-tile, half).
  std::vector<int> seen(size_t(D), 0);
  for (int g = 0; g < 8; ++g)
    for (int mt = 0; mt < KD; ++mt)
      for (int u = 0; u < 2; ++u) ++seen[size_t(ml::decode_v_first(D, g) + ml::decode_v_elem(mt, u))];
  for (int i = 0; i < D; ++i) ASSERT_EQ(seen[size_t(i)], 1) << "output dim " << i << " D " << D;
}

TEST(MmaLayout, DecodeGroupMatchesPlainLoopsD64) { check_decode_group(64); }
TEST(MmaLayout, DecodeGroupMatchesPlainLoopsD128) { check_decode_group(128); }

TEST(MmaLayout, WarpTileMatchesPlainLoopsD64) { check_warp(64); }
TEST(MmaLayout, WarpTileMatchesPlainLoopsD128) { check_warp(128); }

}  // namespace
}  // namespace lamina::optest
