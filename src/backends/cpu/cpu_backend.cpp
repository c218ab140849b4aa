// The reference backend: plain fp32 loops, one per op, in the order the forward uses them.
// Weights are converted to fp32 on upload; activations and the KV cache are fp32 (an FP8 KV
// cache's values rounded through e4m3 as they are written).
// OpenMP parallelises the outer loops; nothing here is clever on purpose.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "common/dtype.h"
#include "common/error.h"
#include "common/quant.h"
#include "ops/backend.h"

namespace lamina {
namespace {

// The pool row holding position `pos` of the sequence in block-table row `seq`; -1 if the row,
// the position or the block id is out of range. The one paged-KV lookup of this backend (the
// CUDA kernels' twin is kv_cache_row in backends/cuda/attention_common.cuh).
int64_t kv_cache_row(const int32_t* block_tables, const AttentionShape& s, int seq, int pos) {
  if (seq < 0 || seq >= s.num_seq_rows || pos < 0 || pos >= s.max_seq_len()) return -1;
  const int32_t block = block_tables[size_t(seq) * size_t(s.max_blocks_per_seq) + size_t(pos / s.tokens_per_block)];
  if (block < 0 || block >= s.num_blocks) return -1;
  return int64_t(block) * s.tokens_per_block + pos % s.tokens_per_block;
}

// Throws if a token's sequence row, position or block (its own block, or with whole_prefix every
// block of positions 0..pos) has no valid pool row.
void check_kv_rows(const int32_t* positions, const int32_t* slots, const KVCacheLayer& c, const AttentionShape& s,
                   int T, bool whole_prefix) {
  LAMINA_CHECK(c.block_tables != nullptr, "the KV cache has no block tables");
  for (int t = 0; t < T; ++t) {
    const int seq = slots[t], pos = positions[t];
    LAMINA_CHECK(seq >= 0 && seq < s.num_seq_rows, "token ", t, ": sequence row ", seq, " outside the block tables (",
                 s.num_seq_rows, " rows)");
    LAMINA_CHECK(pos >= 0 && pos < s.max_seq_len(), "token ", t, ": position ", pos, " outside the KV cache (",
                 s.max_seq_len(), " positions a sequence)");
    for (int p = whole_prefix ? 0 : pos; p <= pos; p = (p / s.tokens_per_block + 1) * s.tokens_per_block)
      LAMINA_CHECK(kv_cache_row(c.block_tables, s, seq, p) >= 0, "token ", t, ": block ",
                   c.block_tables[size_t(seq) * size_t(s.max_blocks_per_seq) + size_t(p / s.tokens_per_block)],
                   " (entry ", p / s.tokens_per_block, " of sequence row ", seq, ") is not a block of the pool (",
                   s.num_blocks, " blocks)");
  }
}

// x[i] = e4m3(x[i] / scale) * scale: what an FP8 KV cache stores and reads back (saturating at
// +-448 * scale, round to nearest even; common/quant.h's encoder).
void round_through_e4m3(float* x, size_t n, float scale) {
  for (size_t i = 0; i < n; ++i) x[i] = f8e4m3_to_float(float_to_f8e4m3(x[i] / scale)) * scale;
}

class CpuBackend final : public Backend {
 public:
  DeviceKind kind() const override { return DeviceKind::CPU; }
  std::string name() const override { return "cpu"; }
  DType activation_dtype() const override { return DType::F32; }
  DType kv_dtype(bool) const override { return DType::F32; }

