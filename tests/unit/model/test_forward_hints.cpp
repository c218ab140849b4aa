// What the forward tells the fused all-reduce + norm about the projection after it (L2Prefetch,
// which the CUDA peer all-reduce asks L2 for while it waits on its peers): after the attention's
// all-reduce the layer's gate_up weights, after the MLP's the next layer's qkv weights, after the
// last layer's nothing; and what it tells the attention (AttentionShape::next, which the CUDA
// one-token attention's split reduce asks L2 for): the layer's attention-out weights. Nothing at
// all for a quantized engine, whose weight pointers are handles, not bytes. A tiny tp 2 model on
// the CPU backend, rank 0, with a communicator that records the hints and leaves the sums to the
// forward's unfused path, and a backend that records the attention's.
#include <gtest/gtest.h>

#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "model/llama_forward.h"

namespace lamina {
namespace {

class HintRecordingCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 2; }
  void all_reduce_sum(void*, size_t, DType) override {}  // rank 0's partial sums stand for the sum
  bool all_reduce_add_rms_norm(const void*, void*, void*, const void*, int, int, float, DType,
                               L2Prefetch next) override {
    hints.push_back(next);
    return false;  // the forward then runs all_reduce_sum and add_rms_norm itself
  }
  std::vector<L2Prefetch> hints;
};

// The CPU backend, recording AttentionShape::next at every attention. Only what a Backend must
// implement is passed on; the optional fused ops keep their defaults (the forward's unfused path).
class AttentionHintRecordingBackend final : public Backend {
 public:
  explicit AttentionHintRecordingBackend(std::unique_ptr<Backend> inner) : in_(std::move(inner)) {}
  std::vector<L2Prefetch> hints;

  void attention(void* out, const void* qkv, const int32_t* positions, const int32_t* slots, KVCacheLayer cache,
                 const AttentionShape& s, int T) override {
    hints.push_back(s.next);
    in_->attention(out, qkv, positions, slots, cache, s, T);
  }
  DeviceKind kind() const override { return in_->kind(); }
  std::string name() const override { return in_->name(); }
  DType activation_dtype() const override { return in_->activation_dtype(); }
  DType kv_dtype(bool fp8_cache) const override { return in_->kv_dtype(fp8_cache); }
  void* alloc(size_t bytes) override { return in_->alloc(bytes); }
  void free(void* p) override { in_->free(p); }
  void copy_to_device(void* dst, const void* src, size_t bytes) override { in_->copy_to_device(dst, src, bytes); }
  void copy_to_host(void* dst, const void* src, size_t bytes) override { in_->copy_to_host(dst, src, bytes); }
  void synchronize() override { in_->synchronize(); }
  void* upload_weight(const void* host, DType dtype, size_t n) override { return in_->upload_weight(host, dtype, n); }
  void activations_to_host_f32(float* dst, const void* src, size_t n) override {
    in_->activations_to_host_f32(dst, src, n);
  }
  void embedding(void* out, const int32_t* ids, const void* table, int T, int H) override {
    in_->embedding(out, ids, table, T, H);
  }
  void rms_norm(void* out, const void* x, const void* w, int T, int H, float eps) override {
    in_->rms_norm(out, x, w, T, H, eps);
  }
  void add_rms_norm(void* residual, const void* x, void* out, const void* w, int T, int H, float eps) override {
    in_->add_rms_norm(residual, x, out, w, T, H, eps);
  }
  void add(void* residual, const void* x, size_t n) override { in_->add(residual, x, n); }
  void matmul(void* out, const void* x, const void* w, int M, int N, int K) override {
    in_->matmul(out, x, w, M, N, K);
  }
  void rope_kv_write(void* qkv, const int32_t* positions, const int32_t* slots, const float* inv_freq,
                     KVCacheLayer cache, const AttentionShape& s, int T) override {
    in_->rope_kv_write(qkv, positions, slots, inv_freq, cache, s, T);
  }
  void silu_mul(void* out, const void* gate_up, int T, int F) override { in_->silu_mul(out, gate_up, T, F); }
  void gather_rows(void* out, const void* x, const int32_t* rows, int num_rows, int H) override {
    in_->gather_rows(out, x, rows, num_rows, H);
  }
  void select_tokens(int32_t* ids, const void* logits, int R, int V, const TokenChoice* choices) override {
    in_->select_tokens(ids, logits, R, V, choices);
  }
  void slice_argmax_rows(SliceArgmax* out, const void* logits, int R, int V, int64_t row_stride) override {
    in_->slice_argmax_rows(out, logits, R, V, row_stride);
  }
  void advance_fed_inputs(int32_t* ids, int32_t* positions, const int32_t* logit_rows, const int32_t* chosen,
                          int T) override {
    in_->advance_fed_inputs(ids, positions, logit_rows, chosen, T);
  }
  void resolve_fed_ids(int32_t* ids, const int32_t* chosen, int T) override { in_->resolve_fed_ids(ids, chosen, T); }
  void spread_slice_argmax(float* gathered, const SliceArgmax* mine, int R, int rank, int tp) override {
    in_->spread_slice_argmax(gathered, mine, R, rank, tp);
  }
  void join_slice_argmax(int32_t* ids, const float* gathered, int R, int tp, int64_t vocab_per_rank) override {
    in_->join_slice_argmax(ids, gathered, R, tp, vocab_per_rank);
  }

