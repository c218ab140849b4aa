#include "model/llama_forward.h"

#include <algorithm>
#include <climits>
#include <limits>

#include "common/error.h"
#include "model/rope.h"

namespace lamina {

LlamaForward::LlamaForward(const ModelConfig& cfg, Backend* backend, Communicator* comm, RankWeights weights,
                           const ForwardLimits& limits)
    : cfg_(cfg), be_(backend), comm_(comm), w_(std::move(weights)), lim_(limits) {
  attn_.num_q_heads = static_cast<int>(cfg.q_heads_per_rank());
  attn_.num_kv_heads = static_cast<int>(cfg.kv_heads_per_rank());
  attn_.head_dim = static_cast<int>(cfg.head_size);
  LAMINA_CHECK(limits.tokens_per_block >= 1 && (limits.tokens_per_block & (limits.tokens_per_block - 1)) == 0,
               "tokens_per_block must be a power of two (got ", limits.tokens_per_block, ")");
  LAMINA_CHECK(limits.max_seqs >= 1, "the forward needs room for at least one sequence");
  attn_.tokens_per_block = limits.tokens_per_block;
  attn_.max_blocks_per_seq = (limits.max_seq_len + limits.tokens_per_block - 1) / limits.tokens_per_block;
  attn_.num_seq_rows = limits.max_seqs;
  attn_.num_blocks = 0;
  attn_.inputs_ready_before_step = true;  // a step's inputs are uploaded before its first op
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
  argmax_ = DeviceBuffer(be_, T * sizeof(SliceArgmax));
  gathered_argmax_ = DeviceBuffer(be_, T * size_t(comm_->world_size()) * 2 * sizeof(float));
  // The real tokens of this rank's vocabulary slice, and lm_head's screen over them.
  const int64_t first = int64_t(comm_->rank()) * vocab_rank_;
  vocab_valid_ = std::max<int64_t>(0, std::min<int64_t>(vocab_rank_, cfg_.vocab_size - first));
  if (limits.screen_lm_head && vocab_valid_ > 0) {
    const size_t bytes = be_->lm_head_screen_bytes(w_.lm_head, int(vocab_valid_), int(H_));
    if (bytes > 0) {
      lm_head_screen_ = DeviceBuffer(be_, bytes);
      be_->make_lm_head_screen(lm_head_screen_.get(), w_.lm_head, int(vocab_valid_), int(H_));
    }
  }

  // Step inputs incl. block tables ([max_seqs, max_blocks_per_seq]; rows in use uploaded each step).
  const size_t inputs_n = 4 * T + size_t(limits.max_seqs) * size_t(attn_.max_blocks_per_seq);
  step_inputs_ = DeviceBuffer(be_, inputs_n * sizeof(int32_t));
  inputs_host_.assign(inputs_n, -1);
  be_->copy_to_device(step_inputs_.get(), inputs_host_.data(), inputs_n * sizeof(int32_t));
  prepare_matmuls(limits);
  if (limits.num_blocks > 0) allocate_kv_pool(limits.num_blocks);
}

void LlamaForward::prepare_matmuls(const ForwardLimits& limits) {
  // Layer 0 stands for every layer: the same shapes and weight formats. lm_head takes a row a
  // sequence (its last token), so up to max_seqs rows; a step wanting more plans them then.
  if (w_.layers.empty()) return;
  const LayerWeights& lw = w_.layers[0];
  const int T = limits.max_tokens, H = int(H_), F = int(F_);
  be_->prepare_matmul(qkv_.get(), normed_.get(), lw.qkv, T, int(qkv_rows_), H);
  be_->prepare_matmul(proj_.get(), attn_out_.get(), lw.attn_out, T, H, int(q_width_));
  be_->prepare_matmul(gate_up_.get(), normed_.get(), lw.gate_up, T, 2 * F, H);
  be_->prepare_matmul(proj_.get(), mlp_.get(), lw.down, T, H, F);
  if (w_.lm_head != nullptr)
    be_->prepare_matmul(logits_.get(), last_.get(), w_.lm_head, std::min(T, limits.max_seqs), int(vocab_rank_), H);
  be_->synchronize();
}

size_t LlamaForward::kv_block_bytes() const {
  // k and v of every layer: [tokens_per_block, Hkv, D] each
  return 2 * size_t(cfg_.num_hidden_layers) * size_t(attn_.tokens_per_block) * size_t(attn_.num_kv_heads) *
         size_t(attn_.head_dim) * dtype_size(be_->kv_dtype(kv_fp8()));
}

void LlamaForward::allocate_kv_pool(int num_blocks) {
  LAMINA_CHECK(attn_.num_blocks == 0, "the KV pool is already allocated");
  LAMINA_CHECK(num_blocks >= 1, "the KV pool needs at least one block (got ", num_blocks, ")");
  // Each layer: k and v pools of [num_blocks, tokens_per_block, Hkv, D] in kv dtype.
  const size_t pool_bytes = size_t(num_blocks) * size_t(attn_.tokens_per_block) * size_t(attn_.num_kv_heads) *
                            size_t(attn_.head_dim) * dtype_size(be_->kv_dtype(kv_fp8()));
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    k_cache_.emplace_back(be_, pool_bytes);
    v_cache_.emplace_back(be_, pool_bytes);
  }
  attn_.num_blocks = num_blocks;
}

