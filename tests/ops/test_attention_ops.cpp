// rope_kv_write and attention on the CUDA backend vs the CPU reference: GQA groups 1, 3, 4, 8, 16,
// head_dim 16/32/64/128/256 (so every decode kernel: latency, pipelined and tensor-core), several sequences, prefill (one sequence, consecutive positions from
// a random start, i.e. a chunk after existing cache rows), decode (tokens of random sequences at
// random positions) and mixed steps; for the prefill kernel, whole prompts up to 2100 tokens,
// chunks after a cached prefix and several sequences in one step. The KV cache is paged: the
// cases run with 16 and 32 tokens per block and block tables drawn from a shuffled pool
// (paged_kv_util.h).
#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <set>

#include "backends/cuda/kernels.h"
#include "op_test_util.h"
#include "paged_kv_util.h"

namespace lamina::optest {
namespace {

struct Case {
  int Hq, Hkv, D, max_seq, slots;
  int tpb = 32;  // tokens per KV block
  std::string str() const {
    return "Hq=" + std::to_string(Hq) + " Hkv=" + std::to_string(Hkv) + " D=" + std::to_string(D) +
           " max_seq=" + std::to_string(max_seq) + " tokens_per_block=" + std::to_string(tpb);
  }
};
const int kTokensPerBlock[] = {16, 32};

// Shuffled block tables for the case (see paged_kv_util.h).
PagedKV paged(std::mt19937_64& rng, const Case& c) {
  return make_paged_kv(rng, c.Hq, c.Hkv, c.D, c.max_seq, c.slots, c.tpb, /*shuffled=*/true);
}

// The case's cache on a backend: k, v pools and the block tables.
struct DeviceKV {
  DeviceBuffer k, v, tables;
  KVCacheLayer layer() const { return KVCacheLayer{k.get(), v.get(), tables.as<int32_t>()}; }
};
DeviceKV upload_kv(Backend& b, const PagedKV& p, const std::vector<float>& k0, const std::vector<float>& v0) {
  return DeviceKV{upload_act(b, k0), upload_act(b, v0), upload_i32(b, p.tables)};
}

const Case kCases[] = {
    {8, 2, 64, 300, 3},    // G=4
    {4, 4, 128, 300, 3},   // G=1
    {12, 4, 128, 300, 2},  // G=3
    {16, 2, 64, 300, 2},   // G=8
    {32, 2, 64, 300, 2},   // G=16: two head chunks per kv head in the decode kernel
    {4, 1, 256, 300, 2},   // D=256: decode kernel only
    {8, 2, 16, 300, 2},    // D=16 (small test models): decode kernel only, 32-thread reduce
    {4, 1, 32, 300, 2},    // D=32 (the bundled model): decode kernel only
};
const int kTokens[] = {1, 3, 17, 130};

enum class Layout { Prefill, Decode, Mixed };
const char* layout_name(Layout l) { return l == Layout::Prefill ? "prefill" : l == Layout::Decode ? "decode" : "mixed"; }

struct Tokens {
  std::vector<int32_t> pos, slot;
};

// Prefill: one slot, positions start..start+T-1. Decode: random (slot, position) pairs.
// Mixed: the first half prefill, the rest decode. With unique_rows no two tokens share a cache row.
Tokens make_tokens(std::mt19937_64& rng, Layout layout, int T, const Case& c, bool unique_rows) {
  Tokens tk;
  std::set<std::pair<int, int>> used;
  const int n_prefill = layout == Layout::Prefill ? T : layout == Layout::Mixed ? (T + 1) / 2 : 0;
  if (n_prefill > 0) {
    const int slot = std::uniform_int_distribution<int>(0, c.slots - 1)(rng);
    const int start = std::uniform_int_distribution<int>(0, c.max_seq - n_prefill)(rng);
    for (int t = 0; t < n_prefill; ++t) {
      tk.slot.push_back(slot);
      tk.pos.push_back(start + t);
      used.insert({slot, start + t});
    }
  }
  std::uniform_int_distribution<int> pick_slot(0, c.slots - 1), pick_pos(0, c.max_seq - 1);
  while (static_cast<int>(tk.pos.size()) < T) {
    const int s = pick_slot(rng), p = pick_pos(rng);
    if (unique_rows && !used.insert({s, p}).second) continue;
    tk.slot.push_back(s);
    tk.pos.push_back(p);
  }
  return tk;
}

class AttentionOps : public OpTest {};

TEST_P(AttentionOps, RopeKvWrite) {
  for (Case c : kCases) for (int tpb : kTokensPerBlock) {
    c.tpb = tpb;
    const PagedKV pk = paged(rng_, c);
    const size_t row = size_t(c.Hq + 2 * c.Hkv) * c.D;
    const size_t cache_n = pk.pool_elems();
    const auto inv_freq = llama3_inv_freq(c.D);
    auto f_g = upload_f32(*gpu_, inv_freq), f_c = upload_f32(*cpu_, inv_freq);
    for (Layout layout : {Layout::Prefill, Layout::Decode}) {
      for (int T : kTokens) {
        const Tokens tk = make_tokens(rng_, layout, T, c, /*unique_rows=*/true);
        const auto qkv = rnd(size_t(T) * row, -2.0f, 2.0f);
        const auto k0 = rnd(cache_n), v0 = rnd(cache_n);
        auto qkv_g = upload_act(*gpu_, qkv), qkv_c = upload_act(*cpu_, qkv);
        DeviceKV kv_g = upload_kv(*gpu_, pk, k0, v0), kv_c = upload_kv(*cpu_, pk, k0, v0);
        DeviceBuffer &k_g = kv_g.k, &v_g = kv_g.v, &k_c = kv_c.k, &v_c = kv_c.v;
        auto pos_g = upload_i32(*gpu_, tk.pos), pos_c = upload_i32(*cpu_, tk.pos);
        auto slot_g = upload_i32(*gpu_, tk.slot), slot_c = upload_i32(*cpu_, tk.slot);
        gpu_->rope_kv_write(qkv_g.get(), pos_g.as<int32_t>(), slot_g.as<int32_t>(), f_g.as<float>(), kv_g.layer(),
                            pk.shape, T);
        cpu_->rope_kv_write(qkv_c.get(), pos_c.as<int32_t>(), slot_c.as<int32_t>(), f_c.as<float>(), kv_c.layer(),
                            pk.shape, T);
        const std::string what = std::string(" ") + layout_name(layout) + " T=" + std::to_string(T) + " " + c.str();
        expect_close(read_act(*gpu_, qkv_g, qkv.size()), read_act(*cpu_, qkv_c, qkv.size()), tol(), "rope qkv" + what);
        expect_close(read_act(*gpu_, k_g, cache_n), read_act(*cpu_, k_c, cache_n), tol(), "rope k cache" + what);
        expect_close(read_act(*gpu_, v_g, cache_n), read_act(*cpu_, v_c, cache_n), tol(), "rope v cache" + what);
      }
    }
  }
}

// The qkv projection with rope_kv_write fused in (decode, T <= 8): GPU one-pass kernel against the
// CPU's matmul then rope_kv_write, on qkv and both caches. Positions span the whole cache (angles
// up to ~300 rad), tokens hit random sequences; D = 16 and 32 have fewer pairs than a warp.
// With AttentionShape::inputs_ready_before_step (as LlamaForward's steps) the GEMV prepares the
// rotation and the cache rows before its wait; without, after it: both against the CPU.
TEST_P(AttentionOps, QkvRopeKvWriteMatchesMatmulThenRope) {
  const int K = 256;
  for (Case c : kCases) {
    for (bool ready : {false, true}) {
      PagedKV pk = paged(rng_, c);
      pk.shape.inputs_ready_before_step = ready;
      const int N = (c.Hq + 2 * c.Hkv) * c.D;
      const size_t cache_n = pk.pool_elems();
      const auto inv_freq = llama3_inv_freq(c.D);
      auto f_g = upload_f32(*gpu_, inv_freq), f_c = upload_f32(*cpu_, inv_freq);
      const auto w = rnd(size_t(N) * K, -0.1f, 0.1f);
      auto w_g = upload_weight(*gpu_, w), w_c = upload_weight(*cpu_, w);
      for (int T : {1, 3, cuda::kGemvMaxM}) {
        const Tokens tk = make_tokens(rng_, Layout::Decode, T, c, /*unique_rows=*/true);
        const auto x = rnd(size_t(T) * K);
        const auto k0 = rnd(cache_n), v0 = rnd(cache_n);
        auto x_g = upload_act(*gpu_, x), x_c = upload_act(*cpu_, x);
        auto qkv_g = poisoned_act(*gpu_, size_t(T) * N), qkv_c = poisoned_act(*cpu_, size_t(T) * N);
        DeviceKV kv_g = upload_kv(*gpu_, pk, k0, v0), kv_c = upload_kv(*cpu_, pk, k0, v0);
        auto pos_g = upload_i32(*gpu_, tk.pos), pos_c = upload_i32(*cpu_, tk.pos);
        auto slot_g = upload_i32(*gpu_, tk.slot), slot_c = upload_i32(*cpu_, tk.slot);
        ASSERT_TRUE(gpu_->qkv_rope_kv_write(qkv_g.get(), x_g.get(), w_g.get(), T, K, pos_g.as<int32_t>(),
                                            slot_g.as<int32_t>(), f_g.as<float>(), kv_g.layer(), pk.shape))
            << c.str();
        ASSERT_FALSE(cpu_->qkv_rope_kv_write(qkv_c.get(), x_c.get(), w_c.get(), T, K, pos_c.as<int32_t>(),
                                             slot_c.as<int32_t>(), f_c.as<float>(), kv_c.layer(), pk.shape));
        cpu_->matmul(qkv_c.get(), x_c.get(), w_c.get(), T, N, K);
        cpu_->rope_kv_write(qkv_c.get(), pos_c.as<int32_t>(), slot_c.as<int32_t>(), f_c.as<float>(), kv_c.layer(),
                            pk.shape, T);
        const std::string what = " T=" + std::to_string(T) + " " + c.str() + (ready ? " inputs ready" : "");
        const size_t qkv_n = size_t(T) * N;
        expect_close(read_act(*gpu_, qkv_g, qkv_n), read_act(*cpu_, qkv_c, qkv_n), tol(), "fused rope qkv" + what);
        expect_close(read_act(*gpu_, kv_g.k, cache_n), read_act(*cpu_, kv_c.k, cache_n), tol(),
                     "fused rope k cache" + what);
        expect_close(read_act(*gpu_, kv_g.v, cache_n), read_act(*cpu_, kv_c.v, cache_n), tol(),
                     "fused rope v cache" + what);
      }
    }
  }
}

// Runs attention on both backends for the tokens tk (q from qkv, caches k0, v0 through the block
// tables of pk) and compares.
void compare_attention(Backend& gpu, Backend& cpu, const Case& c, const PagedKV& pk, const Tokens& tk, double tol,
                       const std::vector<float>& k0, const std::vector<float>& v0, const std::vector<float>& qkv,
                       const std::string& what) {
  const int T = static_cast<int>(tk.pos.size());
  const size_t out_n = size_t(T) * c.Hq * c.D;
  auto qkv_g = upload_act(gpu, qkv), qkv_c = upload_act(cpu, qkv);
  DeviceKV kv_g = upload_kv(gpu, pk, k0, v0), kv_c = upload_kv(cpu, pk, k0, v0);
  auto pos_g = upload_i32(gpu, tk.pos), pos_c = upload_i32(cpu, tk.pos);
  auto slot_g = upload_i32(gpu, tk.slot), slot_c = upload_i32(cpu, tk.slot);
  auto out_g = poisoned_act(gpu, out_n), out_c = poisoned_act(cpu, out_n);
  gpu.attention(out_g.get(), qkv_g.get(), pos_g.as<int32_t>(), slot_g.as<int32_t>(), kv_g.layer(), pk.shape, T);
  cpu.attention(out_c.get(), qkv_c.get(), pos_c.as<int32_t>(), slot_c.as<int32_t>(), kv_c.layer(), pk.shape, T);
  expect_close(read_act(gpu, out_g, out_n), read_act(cpu, out_c, out_n), tol, "attention " + what + " " + c.str());
}

void check_attention(Backend& gpu, Backend& cpu, std::mt19937_64& rng, const Case& c, const PagedKV& pk,
                     Layout layout, int T, double tol, const std::vector<float>& k0, const std::vector<float>& v0,
                     const std::vector<float>& qkv) {
  const Tokens tk = make_tokens(rng, layout, T, c, /*unique_rows=*/false);
  compare_attention(gpu, cpu, c, pk, tk, tol, k0, v0, qkv,
                    std::string(layout_name(layout)) + " T=" + std::to_string(T));
}

// The fused qkv GEMV asks L2 for the earlier cache rows only where its weight fits twice in the
// L2, and only rows that fit half of what the weight leaves (QkvRopeKvWriteMatchesMatmulThenRope
// above runs it asking, at small shapes).
TEST(KvL2Prefetch, OnlyWhereTheWeightIsAtMostHalfTheL2) {
  LAMINA_SKIP_WITHOUT_GPU();
  int device = 0, l2 = 0;
  ASSERT_EQ(cudaGetDevice(&device), cudaSuccess);
  ASSERT_EQ(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, device), cudaSuccess);
  ASSERT_GT(l2, 0);
  if (std::getenv("LAMINA_KV_L2_PREFETCH") != nullptr) GTEST_SKIP() << "LAMINA_KV_L2_PREFETCH is set";
  const size_t L2 = size_t(l2);
  EXPECT_EQ(cuda::kv_l2_prefetch_budget(0), L2 / 2);
  EXPECT_EQ(cuda::kv_l2_prefetch_budget(L2 / 2), (L2 - L2 / 2) / 2);
  EXPECT_EQ(cuda::kv_l2_prefetch_budget(L2 / 2 + 1), 0u);
  // Llama-3-8B's qkv in bf16 at tp 1 (6144 x 4096) and tp 2 on a 50 MB L2 (H100, H200): at tp 2,
  // a token of 768 rows (1.5 MB of K and V at 4 kv heads) is asked for, one of 8192 rows (16 MB) not.
  if (l2 == 50 << 20) {
    EXPECT_EQ(cuda::kv_l2_prefetch_budget(size_t(6144) * 4096 * 2), 0u);
    const uint32_t tp2 = cuda::kv_l2_prefetch_budget(size_t(3072) * 4096 * 2);
    EXPECT_GE(tp2, 768u * 2 * 4 * 128 * 2);
    EXPECT_LT(tp2, 8192u * 2 * 4 * 128 * 2);
  }
}

TEST_P(AttentionOps, Attention) {
  for (Case c : kCases) for (int tpb : kTokensPerBlock) {
    c.tpb = tpb;
    const PagedKV pk = paged(rng_, c);
    const auto k0 = rnd(pk.pool_elems()), v0 = rnd(pk.pool_elems());
    for (Layout layout : {Layout::Prefill, Layout::Decode, Layout::Mixed}) {
      for (int T : kTokens) {
        const auto qkv = rnd(size_t(T) * (c.Hq + 2 * c.Hkv) * c.D, -3.0f, 3.0f);
        check_attention(*gpu_, *cpu_, rng_, c, pk, layout, T, tol(), k0, v0, qkv);
      }
    }
  }
}

// Long sequences: many split-K splits for decode, many key tiles for prefill. The second case has
// 8 tokens a KV block, so the tensor-core decode kernel's 16-key groups span two blocks (a table
// lookup per key).
TEST_P(AttentionOps, LongContext) {
  for (const Case& c : {Case{8, 2, 128, 4096, 2, 16}, Case{32, 8, 128, 1100, 3, 8}}) {
    const PagedKV pk = paged(rng_, c);
    const auto k0 = rnd(pk.pool_elems()), v0 = rnd(pk.pool_elems());
    for (Layout layout : {Layout::Prefill, Layout::Decode, Layout::Mixed}) {
      for (int T : {1, 3, 130}) {
        const auto qkv = rnd(size_t(T) * (c.Hq + 2 * c.Hkv) * c.D, -3.0f, 3.0f);
        check_attention(*gpu_, *cpu_, rng_, c, pk, layout, T, tol(), k0, v0, qkv);
      }
    }
  }
}

// Appends `n` tokens of one sequence: slot, positions start .. start + n - 1.
void add_sequence(Tokens& tk, int slot, int start, int n) {
  for (int i = 0; i < n; ++i) {
    tk.slot.push_back(slot);
    tk.pos.push_back(start + i);
  }
}

// Decode tokens of very different lengths in one step, each in its own sequence row: the decode
// kernel spreads each token's rows over the split slots by its own length (a length-1 token has one
// split, a 4096-row token many), and the last split to finish merges. Three rounds on one backend
// (one workspace): an arrival counter left non-zero by a round would break the next. The appended
// invalid token (position -1) must come out as zeros.
TEST_P(AttentionOps, DecodeUnevenSplits) {
  const Case cases[] = {
      {8, 2, 128, 4096, 9, 32},   // G=4
      {16, 1, 64, 2048, 9, 16},   // G=16: head chunks (8 heads pipelined, 4 one-token)
      {4, 4, 256, 1100, 9, 32},   // G=1, D=256
  };
  for (const Case& c : cases) {
    const PagedKV pk = paged(rng_, c);
    const auto k0 = rnd(pk.pool_elems()), v0 = rnd(pk.pool_elems());
    DeviceKV kv_g = upload_kv(*gpu_, pk, k0, v0), kv_c = upload_kv(*cpu_, pk, k0, v0);
    // Lengths (positions + 1): 1, one minimum split, one past it, split-boundary multiples, the full cache.
    const int M = c.max_seq;
    const std::vector<std::vector<int>> rounds = {
        {1, 64, 65, 128, M, M - 1, M / 2, 513, 2},
        {M, 1, 33, 1, 64 * 7, 64 * 7 + 1, 3, M - 64, 1000 % M},
        {2, M - 3, 1, 1, 63, 127, 256, M, 5},
        {M, 65, 1},  // a small step: 3 tokens + the invalid one
    };
    for (size_t r = 0; r < rounds.size(); ++r) {
      Tokens tk;
      for (size_t i = 0; i < rounds[r].size(); ++i) add_sequence(tk, int(i), std::min(rounds[r][i], M) - 1, 1);
      const int T = int(tk.pos.size());
      const size_t row = size_t(c.Hq) * c.D, out_n = size_t(T) * row;
      const auto qkv = rnd(size_t(T + 1) * (c.Hq + 2 * c.Hkv) * c.D, -3.0f, 3.0f);
      // GPU: the T tokens and an invalid one; CPU: the T tokens.
      Tokens tk_g = tk;
      add_sequence(tk_g, 0, -1, 1);
      auto qkv_g = upload_act(*gpu_, qkv), qkv_c = upload_act(*cpu_, qkv);
      auto pos_g = upload_i32(*gpu_, tk_g.pos), pos_c = upload_i32(*cpu_, tk.pos);
      auto slot_g = upload_i32(*gpu_, tk_g.slot), slot_c = upload_i32(*cpu_, tk.slot);
      auto out_g = poisoned_act(*gpu_, out_n + row), out_c = poisoned_act(*cpu_, out_n);
      gpu_->attention(out_g.get(), qkv_g.get(), pos_g.as<int32_t>(), slot_g.as<int32_t>(), kv_g.layer(), pk.shape,
                      T + 1);
      cpu_->attention(out_c.get(), qkv_c.get(), pos_c.as<int32_t>(), slot_c.as<int32_t>(), kv_c.layer(), pk.shape, T);
      const auto got = read_act(*gpu_, out_g, out_n + row);
      const std::string what = "uneven decode round " + std::to_string(r) + " " + c.str();
      expect_close(std::vector<float>(got.begin(), got.begin() + out_n), read_act(*cpu_, out_c, out_n), tol(), what);
      for (size_t i = out_n; i < got.size(); ++i) ASSERT_EQ(got[i], 0.0f) << "invalid token not zero, " << what;
    }
  }
}

// One token a step (the latency kernel, kAttentionLatencyMaxTokens): lengths at and around the split
// boundaries and the full cache, one step after another on one backend, so split merges that leave
// state behind (an arrival counter not reset) break the next step. The heads cover every q heads a
// block (heads_per_block: 4, 2, and chunks of 2 and 1), the lengths splits of 32 rows (up to 1024)
// and of 64 or more (past it).
TEST_P(AttentionOps, DecodeOneTokenSteps) {
  const Case cases[] = {
      {32, 8, 128, 4096, 1, 32},  // Llama-3-8B heads: 4 q heads a block
      {16, 4, 128, 4096, 1, 16},  // Llama-3-8B at tp 2: 2 q heads a block
      {16, 1, 64, 2048, 1, 16},   // G=16: eight head chunks of 2
      {6, 2, 64, 2048, 1, 32},    // G=3: head chunks of 2 and 1
  };
  for (const Case& c : cases) {
    const PagedKV pk = paged(rng_, c);
    const auto k0 = rnd(pk.pool_elems()), v0 = rnd(pk.pool_elems());
    DeviceKV kv_g = upload_kv(*gpu_, pk, k0, v0), kv_c = upload_kv(*cpu_, pk, k0, v0);
    const int M = c.max_seq;
    for (int len : {1, 31, 32, 33, 64, 65, 512, 513, 640, 768, M - 1, M, 2, 777, 1024, 1025, 2000}) {
      Tokens tk;
      add_sequence(tk, 0, len - 1, 1);
      const size_t row = size_t(c.Hq) * c.D;
      const auto qkv = rnd(size_t(c.Hq + 2 * c.Hkv) * c.D, -3.0f, 3.0f);
      auto qkv_g = upload_act(*gpu_, qkv), qkv_c = upload_act(*cpu_, qkv);
      auto pos_g = upload_i32(*gpu_, tk.pos), pos_c = upload_i32(*cpu_, tk.pos);
      auto slot_g = upload_i32(*gpu_, tk.slot), slot_c = upload_i32(*cpu_, tk.slot);
      auto out_g = poisoned_act(*gpu_, row), out_c = poisoned_act(*cpu_, row);
      gpu_->attention(out_g.get(), qkv_g.get(), pos_g.as<int32_t>(), slot_g.as<int32_t>(), kv_g.layer(), pk.shape, 1);
      cpu_->attention(out_c.get(), qkv_c.get(), pos_c.as<int32_t>(), slot_c.as<int32_t>(), kv_c.layer(), pk.shape, 1);
      expect_close(read_act(*gpu_, out_g, row), read_act(*cpu_, out_c, row), tol(),
                   "one-token decode len " + std::to_string(len) + " " + c.str());
    }
  }
}

// Prefill-kernel shapes: GQA 1, 4, 8 and head_dim 64, 128, up to 2100 keys.
const Case kPrefillCases[] = {
    {8, 8, 128, 2200, 3},  // G=1
    {8, 2, 64, 2200, 3},   // G=4
    {8, 1, 128, 2200, 3},  // G=8
    {16, 2, 128, 2200, 3}, // G=8, more heads
};

// Whole prompts from position 0, lengths around and off multiples of 64 (the tile size).
TEST_P(AttentionOps, PrefillLongPrompts) {
  const int kShort[] = {17, 63, 64, 65}, kMid[] = {200, 777, 1025};
  int i = 0;
  for (Case c : kPrefillCases) {
    c.tpb = kTokensPerBlock[i % 2];
    const PagedKV pk = paged(rng_, c);
    const auto k0 = rnd(pk.pool_elems()), v0 = rnd(pk.pool_elems());
    // Every case gets a short, a mid and a long prompt; the lengths rotate over the cases.
    for (int T : {kShort[i % 4], kMid[i % 3], i % 2 == 0 ? 2100 : 1500 + i}) {
      Tokens tk;
      add_sequence(tk, std::uniform_int_distribution<int>(0, c.slots - 1)(rng_), 0, T);
      const auto qkv = rnd(size_t(T) * (c.Hq + 2 * c.Hkv) * c.D, -3.0f, 3.0f);
      compare_attention(*gpu_, *cpu_, c, pk, tk, tol(), k0, v0, qkv, "prompt T=" + std::to_string(T));
    }
    ++i;
  }
}

// Chunked prefill: the chunk starts at a position > 0, the earlier rows are already in the cache.
TEST_P(AttentionOps, ChunkedPrefill) {
  const int kChunks[][2] = {{64, 129}, {700, 333}, {1500, 600}, {1, 64}, {2000, 100}};  // {start, tokens}
  int i = 0;
  for (Case c : kPrefillCases) {
    c.tpb = kTokensPerBlock[i++ % 2];
    const PagedKV pk = paged(rng_, c);
    const auto k0 = rnd(pk.pool_elems()), v0 = rnd(pk.pool_elems());
    for (const auto& ch : kChunks) {
      Tokens tk;
      add_sequence(tk, std::uniform_int_distribution<int>(0, c.slots - 1)(rng_), ch[0], ch[1]);
      const auto qkv = rnd(size_t(ch[1]) * (c.Hq + 2 * c.Hkv) * c.D, -3.0f, 3.0f);
      compare_attention(*gpu_, *cpu_, c, pk, tk, tol(), k0, v0, qkv,
                        "chunk start=" + std::to_string(ch[0]) + " T=" + std::to_string(ch[1]));
    }
  }
}

// One step holding several sequences: prompt chunks of different slots back to back (tiles that
// straddle two of them go to the decode kernel), with decode tokens between and after them.
TEST_P(AttentionOps, SeveralSequencesOneStep) {
  int i = 0;
  for (Case c : kPrefillCases) {
    c.tpb = kTokensPerBlock[i++ % 2];
    const PagedKV pk = paged(rng_, c);
    const auto k0 = rnd(pk.pool_elems()), v0 = rnd(pk.pool_elems());
    Tokens tk;
    add_sequence(tk, 1, 0, 150);     // a new prompt
    add_sequence(tk, 0, 300, 70);    // a chunk after a 300-row prefix
    add_sequence(tk, 2, 1234, 1);    // a decode token
    add_sequence(tk, 2, 1000, 1);    // another token of the same slot, earlier position
    add_sequence(tk, 0, 1500, 200);  // a later chunk of slot 0 (positions past the first chunk)
    add_sequence(tk, 1, 2150, 3);    // decode tokens near the end of the cache
    const int T = static_cast<int>(tk.pos.size());
    const auto qkv = rnd(size_t(T) * (c.Hq + 2 * c.Hkv) * c.D, -3.0f, 3.0f);
    compare_attention(*gpu_, *cpu_, c, pk, tk, tol(), k0, v0, qkv, "several sequences T=" + std::to_string(T));
  }
}

// A step whose prompt tiles the caller describes (AttentionShape, as LlamaForward does for steps
// it does not record) against the CPU: in the scheduler's order (whole tiles of prompts, then other
// chunks, then decode tokens), a prompt tile after decode tokens, all decode tokens (no prefill
// kernel then), and all prompt tiles (no decode kernel). The CUDA kernels then launch only the
// blocks the description leaves them.
TEST_P(AttentionOps, DescribedPromptTilesMatchCpu) {
  const Case c{8, 2, 128, 2200, 6};
  const PagedKV pk = paged(rng_, c);
  const auto k0 = rnd(pk.pool_elems()), v0 = rnd(pk.pool_elems());
  struct Layout {
    const char* name;
    std::vector<std::array<int, 3>> seqs;  // slot, first position, tokens
  };
  const Layout layouts[] = {
      {"scheduler order", {{0, 0, 128}, {1, 300, 64}, {2, 40, 70}, {3, 900, 1}, {4, 17, 1}, {5, 2000, 1}}},
      {"prompt tile after decode tokens", {{3, 900, 1}, {4, 17, 1}, {0, 0, 150}, {5, 64, 64}}},
      {"decode tokens only", {{0, 100, 1}, {1, 7, 1}, {2, 2100, 1}, {3, 64, 1}, {4, 500, 1}, {5, 1, 1}}},
      {"prompt tiles only", {{0, 0, 128}, {1, 200, 64}}},
  };
  for (const Layout& l : layouts) {
    Tokens tk;
    for (const auto& [slot, start, n] : l.seqs) add_sequence(tk, slot, start, n);
    if (std::string(l.name) == "decode tokens only")  // more than kAttentionDecodeMaxTokens tokens
      for (int i = 0; i < 30; ++i) add_sequence(tk, i % 6, 1000 + 31 * i, 1);
    const int T = static_cast<int>(tk.pos.size());
    PagedKV described = pk;
    describe_prompt_tiles(described.shape, tk.slot.data(), T);
    const auto qkv = rnd(size_t(T) * (c.Hq + 2 * c.Hkv) * c.D, -3.0f, 3.0f);
    compare_attention(*gpu_, *cpu_, c, described, tk, tol(), k0, v0, qkv,
                      std::string(l.name) + " (prompt tiles below " + std::to_string(described.shape.prompt_tiles_end) +
                          ", leading " + std::to_string(described.shape.leading_prompt_tiles) + ") T=" +
                          std::to_string(T));
  }
}

// One step on backend b: the cache (k0, v0) and the step's inputs uploaded, rope_kv_write appends
// the tokens' rows, attention reads them; returns attention's output [T, Hq, D].
std::vector<float> rope_then_attention(Backend& b, const PagedKV& pk, const std::vector<float>& k0,
                                       const std::vector<float>& v0, const std::vector<float>& qkv,
                                       const std::vector<int32_t>& pos, const std::vector<int32_t>& slot) {
  const int T = static_cast<int>(pos.size());
  const size_t out_n = size_t(T) * pk.shape.num_q_heads * pk.shape.head_dim;
  auto f = upload_f32(b, llama3_inv_freq(pk.shape.head_dim));
  auto q = upload_act(b, qkv);
  DeviceKV kv = upload_kv(b, pk, k0, v0);
  auto p = upload_i32(b, pos), s = upload_i32(b, slot);
  auto out = poisoned_act(b, out_n);
  b.rope_kv_write(q.get(), p.as<int32_t>(), s.as<int32_t>(), f.as<float>(), kv.layer(), pk.shape, T);
  b.attention(out.get(), q.get(), p.as<int32_t>(), s.as<int32_t>(), kv.layer(), pk.shape, T);
  return read_act(b, out, out_n);
}

// rope_kv_write then attention over the cache it wrote: the prefill of a whole prompt, then a
// second chunk (chunked prefill) of another sequence row after existing cache rows, both through
// shuffled block tables.
TEST_P(AttentionOps, RopeThenAttentionPrefill) {
  for (int tpb : kTokensPerBlock) {
    const Case c{8, 2, 128, 300, 2, tpb};
    const PagedKV pk = paged(rng_, c);
    const int T = 200;
    const auto qkv = rnd(size_t(T) * (c.Hq + 2 * c.Hkv) * c.D, -2.0f, 2.0f);
    const auto k0 = rnd(pk.pool_elems()), v0 = rnd(pk.pool_elems());
    for (int start : {0, 77}) {
      std::vector<int32_t> pos(T), slot(T, start == 0 ? 0 : 1);
      for (int t = 0; t < T; ++t) pos[t] = start + t;
      expect_close(rope_then_attention(*gpu_, pk, k0, v0, qkv, pos, slot),
                   rope_then_attention(*cpu_, pk, k0, v0, qkv, pos, slot), tol(),
                   "rope + attention prefill T=200 start=" + std::to_string(start) + " tpb=" + std::to_string(tpb));
    }
  }
}

// A decode step as LlamaForward runs it (AttentionShape::inputs_ready_before_step): the cache and
// the step's inputs uploaded first, then rope_kv_write appends the step's rows and attention runs
// right behind it, reading the rows of earlier steps before it waits for rope_kv_write. One token
// (batch-1 decode), and 3 tokens of one sequence (rows pos - 2 .. pos all new this step); the
// heads of Llama-3-8B and of Llama-3-70B at tp 4, and small heads whose cache rows share 128-byte
// lines (one kv head of 16 or 32 elements: a row read early and the row written meanwhile sit in
// one line, which must not be served stale from L1).
TEST_P(AttentionOps, DecodeStepReadsEarlierRowsBeforeWaiting) {
  const Case cases[] = {{32, 8, 128, 2048, 2, 32}, {16, 2, 128, 2048, 2, 16}, {4, 1, 16, 300, 2, 16},
                        {8, 1, 32, 300, 2, 32}, {8, 2, 16, 300, 2, 16}};
  for (const Case& c : cases) {
    PagedKV pk = paged(rng_, c);
    pk.shape.inputs_ready_before_step = true;
    const auto k0 = rnd(pk.pool_elems()), v0 = rnd(pk.pool_elems());
    for (int T : {1, 3})
      for (int len : {1, 3, 33, 200, 512, 700, c.max_seq}) {
        if (len < T || len > c.max_seq) continue;
        std::vector<int32_t> pos(T), slot(T, 1);
        for (int t = 0; t < T; ++t) pos[t] = len - T + t;
        const auto qkv = rnd(size_t(T) * (c.Hq + 2 * c.Hkv) * c.D, -2.0f, 2.0f);
        expect_close(rope_then_attention(*gpu_, pk, k0, v0, qkv, pos, slot),
                     rope_then_attention(*cpu_, pk, k0, v0, qkv, pos, slot), tol(),
                     "decode step T=" + std::to_string(T) + " len=" + std::to_string(len) + " " + c.str());
      }
  }
}

// The same step through contiguous and through shuffled block tables (same data at the same
// (sequence, position)) gives the same output on the GPU.
TEST_P(AttentionOps, ShuffledTablesMatchContiguous) {
  for (int tpb : kTokensPerBlock) {
    const Case c{8, 2, 64, 200, 3, tpb};
    const PagedKV flat = make_paged_kv(rng_, c.Hq, c.Hkv, c.D, c.max_seq, c.slots, tpb, /*shuffled=*/false);
    const PagedKV shuf = paged(rng_, c);
    // Per-sequence data [seq, pos, Hkv, D] placed into each pool at that pool's rows.
    const size_t row_n = size_t(c.Hkv) * c.D;
    const auto kd = rnd(size_t(c.slots) * c.max_seq * row_n), vd = rnd(size_t(c.slots) * c.max_seq * row_n);
    auto place = [&](const PagedKV& p, const std::vector<float>& d) {
      std::vector<float> pool = rnd(p.pool_elems());
      for (int s = 0; s < c.slots; ++s)
        for (int j = 0; j < c.max_seq; ++j)
          std::copy_n(d.begin() + (size_t(s) * c.max_seq + j) * row_n, row_n, pool.begin() + p.row(s, j) * row_n);
      return pool;
    };
    for (Layout layout : {Layout::Prefill, Layout::Decode, Layout::Mixed}) {
      for (int T : kTokens) {
        const Tokens tk = make_tokens(rng_, layout, T, c, /*unique_rows=*/false);
        const auto qkv = rnd(size_t(T) * (c.Hq + 2 * c.Hkv) * c.D, -3.0f, 3.0f);
        const size_t out_n = size_t(T) * c.Hq * c.D;
        auto run = [&](const PagedKV& p) {
          auto q = upload_act(*gpu_, qkv);
          DeviceKV kv = upload_kv(*gpu_, p, place(p, kd), place(p, vd));
          auto pos = upload_i32(*gpu_, tk.pos), s = upload_i32(*gpu_, tk.slot);
          auto out = poisoned_act(*gpu_, out_n);
          gpu_->attention(out.get(), q.get(), pos.as<int32_t>(), s.as<int32_t>(), kv.layer(), p.shape, T);
          return read_act(*gpu_, out, out_n);
        };
        expect_close(run(shuf), run(flat), tol() * 0.1,
                     std::string("shuffled vs contiguous ") + layout_name(layout) + " T=" + std::to_string(T));
      }
    }
  }
}

LAMINA_INSTANTIATE_DTYPES(AttentionOps);

}  // namespace
}  // namespace lamina::optest