 private:
  std::unique_ptr<Backend> in_;
};

ModelConfig tiny_tp2_config() {
  ModelConfig cfg;
  cfg.dtype = "float32";
  cfg.vocab_size = 64;
  cfg.hidden_size = 32;
  cfg.intermediate_size = 64;
  cfg.num_hidden_layers = 3;
  cfg.num_attention_heads = 4;
  cfg.num_key_value_heads = 2;
  cfg.head_size = 8;
  cfg.max_position_embeddings = 64;
  cfg.mapping.world_size = 2;
  cfg.mapping.tp_size = 2;
  return cfg;
}

struct Weights {
  RankWeights rank;
  std::vector<DeviceBuffer> keep;
};

// Rank 0's slices, random (never zeros), float32.
Weights random_rank_weights(Backend& be, const ModelConfig& cfg) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-0.5f, 0.5f);
  Weights w;
  auto upload = [&](int64_t rows, int64_t cols) {
    std::vector<float> host(size_t(rows * cols));
    for (float& v : host) v = u(rng);
    void* p = be.upload_weight(host.data(), DType::F32, host.size());
    w.keep.push_back(DeviceBuffer::adopt(&be, p, host.size() * sizeof(float)));
    return static_cast<const void*>(p);
  };
  const int64_t H = cfg.hidden_size, F = cfg.intermediate_per_rank();
  const int64_t q_width = cfg.q_heads_per_rank() * cfg.head_size;
  w.rank.embedding = upload(cfg.vocab_size, H);
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    LayerWeights lw;
    lw.input_norm = upload(1, H);
    lw.qkv = upload(cfg.qkv_rows_per_rank(), H);
    lw.attn_out = upload(H, q_width);
    lw.post_norm = upload(1, H);
    lw.gate_up = upload(2 * F, H);
    lw.down = upload(H, F);
    w.rank.layers.push_back(lw);
  }
  w.rank.final_norm = upload(1, H);
  w.rank.lm_head = upload(cfg.vocab_per_rank(), H);
  return w;
}