void LlamaForward::check_step(const StepBatch& b) const {
  const int T = static_cast<int>(b.ids.size());
  const int R = static_cast<int>(b.logit_rows.size());
  const int S = static_cast<int>(b.block_tables.size());
  const int tpb = attn_.tokens_per_block;
  LAMINA_CHECK(attn_.num_blocks > 0, "the KV pool is not allocated");
  LAMINA_CHECK(T > 0 && T <= lim_.max_tokens, "step of ", T, " tokens exceeds max_num_tokens ", lim_.max_tokens);
  LAMINA_CHECK(b.positions.size() == b.ids.size() && b.seq_rows.size() == b.ids.size(),
               "ids/positions/seq_rows differ in length");
  LAMINA_CHECK(R <= T, "more logit rows than tokens");
  LAMINA_CHECK(S >= 1 && S <= lim_.max_seqs, "a step of ", S, " block tables: the engine takes 1 to ", lim_.max_seqs);
  for (int s = 0; s < S; ++s) {
    const std::vector<int32_t>& table = b.block_tables[size_t(s)];
    LAMINA_CHECK(int(table.size()) <= attn_.max_blocks_per_seq, "block table ", s, " lists ", table.size(),
                 " blocks; a sequence holds at most ", attn_.max_blocks_per_seq);
    for (int32_t id : table)
      LAMINA_CHECK(id >= 0 && id < attn_.num_blocks, "block table ", s, " holds block id ", id,
                   " outside the KV pool [0, ", attn_.num_blocks, ")");
  }
  for (int t = 0; t < T; ++t) {
    const int32_t id = b.ids[size_t(t)], pos = b.positions[size_t(t)], seq = b.seq_rows[size_t(t)];
    LAMINA_CHECK(id >= 0 && id < cfg_.vocab_size, "token id ", id, " is outside the vocabulary [0, ", cfg_.vocab_size,
                 ")");
    LAMINA_CHECK(pos >= 0 && pos < lim_.max_seq_len, "position ", pos, " exceeds the engine's max_seq_len ",
                 lim_.max_seq_len);
    LAMINA_CHECK(seq >= 0 && seq < S, "token ", t, " names block table ", seq, " but the step has ", S);
    LAMINA_CHECK(pos / tpb < int(b.block_tables[size_t(seq)].size()), "token ", t, " at position ", pos,
                 " needs block ", pos / tpb, " of its sequence, but its block table lists only ",
                 b.block_tables[size_t(seq)].size());
  }
  for (int32_t r : b.logit_rows) LAMINA_CHECK(r >= 0 && r < T, "logit row ", r, " is not a token of the step");
}

