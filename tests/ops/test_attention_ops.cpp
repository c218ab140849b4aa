// rope_kv_write and attention on the CUDA backend vs the CPU reference: GQA groups 1, 3, 4, 8, 16,
// head_dim 16/32/64/128/256, several slots, prefill (one sequence, consecutive positions), decode
// (tokens of random sequences at random positions) and mixed steps; for the prefill kernel, whole
// prompts up to 2100 tokens, chunks after a cached prefix and several sequences in one step.
#include <algorithm>
#include <cmath>
#include <set>

#include "op_test_util.h"

namespace lamina::optest {
namespace {

struct Case {
  int Hq, Hkv, D, max_seq, slots;
  AttentionShape shape() const { return AttentionShape{Hq, Hkv, D, max_seq, slots}; }
  std::string str() const {
    return "Hq=" + std::to_string(Hq) + " Hkv=" + std::to_string(Hkv) + " D=" + std::to_string(D) +
           " max_seq=" + std::to_string(max_seq);
  }
};

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

std::vector<float> llama3_inv_freq(int D) {
  std::vector<float> f(D / 2);
  for (int i = 0; i < D / 2; ++i) f[i] = float(std::pow(500000.0, -2.0 * i / D));
  return f;
}

class AttentionOps : public OpTest {};

TEST_P(AttentionOps, RopeKvWrite) {
  for (const Case& c : kCases) {
    const size_t row = size_t(c.Hq + 2 * c.Hkv) * c.D;
    const size_t cache_n = size_t(c.slots) * c.max_seq * c.Hkv * c.D;
    const auto inv_freq = llama3_inv_freq(c.D);
    auto f_g = upload_f32(*gpu_, inv_freq), f_c = upload_f32(*cpu_, inv_freq);
    for (Layout layout : {Layout::Prefill, Layout::Decode}) {
      for (int T : kTokens) {
        const Tokens tk = make_tokens(rng_, layout, T, c, /*unique_rows=*/true);
        const auto qkv = rnd(size_t(T) * row, -2.0f, 2.0f);
        const auto k0 = rnd(cache_n), v0 = rnd(cache_n);
        auto qkv_g = upload_act(*gpu_, qkv), qkv_c = upload_act(*cpu_, qkv);
        auto k_g = upload_act(*gpu_, k0), k_c = upload_act(*cpu_, k0);
        auto v_g = upload_act(*gpu_, v0), v_c = upload_act(*cpu_, v0);
        auto pos_g = upload_i32(*gpu_, tk.pos), pos_c = upload_i32(*cpu_, tk.pos);
        auto slot_g = upload_i32(*gpu_, tk.slot), slot_c = upload_i32(*cpu_, tk.slot);
        gpu_->rope_kv_write(qkv_g.get(), pos_g.as<int32_t>(), slot_g.as<int32_t>(), f_g.as<float>(),
                            KVCacheLayer{k_g.get(), v_g.get()}, c.shape(), T);
        cpu_->rope_kv_write(qkv_c.get(), pos_c.as<int32_t>(), slot_c.as<int32_t>(), f_c.as<float>(),
                            KVCacheLayer{k_c.get(), v_c.get()}, c.shape(), T);
        const std::string what = std::string(" ") + layout_name(layout) + " T=" + std::to_string(T) + " " + c.str();
        expect_close(read_act(*gpu_, qkv_g, qkv.size()), read_act(*cpu_, qkv_c, qkv.size()), tol(), "rope qkv" + what);
        expect_close(read_act(*gpu_, k_g, cache_n), read_act(*cpu_, k_c, cache_n), tol(), "rope k cache" + what);
        expect_close(read_act(*gpu_, v_g, cache_n), read_act(*cpu_, v_c, cache_n), tol(), "rope v cache" + what);
      }
    }
  }
}

// Runs attention on both backends for the tokens tk (q from qkv, caches k0, v0) and compares.
void compare_attention(Backend& gpu, Backend& cpu, const Case& c, const Tokens& tk, double tol,
                       const std::vector<float>& k0, const std::vector<float>& v0, const std::vector<float>& qkv,
                       const std::string& what) {
  const int T = static_cast<int>(tk.pos.size());
  const size_t out_n = size_t(T) * c.Hq * c.D;
  auto qkv_g = upload_act(gpu, qkv), qkv_c = upload_act(cpu, qkv);
  auto k_g = upload_act(gpu, k0), k_c = upload_act(cpu, k0);
  auto v_g = upload_act(gpu, v0), v_c = upload_act(cpu, v0);
  auto pos_g = upload_i32(gpu, tk.pos), pos_c = upload_i32(cpu, tk.pos);
  auto slot_g = upload_i32(gpu, tk.slot), slot_c = upload_i32(cpu, tk.slot);
  auto out_g = poisoned_act(gpu, out_n), out_c = poisoned_act(cpu, out_n);
  gpu.attention(out_g.get(), qkv_g.get(), pos_g.as<int32_t>(), slot_g.as<int32_t>(),
                KVCacheLayer{k_g.get(), v_g.get()}, c.shape(), T);
  cpu.attention(out_c.get(), qkv_c.get(), pos_c.as<int32_t>(), slot_c.as<int32_t>(),
                KVCacheLayer{k_c.get(), v_c.get()}, c.shape(), T);
  expect_close(read_act(gpu, out_g, out_n), read_act(cpu, out_c, out_n), tol, "attention " + what + " " + c.str());
}

void check_attention(Backend& gpu, Backend& cpu, std::mt19937_64& rng, const Case& c, Layout layout,
                     int T, double tol, const std::vector<float>& k0, const std::vector<float>& v0,
                     const std::vector<float>& qkv) {
  const Tokens tk = make_tokens(rng, layout, T, c, /*unique_rows=*/false);
  compare_attention(gpu, cpu, c, tk, tol, k0, v0, qkv, std::string(layout_name(layout)) + " T=" + std::to_string(T));
}

TEST_P(AttentionOps, Attention) {
  for (const Case& c : kCases) {
    const size_t cache_n = size_t(c.slots) * c.max_seq * c.Hkv * c.D;
    const auto k0 = rnd(cache_n), v0 = rnd(cache_n);
    for (Layout layout : {Layout::Prefill, Layout::Decode, Layout::Mixed}) {
      for (int T : kTokens) {
        const auto qkv = rnd(size_t(T) * (c.Hq + 2 * c.Hkv) * c.D, -3.0f, 3.0f);
        check_attention(*gpu_, *cpu_, rng_, c, layout, T, tol(), k0, v0, qkv);
      }
    }
  }
}

// Long sequences: many split-K splits for decode, many key tiles for prefill.
TEST_P(AttentionOps, LongContext) {
  const Case c{8, 2, 128, 4096, 2};
  const size_t cache_n = size_t(c.slots) * c.max_seq * c.Hkv * c.D;
  const auto k0 = rnd(cache_n), v0 = rnd(cache_n);
  for (Layout layout : {Layout::Prefill, Layout::Decode, Layout::Mixed}) {
    for (int T : {1, 3, 130}) {
      const auto qkv = rnd(size_t(T) * (c.Hq + 2 * c.Hkv) * c.D, -3.0f, 3.0f);
      check_attention(*gpu_, *cpu_, rng_, c, layout, T, tol(), k0, v0, qkv);
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
  for (const Case& c : kPrefillCases) {
    const size_t cache_n = size_t(c.slots) * c.max_seq * c.Hkv * c.D;
    const auto k0 = rnd(cache_n), v0 = rnd(cache_n);
    // Every case gets a short, a mid and a long prompt; the lengths rotate over the cases.
    for (int T : {kShort[i % 4], kMid[i % 3], i % 2 == 0 ? 2100 : 1500 + i}) {
      Tokens tk;
      add_sequence(tk, std::uniform_int_distribution<int>(0, c.slots - 1)(rng_), 0, T);
      const auto qkv = rnd(size_t(T) * (c.Hq + 2 * c.Hkv) * c.D, -3.0f, 3.0f);
      compare_attention(*gpu_, *cpu_, c, tk, tol(), k0, v0, qkv, "prompt T=" + std::to_string(T));
    }
    ++i;
  }
}

// Chunked prefill: the chunk starts at a position > 0, the earlier rows are already in the cache.
TEST_P(AttentionOps, ChunkedPrefill) {
  const int kChunks[][2] = {{64, 129}, {700, 333}, {1500, 600}, {1, 64}, {2000, 100}};  // {start, tokens}
  for (const Case& c : kPrefillCases) {
    const size_t cache_n = size_t(c.slots) * c.max_seq * c.Hkv * c.D;
    const auto k0 = rnd(cache_n), v0 = rnd(cache_n);
    for (const auto& ch : kChunks) {
      Tokens tk;
      add_sequence(tk, std::uniform_int_distribution<int>(0, c.slots - 1)(rng_), ch[0], ch[1]);
      const auto qkv = rnd(size_t(ch[1]) * (c.Hq + 2 * c.Hkv) * c.D, -3.0f, 3.0f);
      compare_attention(*gpu_, *cpu_, c, tk, tol(), k0, v0, qkv,
                        "chunk start=" + std::to_string(ch[0]) + " T=" + std::to_string(ch[1]));
    }
  }
}

// One step holding several sequences: prompt chunks of different slots back to back (tiles that
// straddle two of them go to the decode kernel), with decode tokens between and after them.
TEST_P(AttentionOps, SeveralSequencesOneStep) {
  for (const Case& c : kPrefillCases) {
    const size_t cache_n = size_t(c.slots) * c.max_seq * c.Hkv * c.D;
    const auto k0 = rnd(cache_n), v0 = rnd(cache_n);
    Tokens tk;
    add_sequence(tk, 1, 0, 150);     // a new prompt
    add_sequence(tk, 0, 300, 70);    // a chunk after a 300-row prefix
    add_sequence(tk, 2, 1234, 1);    // a decode token
    add_sequence(tk, 2, 1000, 1);    // another token of the same slot, earlier position
    add_sequence(tk, 0, 1500, 200);  // a later chunk of slot 0 (positions past the first chunk)
    add_sequence(tk, 1, 2150, 3);    // decode tokens near the end of the cache
    const int T = static_cast<int>(tk.pos.size());
    const auto qkv = rnd(size_t(T) * (c.Hq + 2 * c.Hkv) * c.D, -3.0f, 3.0f);
    compare_attention(*gpu_, *cpu_, c, tk, tol(), k0, v0, qkv, "several sequences T=" + std::to_string(T));
  }
}

// rope_kv_write then attention over the cache it wrote: the prefill of a whole prompt.
TEST_P(AttentionOps, RopeThenAttentionPrefill) {
  const Case c{8, 2, 128, 300, 1};
  const int T = 200;
  const size_t cache_n = size_t(c.slots) * c.max_seq * c.Hkv * c.D, out_n = size_t(T) * c.Hq * c.D;
  const auto inv_freq = llama3_inv_freq(c.D);
  const auto qkv = rnd(size_t(T) * (c.Hq + 2 * c.Hkv) * c.D, -2.0f, 2.0f);
  const auto k0 = rnd(cache_n), v0 = rnd(cache_n);
  std::vector<int32_t> pos(T), slot(T, 0);
  for (int t = 0; t < T; ++t) pos[t] = t;
  auto run = [&](Backend& b) {
    auto f = upload_f32(b, inv_freq);
    auto q = upload_act(b, qkv), k = upload_act(b, k0), v = upload_act(b, v0);
    auto p = upload_i32(b, pos), s = upload_i32(b, slot);
    auto out = poisoned_act(b, out_n);
    b.rope_kv_write(q.get(), p.as<int32_t>(), s.as<int32_t>(), f.as<float>(), KVCacheLayer{k.get(), v.get()},
                    c.shape(), T);
    b.attention(out.get(), q.get(), p.as<int32_t>(), s.as<int32_t>(), KVCacheLayer{k.get(), v.get()}, c.shape(), T);
    return read_act(b, out, out_n);
  };
  expect_close(run(*gpu_), run(*cpu_), tol(), "rope + attention prefill T=200");
}

LAMINA_INSTANTIATE_DTYPES(AttentionOps);

}  // namespace
}  // namespace lamina::optest