  void* alloc(size_t bytes) override {
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) fail("out of host memory allocating ", bytes, " bytes");
    return p;
  }
  void free(void* p) override { std::free(p); }
  void copy_to_device(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void copy_to_host(void* dst, const void* src, size_t bytes) override { std::memcpy(dst, src, bytes); }
  void synchronize() override {}

  void* upload_weight(const void* host, DType dtype, size_t n) override {
    auto* w = static_cast<float*>(alloc(n * sizeof(float)));
    convert_to_f32(host, dtype, w, n);
    return w;
  }
  void activations_to_host_f32(float* dst, const void* src, size_t n) override { std::memcpy(dst, src, n * 4); }

  // out[T,H] = table[ids[t]]
  void embedding(void* out, const int32_t* ids, const void* table, int T, int H) override {
    auto* o = static_cast<float*>(out);
    auto* tab = static_cast<const float*>(table);
    for (int t = 0; t < T; ++t) std::memcpy(o + size_t(t) * H, tab + size_t(ids[t]) * H, size_t(H) * 4);
  }

  void rms_norm(void* out, const void* x, const void* w, int T, int H, float eps) override {
    auto* o = static_cast<float*>(out);
    auto* in = static_cast<const float*>(x);
    auto* g = static_cast<const float*>(w);
#pragma omp parallel for
    for (int t = 0; t < T; ++t) {
      const float* row = in + size_t(t) * H;
      double ss = 0;
      for (int i = 0; i < H; ++i) ss += double(row[i]) * row[i];
      const float inv = 1.0f / std::sqrt(float(ss / H) + eps);
      for (int i = 0; i < H; ++i) o[size_t(t) * H + i] = row[i] * inv * g[i];
    }
  }

  void add_rms_norm(void* residual, const void* x, void* out, const void* w, int T, int H, float eps) override {
    add(residual, x, size_t(T) * H);
    rms_norm(out, residual, w, T, H, eps);
  }

  void add(void* residual, const void* x, size_t n) override {
    auto* r = static_cast<float*>(residual);
    auto* in = static_cast<const float*>(x);
    for (size_t i = 0; i < n; ++i) r[i] += in[i];
  }

  // out[M,N] = x[M,K] · w[N,K]^T — dot products over contiguous rows of both.
  void matmul(void* out, const void* x, const void* w, int M, int N, int K) override {
    auto* o = static_cast<float*>(out);
    auto* a = static_cast<const float*>(x);
    auto* b = static_cast<const float*>(w);
#pragma omp parallel for collapse(2) schedule(static)
    for (int m = 0; m < M; ++m) {
      for (int n = 0; n < N; ++n) {
        const float* ar = a + size_t(m) * K;
        const float* br = b + size_t(n) * K;
        float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
        for (int k = 0; k < K; ++k) acc += ar[k] * br[k];
        o[size_t(m) * N + n] = acc;
      }
    }
  }

  // Float32 activations: the sum rounds once either way.
  bool matmul_accumulate(void* residual, const void* x, const void* w, int M, int N, int K) override {
    std::vector<float> product(size_t(M) * size_t(N));
    matmul(product.data(), x, w, M, N, K);
    add(residual, product.data(), product.size());
    return true;
  }
  bool silu_mul_matmul_accumulate(void* residual, void* mlp, const void* gate_up, const void* w, int T, int N,
                                  int F) override {
    silu_mul(mlp, gate_up, T, F);
    return matmul_accumulate(residual, mlp, w, T, N, F);
  }

  void rope_kv_write(void* qkv, const int32_t* positions, const int32_t* slots, const float* inv_freq,
                     KVCacheLayer cache, const AttentionShape& s, int T) override {
    check_kv_rows(positions, slots, cache, s, T, /*whole_prefix=*/false);
    auto* buf = static_cast<float*>(qkv);
    const int D = s.head_dim, half = D / 2;
    const int row = (s.num_q_heads + 2 * s.num_kv_heads) * D;
    for (int t = 0; t < T; ++t) {
      float* tok = buf + size_t(t) * row;
      const int pos = positions[t];
      // q heads then k heads are consecutive in the row: rotate all of them.
      for (int h = 0; h < s.num_q_heads + s.num_kv_heads; ++h) {
        float* v = tok + size_t(h) * D;
        for (int i = 0; i < half; ++i) {
          const double angle = double(pos) * inv_freq[i];
          const float c = float(std::cos(angle)), sn = float(std::sin(angle));
          const float x0 = v[i], x1 = v[i + half];
          v[i] = x0 * c - x1 * sn;
          v[i + half] = x1 * c + x0 * sn;
        }
      }
      // k, v of this token -> pool row of (slots[t], pos): [Hkv, D] each
      const size_t kv_row = size_t(s.num_kv_heads) * D;
      const size_t at = size_t(kv_cache_row(cache.block_tables, s, slots[t], pos)) * kv_row;
      std::memcpy(static_cast<float*>(cache.k) + at, tok + size_t(s.num_q_heads) * D, kv_row * 4);
      std::memcpy(static_cast<float*>(cache.v) + at, tok + size_t(s.num_q_heads + s.num_kv_heads) * D, kv_row * 4);
      if (cache.fp8_e4m3) {  // an FP8 cache holds e4m3(x / scale): keep exactly what it reads back
        round_through_e4m3(static_cast<float*>(cache.k) + at, kv_row, cache.k_scale);
        round_through_e4m3(static_cast<float*>(cache.v) + at, kv_row, cache.v_scale);
      }
    }
  }

  void attention(void* out, const void* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                 const AttentionShape& s, int T) override {
    check_kv_rows(positions, slots, cache, s, T, /*whole_prefix=*/true);
    auto* o = static_cast<float*>(out);
    auto* in = static_cast<const float*>(qkv);
    const int D = s.head_dim, group = s.num_q_heads / s.num_kv_heads;
    const int row = (s.num_q_heads + 2 * s.num_kv_heads) * D;
    const size_t kv_row = size_t(s.num_kv_heads) * D;
    const float scale = 1.0f / std::sqrt(float(D));
#pragma omp parallel for collapse(2)
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < s.num_q_heads; ++h) {
        const float* q = in + size_t(t) * row + size_t(h) * D;
        const int kvh = h / group, len = positions[t] + 1;
        // key/value j of this head: pool row kv_cache_row(seq, j), head kvh
        auto key = [&](int j) {
          return static_cast<const float*>(cache.k) +
                 size_t(kv_cache_row(cache.block_tables, s, slots[t], j)) * kv_row + size_t(kvh) * D;
        };
        auto value = [&](int j) {
          return static_cast<const float*>(cache.v) +
                 size_t(kv_cache_row(cache.block_tables, s, slots[t], j)) * kv_row + size_t(kvh) * D;
        };
        std::vector<float> score(static_cast<size_t>(len));
        float mx = -INFINITY;
        for (int j = 0; j < len; ++j) {
          const float* k = key(j);
          float dot = 0;
          for (int i = 0; i < D; ++i) dot += q[i] * k[i];
          score[size_t(j)] = dot * scale;
          mx = std::max(mx, score[size_t(j)]);
        }
        double sum = 0;
        for (int j = 0; j < len; ++j) sum += (score[size_t(j)] = std::exp(score[size_t(j)] - mx));
        float* dst = o + size_t(t) * s.num_q_heads * D + size_t(h) * D;
        for (int i = 0; i < D; ++i) dst[i] = 0;
        for (int j = 0; j < len; ++j) {
          const float p = float(score[size_t(j)] / sum);
          const float* v = value(j);
          for (int i = 0; i < D; ++i) dst[i] += p * v[i];
        }
      }
    }
  }