void LlamaForward::step(const StepBatch& b) {
  check_step(b);
  upload_inputs(b, false);
  run_step(int(b.ids.size()), int(b.logit_rows.size()), StepChoice::None);
}

void LlamaForward::step_fed(const StepBatch& b) {
  check_step(b);
  feed_inputs(b);
  run_step(int(b.ids.size()), int(b.logit_rows.size()), StepChoice::None);
}

uint64_t LlamaForward::step_and_start_choose(const StepBatch& b, bool fed, const std::vector<TokenChoice>& choices) {
  LAMINA_CHECK(vocab_rank_ == cfg_.vocab_size, "choosing tokens on the device needs the whole vocabulary on one rank");
  check_step(b);
  LAMINA_CHECK(!choices.empty() && choices.size() == b.logit_rows.size(), "one token choice per logit row is needed (",
               choices.size(), " for ", b.logit_rows.size(), " rows)");
  const bool greedy = std::all_of(choices.begin(), choices.end(), [](const TokenChoice& c) { return c.temperature <= 0; });
  if (greedy && can_screen(int(choices.size()))) return queue_step_and_choice(b, fed, StepChoice::GreedyScreened, true);
  prepare_choices(choices);
  return queue_step_and_choice(b, fed, StepChoice::Rows, true);
}

uint64_t LlamaForward::step_and_start_split_greedy(const StepBatch& b, bool fed, bool copy_back, bool keep_logits) {
  check_step(b);
  LAMINA_CHECK(!b.logit_rows.empty(), "a step whose tokens are chosen needs a logit row");
  // Ranks may differ here (a slice of padding only has no screen): both ways meet the others in the
  // same one all-reduce.
  const bool screened = !keep_logits && can_screen(int(b.logit_rows.size()));
  return queue_step_and_choice(b, fed, screened ? StepChoice::SplitGreedyScreened : StepChoice::SplitGreedy, copy_back);
}

bool LlamaForward::can_screen(int R) const {
  return lm_head_screen_.get() != nullptr && R >= 1 && R <= kMaxScreenedRows;
}

uint64_t LlamaForward::queue_step_and_choice(const StepBatch& b, bool fed, StepChoice choice, bool copy_back) {
  const int R = static_cast<int>(b.logit_rows.size());
  if (fed) feed_inputs(b);
  else upload_inputs(b, true);
  run_step(int(b.ids.size()), R, choice);
  chosen_rows_ = R;
  return copy_back ? be_->start_copy_to_host(chosen_.get(), size_t(R) * sizeof(int32_t)) : 0;
}

void LlamaForward::feed_inputs(const StepBatch& b) {
  const int T = static_cast<int>(b.ids.size());
  if (!b.fed_rows.empty() && !check_fed_rows(b, chosen_rows_)) {
    // Tokens name their rows: uploaded as -row - 1, then replaced on the device.
    StepBatch named = b;
    for (int t = 0; t < T; ++t)
      if (b.fed_rows[size_t(t)] >= 0) named.ids[size_t(t)] = -b.fed_rows[size_t(t)] - 1;
    upload_inputs(named, true);
    be_->resolve_fed_ids(step_inputs_.as<int32_t>(), chosen_.as<int32_t>(), T);
    return;
  }
  LAMINA_CHECK(T <= chosen_rows_, "a step of ", T, " tokens fed by the previous choice needs as many chosen ids (",
               chosen_rows_, " were chosen)");
  int32_t* inputs = step_inputs_.as<int32_t>();
  if (advances_last_inputs(b)) {
    // The device makes them from the last step's: one small kernel, no copies.
    be_->advance_fed_inputs(inputs, inputs + T, inputs + 3 * T, chosen_.as<int32_t>(), T);
    std::copy(b.positions.begin(), b.positions.end(), inputs_host_.begin() + T);
    return;
  }
  upload_inputs(b, true);
  // ids [T] come first in step_inputs_: the last choice's ids, device to device
  be_->copy_on_device(inputs, chosen_.get(), size_t(T) * sizeof(int32_t));
}