// The hints of one decode-sized step (one token) through the tiny model: the all-reduces', and
// the attention's into *attention_hints.
std::vector<L2Prefetch> hints_of_one_step(const ModelConfig& cfg, RankWeights* weights_out,
                                          std::vector<L2Prefetch>* attention_hints = nullptr) {
  auto recording = std::make_unique<AttentionHintRecordingBackend>(make_cpu_backend());
  AttentionHintRecordingBackend* seen = recording.get();
  std::unique_ptr<Backend> be = std::move(recording);
  HintRecordingCommunicator comm;
  Weights w = random_rank_weights(*be, cfg);
  *weights_out = w.rank;
  ForwardLimits limits;
  limits.max_tokens = 4;
  limits.max_seq_len = 32;
  limits.max_seqs = 1;
  limits.tokens_per_block = 8;
  limits.num_blocks = 4;
  LlamaForward forward(cfg, be.get(), &comm, w.rank, limits);
  StepBatch batch;
  batch.ids = {5};
  batch.positions = {0};
  batch.seq_rows = {0};
  batch.block_tables = {{0, 1, 2, 3}};
  batch.logit_rows = {0};
  forward.step(batch);
  if (attention_hints != nullptr) *attention_hints = seen->hints;
  return comm.hints;
}

TEST(ForwardHints, AllReduceIsToldTheNextProjectionsWeights) {
  const ModelConfig cfg = tiny_tp2_config();
  RankWeights w;
  const std::vector<L2Prefetch> hints = hints_of_one_step(cfg, &w);
  const size_t H = size_t(cfg.hidden_size), f32 = sizeof(float);
  const size_t gate_up_bytes = size_t(2 * cfg.intermediate_per_rank()) * H * f32;
  const size_t qkv_bytes = size_t(cfg.qkv_rows_per_rank()) * H * f32;
  ASSERT_EQ(hints.size(), 2 * w.layers.size()) << "two fused calls a layer";
  for (size_t l = 0; l < w.layers.size(); ++l) {
    const L2Prefetch& after_attention = hints[2 * l];
    EXPECT_EQ(after_attention.p, w.layers[l].gate_up) << "layer " << l;
    EXPECT_EQ(after_attention.bytes, gate_up_bytes) << "layer " << l;
    const L2Prefetch& after_mlp = hints[2 * l + 1];
    if (l + 1 < w.layers.size()) {
      EXPECT_EQ(after_mlp.p, w.layers[l + 1].qkv) << "layer " << l;
      EXPECT_EQ(after_mlp.bytes, qkv_bytes) << "layer " << l;
    } else {  // the final norm is read by lm_head through gather_rows: no hint
      EXPECT_EQ(after_mlp.p, nullptr);
      EXPECT_EQ(after_mlp.bytes, 0u);
    }
  }
}

TEST(ForwardHints, AttentionIsToldTheAttentionOutWeights) {
  const ModelConfig cfg = tiny_tp2_config();
  RankWeights w;
  std::vector<L2Prefetch> attention;
  hints_of_one_step(cfg, &w, &attention);
  const size_t q_width = size_t(cfg.q_heads_per_rank() * cfg.head_size);
  ASSERT_EQ(attention.size(), w.layers.size()) << "one attention a layer";
  for (size_t l = 0; l < w.layers.size(); ++l) {
    EXPECT_EQ(attention[l].p, w.layers[l].attn_out) << "layer " << l;
    EXPECT_EQ(attention[l].bytes, size_t(cfg.hidden_size) * q_width * sizeof(float)) << "layer " << l;
  }
}

TEST(ForwardHints, QuantizedEngineGivesNone) {
  ModelConfig cfg = tiny_tp2_config();
  cfg.quant_algo = "W8A16";  // the forward's rule only: a quantized engine's weight is a handle
  RankWeights w;
  std::vector<L2Prefetch> attention;
  const std::vector<L2Prefetch> hints = hints_of_one_step(cfg, &w, &attention);
  ASSERT_EQ(hints.size(), 2 * w.layers.size());
  ASSERT_EQ(attention.size(), w.layers.size());
  const std::vector<L2Prefetch>* lists[] = {&hints, &attention};
  for (const std::vector<L2Prefetch>* list : lists)
    for (const L2Prefetch& h : *list) {
      EXPECT_EQ(h.p, nullptr);
      EXPECT_EQ(h.bytes, 0u);
    }
}

}  // namespace
}  // namespace lamina
