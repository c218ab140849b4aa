// The FP8 KV cache (kv_cache_quant_algo FP8) on the CUDA backend vs the CPU reference: the GPU's
// pools hold e4m3 bytes, value = e4m3 * the layer's scale; the CPU keeps float32 pools whose values
// are rounded through e4m3 as they are written. Checked: the cache writes (rope_kv_write and the
// qkv GEMV with rope fused in) store what the CPU stores, and attention over e4m3 pools (decode
// latency and pipelined kernels, the mma.sync prefill, mixed steps) matches the CPU over the same
// values. Scales other than 1 run through every path. 16-bit activations only (the GPU refuses an
// FP8 cache in float32).
#include <cmath>
#include <set>

#include "common/dtype.h"
#include "common/quant.h"
#include "op_test_util.h"
#include "paged_kv_util.h"

namespace lamina::optest {
namespace {

constexpr float kKScale = 0.05f, kVScale = 4.0f;  // scales of the layer under test

struct Case {
  int Hq, Hkv, D, max_seq, seqs, tpb;
  std::string str() const {
    return "Hq=" + std::to_string(Hq) + " Hkv=" + std::to_string(Hkv) + " D=" + std::to_string(D) +
           " tokens_per_block=" + std::to_string(tpb);
  }
};
// D = 64 and 128 take the mma.sync prefill for whole 64-token tiles; 16, 32 and 256 decode only.
// Decode steps of several tokens go to the tensor-core kernel for D = 64, 128 with GQA (the last
// case: Llama-3-8B heads, 8 tokens a block so its 16-key groups span blocks), else the pipelined one.
// {32, 8, 128, .., 16} is the bulk-copy decode kernel's (LAMINA_ATTN_DECODE=bulk forces it).
const Case kCases[] = {{8, 2, 64, 300, 3, 32}, {4, 4, 128, 300, 2, 16}, {16, 2, 64, 300, 2, 16},
                       {8, 2, 16, 300, 2, 32}, {4, 1, 32, 300, 2, 16},  {4, 1, 256, 300, 2, 32},
                       {32, 8, 128, 700, 3, 8},  {32, 8, 128, 400, 3, 16}};

// One layer's FP8 cache on both backends: e4m3 bytes on the GPU, their float32 values on the CPU.
struct Fp8KV {
  DeviceBuffer k_g, v_g, k_c, v_c, tables_g, tables_c;
  KVCacheLayer gpu() const { return {k_g.get(), v_g.get(), tables_g.as<int32_t>(), true, kKScale, kVScale}; }
  KVCacheLayer cpu() const { return {k_c.get(), v_c.get(), tables_c.as<int32_t>(), true, kKScale, kVScale}; }
};

std::vector<uint8_t> encode(const std::vector<float>& x, float scale) {
  std::vector<uint8_t> b(x.size());
  for (size_t i = 0; i < x.size(); ++i) b[i] = float_to_f8e4m3(x[i] / scale);
  return b;
}
std::vector<float> decode(const std::vector<uint8_t>& b, float scale) {
  std::vector<float> x(b.size());
  for (size_t i = 0; i < b.size(); ++i) x[i] = f8e4m3_to_float(b[i]) * scale;
  return x;
}

DeviceBuffer upload_bytes(Backend& be, const std::vector<uint8_t>& b) {
  DeviceBuffer d(&be, b.size());
  be.copy_to_device(d.get(), b.data(), b.size());
  return d;
}
std::vector<uint8_t> read_bytes(Backend& be, const DeviceBuffer& d, size_t n) {
  std::vector<uint8_t> b(n);
  be.copy_to_host(b.data(), d.get(), n);
  return b;
}

// Decode tokens at random (sequence, position) pairs, or one sequence's consecutive positions.
struct Tokens {
  std::vector<int32_t> pos, slot;
};
Tokens make_tokens(std::mt19937_64& rng, const Case& c, int T, bool prefill) {
  Tokens tk;
  std::set<std::pair<int, int>> used;
  if (prefill) {
    const int slot = int(rng() % unsigned(c.seqs)), start = int(rng() % unsigned(c.max_seq - T + 1));
    for (int t = 0; t < T; ++t) tk.slot.push_back(slot), tk.pos.push_back(start + t);
    return tk;
  }
  while (int(tk.pos.size()) < T) {
    const int s = int(rng() % unsigned(c.seqs)), p = int(rng() % unsigned(c.max_seq));
    if (!used.insert({s, p}).second) continue;
    tk.slot.push_back(s), tk.pos.push_back(p);
  }
  return tk;
}

class Fp8KvCache : public OpTest {
 protected:
  void SetUp() override {
    OpTest::SetUp();
    if (dt() == DType::F32) GTEST_SKIP() << "an FP8 KV cache needs 16-bit activations on the GPU";
  }
  // Pools of random values (k in [-8, 8], v in [-1, 1], whole-range e4m3 codes after the scales).
  Fp8KV make_cache(const PagedKV& pk) {
    const size_t n = pk.pool_elems();
    const auto kb = encode(random_floats(rng_, n, -8.0f, 8.0f), kKScale);
    const auto vb = encode(random_floats(rng_, n), kVScale);
    return Fp8KV{upload_bytes(*gpu_, kb),          upload_bytes(*gpu_, vb),
                 upload_f32(*cpu_, decode(kb, kKScale)), upload_f32(*cpu_, decode(vb, kVScale)),
                 upload_i32(*gpu_, pk.tables),     upload_i32(*cpu_, pk.tables)};
  }
  // Attention of the tokens tk (q, k, v random) over the cache kv on both backends, compared.
  void expect_attention_matches_cpu(const Case& c, const PagedKV& pk, const Fp8KV& kv, const Tokens& tk,
                                    const std::string& what) {
    const int T = int(tk.pos.size());
    const auto qkv = rnd(size_t(T) * (c.Hq + 2 * c.Hkv) * c.D, -3.0f, 3.0f);
    const size_t out_n = size_t(T) * c.Hq * c.D;
    auto qkv_g = upload_act(*gpu_, qkv), qkv_c = upload_act(*cpu_, qkv);
    auto pos_g = upload_i32(*gpu_, tk.pos), pos_c = upload_i32(*cpu_, tk.pos);
    auto slot_g = upload_i32(*gpu_, tk.slot), slot_c = upload_i32(*cpu_, tk.slot);
    auto out_g = poisoned_act(*gpu_, out_n), out_c = poisoned_act(*cpu_, out_n);
    gpu_->attention(out_g.get(), qkv_g.get(), pos_g.as<int32_t>(), slot_g.as<int32_t>(), kv.gpu(), pk.shape, T);
    cpu_->attention(out_c.get(), qkv_c.get(), pos_c.as<int32_t>(), slot_c.as<int32_t>(), kv.cpu(), pk.shape, T);
    expect_close(read_act(*gpu_, out_g, out_n), read_act(*cpu_, out_c, out_n), tol(), what + " " + c.str());
  }
  // The GPU's pools decoded, against the CPU's: equal but for e4m3 rounding flips of values the two
  // computed a few float ulps apart (a flip is one e4m3 step, ~6 %, on a few entries).
  void expect_same_cache(const Fp8KV& kv, size_t n, const std::string& what) {
    expect_close(decode(read_bytes(*gpu_, kv.k_g, n), kKScale), read_act(*cpu_, kv.k_c, n), 1e-2, "k cache " + what);
    expect_close(decode(read_bytes(*gpu_, kv.v_g, n), kVScale), read_act(*cpu_, kv.v_c, n), 1e-2, "v cache " + what);
  }
};

TEST_P(Fp8KvCache, RopeKvWriteStoresE4m3OverTheScale) {
  for (const Case& c : kCases) {
    const PagedKV pk = make_paged_kv(rng_, c.Hq, c.Hkv, c.D, c.max_seq, c.seqs, c.tpb, /*shuffled=*/true);
    const auto f = llama3_inv_freq(c.D);
    auto f_g = upload_f32(*gpu_, f), f_c = upload_f32(*cpu_, f);
    for (int T : {1, 5, 130}) {
      const Tokens tk = make_tokens(rng_, c, T, T > 8);
      const auto qkv = rnd(size_t(T) * (c.Hq + 2 * c.Hkv) * c.D, -2.0f, 2.0f);
      Fp8KV kv = make_cache(pk);
      auto qkv_g = upload_act(*gpu_, qkv), qkv_c = upload_act(*cpu_, qkv);
      auto pos_g = upload_i32(*gpu_, tk.pos), pos_c = upload_i32(*cpu_, tk.pos);
      auto slot_g = upload_i32(*gpu_, tk.slot), slot_c = upload_i32(*cpu_, tk.slot);
      gpu_->rope_kv_write(qkv_g.get(), pos_g.as<int32_t>(), slot_g.as<int32_t>(), f_g.as<float>(), kv.gpu(), pk.shape, T);
      cpu_->rope_kv_write(qkv_c.get(), pos_c.as<int32_t>(), slot_c.as<int32_t>(), f_c.as<float>(), kv.cpu(), pk.shape, T);
      const std::string what = "T=" + std::to_string(T) + " " + c.str();
      expect_close(read_act(*gpu_, qkv_g, qkv.size()), read_act(*cpu_, qkv_c, qkv.size()), tol(), "rope qkv " + what);
      expect_same_cache(kv, pk.pool_elems(), what);
    }
  }
}

// The decode qkv GEMV with rope and the FP8 cache write fused in, against the CPU's matmul then
// rope_kv_write.
TEST_P(Fp8KvCache, QkvRopeKvWriteMatchesMatmulThenRope) {
  const int K = 256;
  for (const Case& c : kCases) {
    const PagedKV pk = make_paged_kv(rng_, c.Hq, c.Hkv, c.D, c.max_seq, c.seqs, c.tpb, /*shuffled=*/true);
    const int N = (c.Hq + 2 * c.Hkv) * c.D;
    const auto w = rnd(size_t(N) * K, -0.2f, 0.2f);
    DeviceBuffer w_g = upload_weight(*gpu_, w), w_c = upload_weight(*cpu_, w);
    const auto f = llama3_inv_freq(c.D);
    auto f_g = upload_f32(*gpu_, f), f_c = upload_f32(*cpu_, f);
    for (int T : {1, 3, 8}) {
      const Tokens tk = make_tokens(rng_, c, T, /*prefill=*/false);
      const auto x = rnd(size_t(T) * K);
      Fp8KV kv = make_cache(pk);
      auto x_g = upload_act(*gpu_, x), x_c = upload_act(*cpu_, x);
      auto qkv_g = poisoned_act(*gpu_, size_t(T) * N), qkv_c = poisoned_act(*cpu_, size_t(T) * N);
      auto pos_g = upload_i32(*gpu_, tk.pos), pos_c = upload_i32(*cpu_, tk.pos);
      auto slot_g = upload_i32(*gpu_, tk.slot), slot_c = upload_i32(*cpu_, tk.slot);
      ASSERT_TRUE(gpu_->qkv_rope_kv_write(qkv_g.get(), x_g.get(), w_g.get(), T, K, pos_g.as<int32_t>(),
                                          slot_g.as<int32_t>(), f_g.as<float>(), kv.gpu(), pk.shape));
      cpu_->matmul(qkv_c.get(), x_c.get(), w_c.get(), T, N, K);
      cpu_->rope_kv_write(qkv_c.get(), pos_c.as<int32_t>(), slot_c.as<int32_t>(), f_c.as<float>(), kv.cpu(), pk.shape, T);
      const std::string what = "fused T=" + std::to_string(T) + " " + c.str();
      expect_close(read_act(*gpu_, qkv_g, size_t(T) * N), read_act(*cpu_, qkv_c, size_t(T) * N), tol(), "qkv " + what);
      expect_same_cache(kv, pk.pool_elems(), what);
    }
  }
}

// Attention over the same e4m3 values: one token (latency kernel), a few (pipelined kernel), a
// 130-token prompt (mma.sync prefill for D = 64, 128, plus the decode kernel for its last tile) and
// 130 decode tokens of random sequences.
TEST_P(Fp8KvCache, AttentionMatchesCpu) {
  for (const Case& c : kCases) {
    const PagedKV pk = make_paged_kv(rng_, c.Hq, c.Hkv, c.D, c.max_seq, c.seqs, c.tpb, /*shuffled=*/true);
    const Fp8KV kv = make_cache(pk);
    for (const auto& [T, prefill] : {std::pair{1, false}, {4, false}, {130, true}, {130, false}})
      expect_attention_matches_cpu(c, pk, kv, make_tokens(rng_, c, T, prefill),
                                   std::string("fp8 attention ") + (prefill ? "prefill" : "decode") +
                                       " T=" + std::to_string(T));
  }
}

// Serving batches: 600 decode tokens at random (sequence, position) pairs, enough that every SM
// gets 2 and the bulk-copy decode kernel takes the step (attention.cu), over Llama-3-8B heads and
// the heads of one rank at tp 2 and of 70B at tp 4; KV blocks of 16 (a key group a block), 32, 64.
TEST_P(Fp8KvCache, ServingBatchAttentionMatchesCpu) {
  const Case cases[] = {{32, 8, 128, 400, 3, 16}, {16, 4, 128, 300, 3, 32}, {16, 2, 128, 300, 4, 64}};
  const int T = 600;
  for (const Case& c : cases) {
    const PagedKV pk = make_paged_kv(rng_, c.Hq, c.Hkv, c.D, c.max_seq, c.seqs, c.tpb, /*shuffled=*/true);
    expect_attention_matches_cpu(c, pk, make_cache(pk), make_tokens(rng_, c, T, /*prefill=*/false),
                                 "fp8 attention, serving batch of " + std::to_string(T) + " decode tokens,");
  }
}

LAMINA_INSTANTIATE_DTYPES(Fp8KvCache);

}  // namespace
}  // namespace lamina::optest