bool check_fed_rows(const StepBatch& b, int chosen_rows) {
  const int T = static_cast<int>(b.ids.size());
  LAMINA_CHECK(b.fed_rows.size() == b.ids.size(), "a fed step names a row for each of its ", T, " tokens, not ",
               b.fed_rows.size());
  bool in_order = true;
  for (int t = 0; t < T; ++t) {
    const int32_t row = b.fed_rows[size_t(t)];
    LAMINA_CHECK(row >= -1 && row < chosen_rows, "token ", t, " is fed by row ", row, " of the last choice, which has ",
                 chosen_rows, " rows");
    in_order = in_order && row == t;
  }
  return in_order;
}

bool LlamaForward::advances_last_inputs(const StepBatch& b) const {
  // Same shape as the last upload, token t one past the last step's logit row t, and the same
  // sequence rows, logit rows and block tables: advance_fed_inputs makes these inputs.
  const int T = static_cast<int>(b.ids.size());
  const int R = static_cast<int>(b.logit_rows.size());
  const int S = static_cast<int>(b.block_tables.size());
  if (T != uploaded_.T || R != uploaded_.R || S != uploaded_.S || T > R || T > 1024) return false;
  const int32_t* h = inputs_host_.data();
  for (int t = 0; t < T; ++t)
    if (b.positions[size_t(t)] != h[T + h[3 * T + t]] + 1 || b.seq_rows[size_t(t)] != h[2 * T + t]) return false;
  if (!std::equal(b.logit_rows.begin(), b.logit_rows.end(), h + 3 * T)) return false;
  const size_t width = size_t(attn_.max_blocks_per_seq);
  for (int s = 0; s < S; ++s) {
    const std::vector<int32_t>& table = b.block_tables[size_t(s)];
    const int32_t* row = h + 3 * T + R + size_t(s) * width;
    if (!std::equal(table.begin(), table.end(), row) ||
        !std::all_of(row + table.size(), row + width, [](int32_t id) { return id == -1; }))
      return false;
  }
  return true;
}

void LlamaForward::upload_inputs(const StepBatch& b, bool ordered) {
  const int T = static_cast<int>(b.ids.size());
  const int R = static_cast<int>(b.logit_rows.size());
  const int S = static_cast<int>(b.block_tables.size());

  // One upload for everything (each copy waits for the device: five of them cost a decode step
  // tens of microseconds of idle GPU). Ordered, it does not wait: a pipelined step is queued
  // behind the one in flight.
  const size_t width = size_t(attn_.max_blocks_per_seq);
  int32_t* h = inputs_host_.data();
  std::copy(b.ids.begin(), b.ids.end(), h);
  std::copy(b.positions.begin(), b.positions.end(), h + T);
  std::copy(b.seq_rows.begin(), b.seq_rows.end(), h + 2 * T);
  std::copy(b.logit_rows.begin(), b.logit_rows.end(), h + 3 * T);
  int32_t* tables = h + 3 * T + R;
  for (int s = 0; s < S; ++s) {
    const std::vector<int32_t>& table = b.block_tables[size_t(s)];
    int32_t* row = tables + size_t(s) * width;
    std::copy(table.begin(), table.end(), row);
    std::fill(row + table.size(), row + width, -1);
  }
  const size_t bytes = (size_t(3 * T + R) + size_t(S) * width) * sizeof(int32_t);
  if (ordered) be_->copy_to_device_ordered(step_inputs_.get(), h, bytes);
  else be_->copy_to_device(step_inputs_.get(), h, bytes);
  uploaded_ = {T, R, S};
}

