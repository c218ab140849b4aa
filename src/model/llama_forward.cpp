#include "model/llama_forward.h"

#include "common/error.h"
#include "model/rope.h"

namespace lamina {

LlamaForward::LlamaForward(const ModelConfig& cfg, Backend* backend, Communicator* comm, RankWeights weights,
                           const ForwardLimits& limits)
    : cfg_(cfg), be_(backend), comm_(comm), w_(std::move(weights)), lim_(limits) {
  attn_.num_q_heads = static_cast<int>(cfg.q_heads_per_rank());
  attn_.num_kv_heads = static_cast<int>(cfg.kv_heads_per_rank());
  attn_.head_dim = static_cast<int>(cfg.head_size);
  attn_.max_seq_len = limits.max_seq_len;
  attn_.num_slots = limits.num_slots;
  H_ = cfg.hidden_size;
  F_ = cfg.intermediate_per_rank();
  qkv_rows_ = cfg.qkv_rows_per_rank();
  q_width_ = int64_t(attn_.num_q_heads) * attn_.head_dim;
  vocab_rank_ = cfg.vocab_per_rank();

  const size_t act = dtype_size(be_->activation_dtype());
  const size_t T = size_t(limits.max_tokens);
  const std::vector<float> inv_freq = rope_inv_freq(cfg);
  inv_freq_ = DeviceBuffer(be_, inv_freq.size() * sizeof(float));
  be_->copy_to_device(inv_freq_.get(), inv_freq.data(), inv_freq.size() * sizeof(float));
  for (auto* b : {&ids_, &positions_, &slots_, &rows_}) *b = DeviceBuffer(be_, T * sizeof(int32_t));
  residual_ = DeviceBuffer(be_, T * size_t(H_) * act);     // [T, H]
  normed_ = DeviceBuffer(be_, T * size_t(H_) * act);       // [T, H]
  qkv_ = DeviceBuffer(be_, T * size_t(qkv_rows_) * act);   // [T, (Hq + 2 Hkv) D]
  attn_out_ = DeviceBuffer(be_, T * size_t(q_width_) * act);  // [T, Hq D]
  proj_ = DeviceBuffer(be_, T * size_t(H_) * act);         // [T, H]
  gate_up_ = DeviceBuffer(be_, T * size_t(2 * F_) * act);  // [T, 2F]
  mlp_ = DeviceBuffer(be_, T * size_t(F_) * act);          // [T, F]
  last_ = DeviceBuffer(be_, T * size_t(H_) * act);         // [rows, H]
  logits_ = DeviceBuffer(be_, T * size_t(vocab_rank_) * act);  // [rows, V_rank]
  choices_ = DeviceBuffer(be_, T * sizeof(TokenChoice));
  chosen_ = DeviceBuffer(be_, T * sizeof(int32_t));

  const size_t cache_bytes = size_t(limits.num_slots) * size_t(limits.max_seq_len) * size_t(attn_.num_kv_heads) *
                             size_t(attn_.head_dim) * dtype_size(be_->kv_dtype());
  for (int64_t l = 0; l < cfg.num_hidden_layers; ++l) {
    k_cache_.emplace_back(be_, cache_bytes);
    v_cache_.emplace_back(be_, cache_bytes);
  }
}

void LlamaForward::step(const std::vector<int32_t>& ids, const std::vector<int32_t>& positions,
                        const std::vector<int32_t>& slots, const std::vector<int32_t>& logit_rows) {
  const int T = static_cast<int>(ids.size());
  const int R = static_cast<int>(logit_rows.size());
  LAMINA_CHECK(T > 0 && T <= lim_.max_tokens, "step of ", T, " tokens exceeds max_num_tokens ", lim_.max_tokens);
  LAMINA_CHECK(positions.size() == ids.size() && slots.size() == ids.size(), "ids/positions/slots differ in length");
  LAMINA_CHECK(R <= T, "more logit rows than tokens");
  for (int t = 0; t < T; ++t) {
    LAMINA_CHECK(ids[size_t(t)] >= 0 && ids[size_t(t)] < cfg_.vocab_size, "token id ", ids[size_t(t)],
                 " is outside the vocabulary [0, ", cfg_.vocab_size, ")");
    LAMINA_CHECK(positions[size_t(t)] >= 0 && positions[size_t(t)] < lim_.max_seq_len, "position ",
                 positions[size_t(t)], " exceeds the engine's max_seq_len ", lim_.max_seq_len);
    LAMINA_CHECK(slots[size_t(t)] >= 0 && slots[size_t(t)] < lim_.num_slots, "bad KV slot");
  }
  be_->copy_to_device(ids_.get(), ids.data(), size_t(T) * 4);
  be_->copy_to_device(positions_.get(), positions.data(), size_t(T) * 4);
  be_->copy_to_device(slots_.get(), slots.data(), size_t(T) * 4);
  be_->copy_to_device(rows_.get(), logit_rows.data(), size_t(R) * 4);

  // Small steps (decode) repeat with identical shapes: let the backend record and replay them.
  if (T <= kMaxRecordedTokens) {
    be_->run_recorded((uint64_t(T) << 32) | uint64_t(R), [&] { run_layers(T, R); });
  } else {
    run_layers(T, R);
  }
}

void LlamaForward::run_layers(int T, int R) {
  const auto* pos = positions_.as<int32_t>();
  const auto* slot = slots_.as<int32_t>();
  const float eps = static_cast<float>(cfg_.norm_epsilon);
  const DType act = be_->activation_dtype();
  const int H = int(H_), F = int(F_);

  // residual[T,H] = embedding[ids]; normed = input_norm_0(residual)
  be_->embedding(residual_.get(), ids_.as<int32_t>(), w_.embedding, T, H);
  be_->rms_norm(normed_.get(), residual_.get(), w_.layers[0].input_norm, T, H, eps);

  for (size_t l = 0; l < w_.layers.size(); ++l) {
    const LayerWeights& lw = w_.layers[l];
    const KVCacheLayer cache{k_cache_[l].get(), v_cache_[l].get()};
    // Attention: qkv = normed · Wqkv^T; rotate q,k; append k,v to the cache; attend; project.
    be_->matmul(qkv_.get(), normed_.get(), lw.qkv, T, int(qkv_rows_), H);
    be_->rope_kv_write(qkv_.get(), pos, slot, inv_freq_.as<float>(), cache, attn_, T);
    be_->attention(attn_out_.get(), qkv_.get(), pos, slot, cache, attn_, T);
    be_->matmul(proj_.get(), attn_out_.get(), lw.attn_out, T, H, int(q_width_));
    comm_->all_reduce_sum(proj_.get(), size_t(T) * H, act);  // row-parallel: sum partial outputs
    // residual += attention out; normed = post_norm(residual)
    be_->add_rms_norm(residual_.get(), proj_.get(), normed_.get(), lw.post_norm, T, H, eps);
    // MLP: down(silu(gate) * up)
    be_->matmul(gate_up_.get(), normed_.get(), lw.gate_up, T, 2 * F, H);
    if (!be_->swiglu_matmul(proj_.get(), gate_up_.get(), lw.down, T, H, F)) {
      be_->silu_mul(mlp_.get(), gate_up_.get(), T, F);
      be_->matmul(proj_.get(), mlp_.get(), lw.down, T, H, F);
    }
    comm_->all_reduce_sum(proj_.get(), size_t(T) * H, act);
    // residual += mlp out; normed = next layer's input_norm (or the final norm)
    const void* next_norm = l + 1 < w_.layers.size() ? w_.layers[l + 1].input_norm : w_.final_norm;
    be_->add_rms_norm(residual_.get(), proj_.get(), normed_.get(), next_norm, T, H, eps);
  }
  if (R == 0) return;
  // logits[R, V_rank] = normed[logit_rows] · lm_head^T
  be_->gather_rows(last_.get(), normed_.get(), rows_.as<int32_t>(), R, H);
  be_->matmul(logits_.get(), last_.get(), w_.lm_head, R, int(vocab_rank_), H);
}

std::vector<float> LlamaForward::logit_rows_f32(const std::vector<int32_t>& rows) const {
  const size_t V = size_t(vocab_rank_), row_bytes = V * dtype_size(be_->activation_dtype());
  std::vector<float> out(rows.size() * V);
  for (size_t i = 0; i < rows.size(); ++i)
    be_->activations_to_host_f32(out.data() + i * V, logits_.as<char>() + size_t(rows[i]) * row_bytes, V);
  return out;
}

std::vector<int32_t> LlamaForward::choose_tokens(const std::vector<TokenChoice>& choices) {
  LAMINA_CHECK(vocab_rank_ == cfg_.vocab_size, "choosing tokens on the device needs the whole vocabulary on one rank");
  const int R = static_cast<int>(choices.size());
  LAMINA_CHECK(R <= lim_.max_tokens, "more token choices than logit rows");
  std::vector<int32_t> ids(choices.size());
  if (R == 0) return ids;
  be_->copy_to_device(choices_.get(), choices.data(), choices.size() * sizeof(TokenChoice));
  be_->select_tokens(chosen_.as<int32_t>(), logits_.get(), R, int(vocab_rank_), choices_.as<TokenChoice>());
  be_->copy_to_host(ids.data(), chosen_.get(), ids.size() * sizeof(int32_t));
  return ids;
}

std::vector<float> LlamaForward::logits_f32(int rows) const {
  std::vector<float> out(size_t(rows) * size_t(vocab_rank_));
  be_->activations_to_host_f32(out.data(), logits_.get(), out.size());
  return out;
}

}  // namespace lamina
