// The CPU reference backend's paged KV cache against a naive dense reference (no GPU needed):
// rope_kv_write and attention through shuffled block tables (tokens_per_block 16 and 32, GQA,
// head_dim 64 and 128, several sequences, decode tokens and prefill chunks after existing cache
// rows), shuffled vs contiguous tables, and bad tables caught as errors before any write.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <string>

#include "common/error.h"
#include "paged_kv_util.h"

namespace lamina::optest {
namespace {

struct Dims {
  int Hq, Hkv, D;
};
const Dims kDims[] = {{8, 2, 64}, {4, 4, 128}, {12, 4, 128}};
const int kTokensPerBlock[] = {16, 32};
constexpr int kMaxSeq = 150, kSeqs = 3;

std::vector<float> random_floats(std::mt19937_64& rng, size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    num += (double(got[i]) - want[i]) * (double(got[i]) - want[i]);
    den += double(want[i]) * want[i];
  }
  return std::sqrt(num / std::max(den, 1e-30));
}

// Tokens of one step: a prefill chunk of `chunk` consecutive positions of sequence 0 starting at
// `start` (after existing cache rows when start > 0), then `decodes` tokens at random (seq, pos).
struct Tokens {
  std::vector<int32_t> pos, seq;
};
Tokens make_tokens(std::mt19937_64& rng, int start, int chunk, int decodes) {
  Tokens tk;
  for (int t = 0; t < chunk; ++t) tk.pos.push_back(start + t), tk.seq.push_back(0);
  std::uniform_int_distribution<int> s(1, kSeqs - 1), p(0, kMaxSeq - 1);
  for (int i = 0; i < decodes; ++i) tk.pos.push_back(p(rng)), tk.seq.push_back(s(rng));
  return tk;
}

// Naive attention over a dense cache dense[seq][pos][Hkv][D]: out[T, Hq, D].
std::vector<float> naive_attention(const std::vector<float>& qkv, const std::vector<float>& dk,
                                   const std::vector<float>& dv, const Tokens& tk, const Dims& d) {
  const int T = int(tk.pos.size()), G = d.Hq / d.Hkv;
  const size_t row = size_t(d.Hq + 2 * d.Hkv) * d.D, kv_row = size_t(d.Hkv) * d.D;
  std::vector<float> out(size_t(T) * d.Hq * d.D, 0.0f);
  for (int t = 0; t < T; ++t)
    for (int h = 0; h < d.Hq; ++h) {
      const float* q = qkv.data() + size_t(t) * row + size_t(h) * d.D;
      const int len = tk.pos[t] + 1;
      std::vector<double> w(static_cast<size_t>(len));
      double mx = -INFINITY, sum = 0;
      for (int j = 0; j < len; ++j) {
        const float* k = dk.data() + (size_t(tk.seq[t]) * kMaxSeq + j) * kv_row + size_t(h / G) * d.D;
        double dot = 0;
        for (int i = 0; i < d.D; ++i) dot += double(q[i]) * k[i];
        w[size_t(j)] = dot / std::sqrt(double(d.D));
        mx = std::max(mx, w[size_t(j)]);
      }
      for (auto& x : w) sum += (x = std::exp(x - mx));
      for (int j = 0; j < len; ++j) {
        const float* v = dv.data() + (size_t(tk.seq[t]) * kMaxSeq + j) * kv_row + size_t(h / G) * d.D;
        for (int i = 0; i < d.D; ++i) out[(size_t(t) * d.Hq + h) * d.D + i] += float(w[size_t(j)] / sum * v[i]);
      }
    }
  return out;
}

class CpuPagedKV : public ::testing::Test {
 protected:
  void SetUp() override {
    const uint64_t seed = std::random_device{}();
    rng_.seed(seed);
    SCOPED_TRACE("seed " + std::to_string(seed));
    be_ = make_cpu_backend();
  }
  // Host "device" buffers: the CPU backend reads host pointers directly.
  std::unique_ptr<Backend> be_;
  std::mt19937_64 rng_;
};

TEST_F(CpuPagedKV, RopeKvWriteMatchesNaive) {
  for (const Dims& d : kDims)
    for (int tpb : kTokensPerBlock) {
      const PagedKV pk = make_paged_kv(rng_, d.Hq, d.Hkv, d.D, kMaxSeq, kSeqs, tpb, /*shuffled=*/true);
      const Tokens tk = make_tokens(rng_, 37, 40, 3);  // no decode token lands on the chunk's rows (seq 0)
      const int T = int(tk.pos.size());
      const size_t row = size_t(d.Hq + 2 * d.Hkv) * d.D, kv_row = size_t(d.Hkv) * d.D;
      std::vector<float> qkv = random_floats(rng_, size_t(T) * row, -2, 2);
      std::vector<float> k = random_floats(rng_, pk.pool_elems()), v = random_floats(rng_, pk.pool_elems());
      const std::vector<float> inv_freq = llama3_inv_freq(d.D);
      // Naive: rotate q and k heads.
      std::vector<float> want_qkv = qkv, k0 = k, v0 = v;
      for (int t = 0; t < T; ++t) {
        float* tok = want_qkv.data() + size_t(t) * row;
        for (int h = 0; h < d.Hq + d.Hkv; ++h)
          for (int i = 0; i < d.D / 2; ++i) {
            const double a = double(tk.pos[t]) * inv_freq[size_t(i)];
            const float x0 = tok[h * d.D + i], x1 = tok[h * d.D + i + d.D / 2];
            tok[h * d.D + i] = float(x0 * std::cos(a) - x1 * std::sin(a));
            tok[h * d.D + i + d.D / 2] = float(x1 * std::cos(a) + x0 * std::sin(a));
          }
      }
      be_->rope_kv_write(qkv.data(), tk.pos.data(), tk.seq.data(), inv_freq.data(),
                         KVCacheLayer{k.data(), v.data(), pk.tables.data()}, pk.shape, T);
      // The rotated k and the v of token t sit at the pool row of (seq, pos); no other row changed.
      std::vector<float> want_k = k0, want_v = v0;
      for (int t = 0; t < T; ++t) {
        const float* tok = qkv.data() + size_t(t) * row;
        const size_t at = pk.row(tk.seq[t], tk.pos[t]) * kv_row;
        std::copy_n(tok + size_t(d.Hq) * d.D, kv_row, want_k.begin() + at);
        std::copy_n(tok + size_t(d.Hq + d.Hkv) * d.D, kv_row, want_v.begin() + at);
      }
      const std::string what = "D=" + std::to_string(d.D) + " tpb=" + std::to_string(tpb);
      EXPECT_LT(rel_l2(qkv, want_qkv), 1e-6) << what;
      EXPECT_EQ(k, want_k) << what;  // exactly the rows of the table, nothing else
      EXPECT_EQ(v, want_v) << what;
    }
}

TEST_F(CpuPagedKV, AttentionMatchesNaive) {
  for (const Dims& d : kDims)
    for (int tpb : kTokensPerBlock) {
      const PagedKV pk = make_paged_kv(rng_, d.Hq, d.Hkv, d.D, kMaxSeq, kSeqs, tpb, /*shuffled=*/true);
      const size_t kv_row = size_t(d.Hkv) * d.D;
      const auto dk = random_floats(rng_, size_t(kSeqs) * kMaxSeq * kv_row);
      const auto dv = random_floats(rng_, size_t(kSeqs) * kMaxSeq * kv_row);
      std::vector<float> k = random_floats(rng_, pk.pool_elems()), v = random_floats(rng_, pk.pool_elems());
      for (int s = 0; s < kSeqs; ++s)
        for (int j = 0; j < kMaxSeq; ++j) {
          std::copy_n(dk.begin() + (size_t(s) * kMaxSeq + j) * kv_row, kv_row, k.begin() + pk.row(s, j) * kv_row);
          std::copy_n(dv.begin() + (size_t(s) * kMaxSeq + j) * kv_row, kv_row, v.begin() + pk.row(s, j) * kv_row);
        }
      // decode only; a first prefill chunk; a chunk after existing rows; mixed.
      for (auto [start, chunk, decodes] : {std::tuple{0, 0, 5}, {0, 33, 0}, {45, 70, 0}, {100, 20, 4}}) {
        const Tokens tk = make_tokens(rng_, start, chunk, decodes);
        const int T = int(tk.pos.size());
        const auto qkv = random_floats(rng_, size_t(T) * (d.Hq + 2 * d.Hkv) * d.D, -3, 3);
        std::vector<float> out(size_t(T) * d.Hq * d.D, NAN);
        be_->attention(out.data(), qkv.data(), tk.pos.data(), tk.seq.data(),
                       KVCacheLayer{k.data(), v.data(), pk.tables.data()}, pk.shape, T);
        EXPECT_LT(rel_l2(out, naive_attention(qkv, dk, dv, tk, d)), 1e-5)
            << "D=" << d.D << " Hq=" << d.Hq << " tpb=" << tpb << " start=" << start << " chunk=" << chunk;
      }
    }
}

TEST_F(CpuPagedKV, ShuffledTablesGiveTheSameOutputAsContiguous) {
  const Dims d{8, 2, 64};
  for (int tpb : kTokensPerBlock) {
    const PagedKV flat = make_paged_kv(rng_, d.Hq, d.Hkv, d.D, kMaxSeq, kSeqs, tpb, /*shuffled=*/false);
    const PagedKV shuf = make_paged_kv(rng_, d.Hq, d.Hkv, d.D, kMaxSeq, kSeqs, tpb, /*shuffled=*/true);
    const Tokens tk = make_tokens(rng_, 20, 60, 4);
    const int T = int(tk.pos.size());
    const size_t row = size_t(d.Hq + 2 * d.Hkv) * d.D;
    const auto qkv0 = random_floats(rng_, size_t(T) * row, -3, 3);
    // Write this step's k, v, then attend: both layouts start from the same dense history.
    const size_t kv_row = size_t(d.Hkv) * d.D;
    const auto dk = random_floats(rng_, size_t(kSeqs) * kMaxSeq * kv_row);
    std::vector<float> inv_freq(size_t(d.D / 2), 0.01f);
    auto run = [&](const PagedKV& p) {
      std::vector<float> k(p.pool_elems(), 7.0f), v(p.pool_elems(), -7.0f), qkv = qkv0;
      for (int s = 0; s < kSeqs; ++s)
        for (int j = 0; j < kMaxSeq; ++j) {
          std::copy_n(dk.begin() + (size_t(s) * kMaxSeq + j) * kv_row, kv_row, k.begin() + p.row(s, j) * kv_row);
          std::copy_n(dk.rbegin() + (size_t(s) * kMaxSeq + j) * kv_row, kv_row, v.begin() + p.row(s, j) * kv_row);
        }
      const KVCacheLayer layer{k.data(), v.data(), p.tables.data()};
      be_->rope_kv_write(qkv.data(), tk.pos.data(), tk.seq.data(), inv_freq.data(), layer, p.shape, T);
      std::vector<float> out(size_t(T) * d.Hq * d.D);
      be_->attention(out.data(), qkv.data(), tk.pos.data(), tk.seq.data(), layer, p.shape, T);
      return out;
    };
    EXPECT_EQ(run(shuf), run(flat)) << "tpb=" << tpb;
  }
}

TEST_F(CpuPagedKV, BadBlockTablesAreErrorsNotWrites) {
  const Dims d{4, 2, 64};
  PagedKV pk = make_paged_kv(rng_, d.Hq, d.Hkv, d.D, 64, 2, 16, /*shuffled=*/true);
  std::vector<float> k(pk.pool_elems(), 1.0f), v(pk.pool_elems(), 2.0f);
  std::vector<float> qkv(size_t(d.Hq + 2 * d.Hkv) * d.D, 0.5f), out(size_t(d.Hq) * d.D);
  std::vector<float> inv_freq(size_t(d.D / 2), 0.1f);
  auto rope = [&](int seq, int pos) {
    be_->rope_kv_write(qkv.data(), &pos, &seq, inv_freq.data(), KVCacheLayer{k.data(), v.data(), pk.tables.data()},
                       pk.shape, 1);
  };
  auto attend = [&](int seq, int pos) {
    be_->attention(out.data(), qkv.data(), &pos, &seq, KVCacheLayer{k.data(), v.data(), pk.tables.data()}, pk.shape,
                   1);
  };
  EXPECT_THROW(rope(2, 0), Error);   // sequence row past the tables
  EXPECT_THROW(rope(0, 64), Error);  // position past max_blocks_per_seq * tokens_per_block
  pk.tables[1] = pk.shape.num_blocks;  // sequence 0, positions 16..31: a block id outside the pool
  EXPECT_THROW(rope(0, 20), Error);
  EXPECT_THROW(attend(0, 40), Error);  // reads positions 16..31 too
  EXPECT_NO_THROW(rope(0, 3));         // its own block is fine
  pk.tables[1] = -1;                   // a missing entry
  try {
    attend(0, 17);
    ADD_FAILURE() << "a missing block table entry was not reported";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not a block of the pool"), std::string::npos) << e.what();
  }
  for (float x : v) EXPECT_TRUE(x == 2.0f || x == 0.5f);  // nothing but the one good write landed
}

// describe_prompt_tiles (ops/backend.h): tiles of 64 tokens whose sequence rows are all one are
// prompt tiles; the last may be short. prompt_tiles_end is one past the last of them,
// leading_prompt_tiles counts those before the first that is not.
TEST(PromptTiles, DescribeFindsTheTilesOfOneSequence) {
  const auto described = [](const std::vector<int32_t>& rows) {
    AttentionShape s;
    describe_prompt_tiles(s, rows.data(), int(rows.size()));
    return std::pair<int, int>{s.prompt_tiles_end, s.leading_prompt_tiles};
  };
  const auto run = [](std::vector<int32_t> rows, int32_t row, int n) {
    rows.insert(rows.end(), size_t(n), row);
    return rows;
  };
  // Two whole tiles of row 0, a tile of row 1, then a mixed tile (row 2's 40 tokens and decode tokens).
  std::vector<int32_t> step = run(run(run({}, 0, 128), 1, 64), 2, 40);
  for (int32_t r = 3; r < 27; ++r) step.push_back(r);
  EXPECT_EQ(described(step), (std::pair<int, int>{3, 3}));
  // A prompt tile after a mixed one; the short last tile of one row counts.
  std::vector<int32_t> late = {5, 6};
  late = run(run(late, 7, 62 + 64), 8, 10);
  EXPECT_EQ(described(late), (std::pair<int, int>{3, 0}));
  // Decode tokens only (64 different rows): none; one token: a (short) prompt tile.
  std::vector<int32_t> decode(64);
  for (int i = 0; i < 64; ++i) decode[size_t(i)] = i;
  EXPECT_EQ(described(decode), (std::pair<int, int>{0, 0}));
  EXPECT_EQ(described({9}), (std::pair<int, int>{1, 1}));
}

}  // namespace
}  // namespace lamina::optest