void LlamaForward::run_step(int T, int R, StepChoice choice) {
  const bool screened = choice == StepChoice::GreedyScreened || choice == StepChoice::SplitGreedyScreened;
  const auto ops = [&] {
    run_layers(T, R, !screened);
    if (choice == StepChoice::Rows)
      be_->select_tokens(chosen_.as<int32_t>(), logits_.get(), R, int(vocab_rank_), choices_.as<TokenChoice>());
    else if (choice == StepChoice::GreedyScreened)
      be_->screened_argmax(nullptr, chosen_.as<int32_t>(), last_.get(), w_.lm_head, lm_head_screen_.get(),
                           logits_.get(), R, int(vocab_valid_), int(H_));
    else if (choice == StepChoice::SplitGreedy || choice == StepChoice::SplitGreedyScreened)
      split_greedy(R, screened);
  };
  // Small steps (decode) repeat with identical shapes: let the backend record and replay them,
  // token choice included (one recording a token). A replay may hold other sequences, so recorded
  // steps leave their prompt tiles unknown; others tell attention where they are (the host has the
  // step's sequence rows), which spares the kernels looking for them in every layer.
  if (T <= kMaxRecordedTokens) {
    attn_.prompt_tiles_end = -1;
    attn_.leading_prompt_tiles = 0;
    be_->run_recorded((uint64_t(T) << 32) | (uint64_t(R) << 8) | uint64_t(choice), ops);
  } else {
    describe_prompt_tiles(attn_, inputs_host_.data() + 2 * size_t(T), T);
    ops();
  }
}

LlamaForward::StepInputs LlamaForward::step_inputs(int T, int R) const {
  const auto* base = step_inputs_.as<int32_t>();
  return {base, base + T, base + 2 * T, base + 3 * T, base + 3 * T + R};
}

L2Prefetch LlamaForward::l2_prefetch_of(NextMatmul next) const {
  if (next.w == nullptr || !cfg_.quant_algo.empty()) return {};
  const int64_t cols = next.cols > 0 ? next.cols : H_;
  return {next.w, size_t(next.rows) * size_t(cols) * dtype_size(be_->activation_dtype())};
}

void LlamaForward::reduce_add_norm(const void* norm_weight, int T, float eps, NextMatmul next) {
  // One step where the communicator fuses them (GPUs with peer access, decode-sized T).
  if (comm_->all_reduce_add_rms_norm(proj_.get(), residual_.get(), normed_.get(), norm_weight, T, int(H_), eps,
                                     be_->activation_dtype(), l2_prefetch_of(next)))
    return;
  comm_->all_reduce_sum(proj_.get(), size_t(T) * size_t(H_), be_->activation_dtype());
  if (next.w != nullptr)
    be_->add_rms_norm_before_matmul(residual_.get(), proj_.get(), normed_.get(), norm_weight, T, int(H_), eps, next.w);
  else
    be_->add_rms_norm(residual_.get(), proj_.get(), normed_.get(), norm_weight, T, int(H_), eps);
}

void LlamaForward::project_add_norm(const void* x, const void* w, int K, const void* norm_weight, int T, float eps,
                                    NextMatmul next) {
  // One rank: the projection adds itself to the residual where the backend's matmul can (batched
  // T), and the norm then reads the residual alone.
  if (comm_->world_size() == 1 && be_->matmul_accumulate(residual_.get(), x, w, T, int(H_), K)) {
    norm_before(norm_weight, T, eps, next);
    return;
  }
  be_->matmul(proj_.get(), x, w, T, int(H_), K);
  reduce_add_norm(norm_weight, T, eps, next);
}

void LlamaForward::norm_before(const void* norm_weight, int T, float eps, NextMatmul next) {
  if (next.w != nullptr)
    be_->rms_norm_before_matmul(normed_.get(), residual_.get(), norm_weight, T, int(H_), eps, next.w);
  else
    be_->rms_norm(normed_.get(), residual_.get(), norm_weight, T, int(H_), eps);
}