  void silu_mul(void* out, const void* gate_up, int T, int F) override {
    auto* o = static_cast<float*>(out);
    auto* in = static_cast<const float*>(gate_up);
    for (int t = 0; t < T; ++t) {
      const float* g = in + size_t(t) * 2 * F;
      const float* u = g + F;
      for (int i = 0; i < F; ++i) o[size_t(t) * F + i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
  }

  void gather_rows(void* out, const void* x, const int32_t* rows, int num_rows, int H) override {
    for (int i = 0; i < num_rows; ++i)
      std::memcpy(static_cast<float*>(out) + size_t(i) * H, static_cast<const float*>(x) + size_t(rows[i]) * H,
                  size_t(H) * 4);
  }

  void select_tokens(int32_t* ids, const void* logits, int R, int V, const TokenChoice* choices) override {
#pragma omp parallel for
    for (int r = 0; r < R; ++r) ids[r] = choose_token(static_cast<const float*>(logits) + size_t(r) * V, V, choices[r]);
  }
  void slice_argmax_rows(SliceArgmax* out, const void* logits, int R, int V, int64_t row_stride) override {
    const TokenChoice greedy{0.0f, 0, 1.0f, 0.0f};
    for (int r = 0; r < R; ++r) {
      const float* row = static_cast<const float*>(logits) + r * row_stride;
      const int32_t i = choose_token(row, V, greedy);
      out[r] = SliceArgmax{row[i], i};
    }
  }
  void advance_fed_inputs(int32_t* ids, int32_t* positions, const int32_t* logit_rows, const int32_t* chosen,
                          int T) override {
    std::vector<int32_t> next(static_cast<size_t>(T));
    for (int t = 0; t < T; ++t) next[size_t(t)] = positions[logit_rows[t]] + 1;
    for (int t = 0; t < T; ++t) ids[t] = chosen[t], positions[t] = next[size_t(t)];
  }
  void resolve_fed_ids(int32_t* ids, const int32_t* chosen, int T) override {
    for (int t = 0; t < T; ++t)
      if (ids[t] < 0) ids[t] = chosen[-ids[t] - 1];
  }
  void spread_slice_argmax(float* gathered, const SliceArgmax* mine, int R, int rank, int tp) override {
    std::fill(gathered, gathered + size_t(R) * size_t(tp) * 2, 0.0f);
    for (int r = 0; r < R; ++r) {
      float* slot = gathered + (size_t(r) * size_t(tp) + size_t(rank)) * 2;
      slot[0] = mine ? mine[r].value : std::numeric_limits<float>::quiet_NaN();
      slot[1] = mine ? float(mine[r].index) : 0.0f;
    }
  }
  void join_slice_argmax(int32_t* ids, const float* gathered, int R, int tp, int64_t vocab_per_rank) override {
    std::vector<SliceArgmax> slices(static_cast<size_t>(tp));
    for (int r = 0; r < R; ++r) {
      for (int k = 0; k < tp; ++k) {
        const float* slot = gathered + (size_t(r) * size_t(tp) + size_t(k)) * 2;
        slices[size_t(k)] = SliceArgmax{slot[0], int32_t(slot[1])};
      }
      ids[r] = combine_slice_argmax(slices.data(), tp, vocab_per_rank);
    }
  }
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend() { return std::make_unique<CpuBackend>(); }

}  // namespace lamina