void LlamaForward::run_layers(int T, int R, bool logits) {
  const StepInputs in = step_inputs(T, R);
  const bool one_rank = comm_->world_size() == 1;
  const int32_t* pos = in.positions;
  const int32_t* slot = in.seq_rows;
  const float eps = static_cast<float>(cfg_.norm_epsilon);
  const int H = int(H_), F = int(F_);

  // residual[T,H] = embedding[ids]; normed = input_norm_0(residual)
  be_->embedding(residual_.get(), in.ids, w_.embedding, T, H);
  be_->rms_norm(normed_.get(), residual_.get(), w_.layers[0].input_norm, T, H, eps);

  for (size_t l = 0; l < w_.layers.size(); ++l) {
    const LayerWeights& lw = w_.layers[l];
    // An FP8 cache's per-layer scales: 1.0 (no calibration data; docs/quantization.md).
    const KVCacheLayer cache{k_cache_[l].get(), v_cache_[l].get(), in.block_tables, kv_fp8(), 1.0f, 1.0f};
    // Attention: qkv = normed · Wqkv^T; rotate q,k; append k,v to the cache (one kernel where the
    // backend can); attend; project.
    if (!be_->qkv_rope_kv_write(qkv_.get(), normed_.get(), lw.qkv, T, H, pos, slot, inv_freq_.as<float>(), cache,
                                attn_)) {
      be_->matmul(qkv_.get(), normed_.get(), lw.qkv, T, int(qkv_rows_), H);
      be_->rope_kv_write(qkv_.get(), pos, slot, inv_freq_.as<float>(), cache, attn_, T);
    }
    attn_.next = l2_prefetch_of({lw.attn_out, H_, q_width_});  // the attention-out projection reads it next
    be_->attention(attn_out_.get(), qkv_.get(), pos, slot, cache, attn_, T);
    // residual += attention out (row-parallel: summed over the ranks); normed = post_norm(residual)
    project_add_norm(attn_out_.get(), lw.attn_out, int(q_width_), lw.post_norm, T, eps, {lw.gate_up, 2 * F_});
    // MLP: down(silu(gate) * up); the SwiGLU rides on the gate_up GEMV where the backend can (decode),
    // else on the down projection (silu_mul_matmul: over FP8 weights, its input quantization)
    // residual += Σ_ranks mlp out; normed = next layer's input_norm (for its qkv), or the final norm
    const bool last = l + 1 == w_.layers.size();
    const void* next_norm = last ? w_.final_norm : w_.layers[l + 1].input_norm;
    const NextMatmul next = last ? NextMatmul{} : NextMatmul{w_.layers[l + 1].qkv, qkv_rows_};
    if (be_->gate_up_swiglu(mlp_.get(), normed_.get(), lw.gate_up, T, F, H)) {
      project_add_norm(mlp_.get(), lw.down, F, next_norm, T, eps, next);
    } else {
      be_->matmul(gate_up_.get(), normed_.get(), lw.gate_up, T, 2 * F, H);
      if (!one_rank ||
          !be_->silu_mul_matmul_accumulate(residual_.get(), mlp_.get(), gate_up_.get(), lw.down, T, H, F)) {
        be_->silu_mul_matmul(proj_.get(), mlp_.get(), gate_up_.get(), lw.down, T, H, F);
        reduce_add_norm(next_norm, T, eps, next);
      } else {
        norm_before(next_norm, T, eps, next);
      }
    }
  }
  if (R == 0) return;
  // logits[R, V_rank] = normed[logit_rows] · lm_head^T
  be_->gather_rows(last_.get(), normed_.get(), in.logit_rows, R, H);
  if (logits) be_->matmul(logits_.get(), last_.get(), w_.lm_head, R, int(vocab_rank_), H);
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
  if (R == 0) return {};
  prepare_choices(choices);
  be_->select_tokens(chosen_.as<int32_t>(), logits_.get(), R, int(vocab_rank_), choices_.as<TokenChoice>());
  chosen_rows_ = R;
  return finish_choose(be_->start_copy_to_host(chosen_.get(), size_t(R) * sizeof(int32_t)), R);
}

void LlamaForward::split_greedy(int R, bool screened) {
  const int tp = comm_->world_size(), rank = comm_->rank();
  const int64_t valid = vocab_valid_;  // the slice's tokens, no padding
  if (valid > 0 && screened) {
    be_->screened_argmax(argmax_.as<SliceArgmax>(), nullptr, last_.get(), w_.lm_head, lm_head_screen_.get(),
                         logits_.get(), R, int(valid), int(H_));
  } else if (valid > 0) {
    be_->slice_argmax_rows(argmax_.as<SliceArgmax>(), logits_.get(), R, int(valid), vocab_rank_);
  }
  const SliceArgmax* mine = valid > 0 ? argmax_.as<SliceArgmax>() : nullptr;
  // One kernel where the communicator can (GPUs with peer access), else an all-gather over the
  // all-reduce: each rank's pairs into its slot of [R, tp, 2] zeros, summed, then joined.
  if (comm_->gather_slice_argmax(mine, chosen_.as<int32_t>(), R, vocab_rank_)) return;
  float* gathered = gathered_argmax_.as<float>();
  be_->spread_slice_argmax(gathered, mine, R, rank, tp);
  comm_->all_reduce_sum(gathered, size_t(R) * size_t(tp) * 2, DType::F32);
  be_->join_slice_argmax(chosen_.as<int32_t>(), gathered, R, tp, vocab_rank_);
}

std::vector<int32_t> LlamaForward::finish_choose(uint64_t ticket, int R) {
  std::vector<int32_t> ids(static_cast<size_t>(R));
  be_->finish_copy_to_host(ticket, ids.data());
  return ids;
}

void LlamaForward::prepare_choices(const std::vector<TokenChoice>& choices) {
  LAMINA_CHECK(choices.size() <= size_t(lim_.max_tokens), "more token choices than logit rows");
  const auto same = [](const TokenChoice& a, const TokenChoice& b) {
    return a.temperature == b.temperature && a.top_k == b.top_k && a.top_p == b.top_p && a.uniform == b.uniform;
  };
  if (choices.size() == choices_on_device_.size() &&
      std::equal(choices.begin(), choices.end(), choices_on_device_.begin(), same))
    return;
  be_->copy_to_device_ordered(choices_.get(), choices.data(), choices.size() * sizeof(TokenChoice));
  choices_on_device_ = choices;
}

std::vector<SliceArgmax> LlamaForward::slice_argmax(int R) {
  LAMINA_CHECK(R >= 0 && R <= lim_.max_tokens, "more argmax rows than logit rows");
  std::vector<SliceArgmax> out(static_cast<size_t>(R));
  if (R == 0) return out;
  const int64_t valid = vocab_valid_;  // tokens of the slice, no padding
  if (valid <= 0) {  // a slice of padding only: no candidate
    for (auto& s : out) s.value = std::numeric_limits<float>::quiet_NaN();
    return out;
  }
  // One kernel and one copy back (each copy waits for the device: a tensor-parallel decode step
  // ends with this on every rank).
  be_->slice_argmax_rows(argmax_.as<SliceArgmax>(), logits_.get(), R, int(valid), vocab_rank_);
  be_->copy_to_host(out.data(), argmax_.get(), out.size() * sizeof(SliceArgmax));
  return out;
}

std::vector<float> LlamaForward::logits_f32(int rows) const {
  std::vector<float> out(size_t(rows) * size_t(vocab_rank_));
  be_->activations_to_host_f32(out.data(), logits_.get(), out.size());
  return out;
}

}  // namespace lamina
