// The Llama forward pass for one tensor-parallel rank, written once over the Backend op set.
// Ranks run it in lockstep; the communicator sums the row-parallel outputs (attention out, MLP down).
#pragma once
#include <cstdint>
#include <vector>

#include "model/model_config.h"
#include "ops/backend.h"
#include "ops/communicator.h"

namespace lamina {

struct LayerWeights {
  const void* input_norm = nullptr;  // [H]
  const void* qkv = nullptr;         // [(Hq + 2 Hkv) D, H]
  const void* attn_out = nullptr;    // [H, Hq D]
  const void* post_norm = nullptr;   // [H]
  const void* gate_up = nullptr;     // [2 F, H]
  const void* down = nullptr;        // [H, F]
};

struct RankWeights {
  const void* embedding = nullptr;   // [V, H]
  std::vector<LayerWeights> layers;
  const void* final_norm = nullptr;  // [H]
  const void* lm_head = nullptr;     // [V_rank, H]
};

struct ForwardLimits {
  int max_tokens = 0;        // tokens in one step (prefill chunk or decode batch)
  int max_seq_len = 0;       // positions one sequence can hold
  int max_seqs = 1;          // sequences in one step (rows of the block tables)
  int tokens_per_block = 32; // KV cache rows per block
  int num_blocks = 0;        // blocks in each layer's KV pool; 0: allocate later (allocate_kv_pool)
  bool screen_lm_head = false;  // make lm_head's screen where the backend has one (EngineOptions)
};

// One step's inputs, as host arrays. Token t belongs to the sequence whose KV blocks are listed
// in block_tables[seq_rows[t]]; its k, v go to position positions[t] of that sequence, i.e. pool
// row block_tables[s][pos / tokens_per_block] * tokens_per_block + pos % tokens_per_block.
// A block may appear in several tables (a shared prefix): it is then only read, never written.
struct StepBatch {
  std::vector<int32_t> ids;                         // [T] token ids
  std::vector<int32_t> positions;                   // [T] index of each token in its sequence
  std::vector<int32_t> seq_rows;                    // [T] index into block_tables
  std::vector<std::vector<int32_t>> block_tables;   // [num_seqs][n] KV block ids of each sequence, in order
  std::vector<int32_t> logit_rows;                  // [R] tokens whose logits are wanted
  // A fed step (one fed by the last choice): [T] the last choice's row token t takes, -1 for a
  // token whose id is ids[t] (a prompt token); empty: token t takes row t.
  std::vector<int32_t> fed_rows;
};

// Checks a fed step's fed_rows: one per token, each -1 (a prompt token) or a row of the last
// choice's `chosen_rows`. Returns whether token t takes row t for every t (the plain fed form).
bool check_fed_rows(const StepBatch& batch, int chosen_rows);

class LlamaForward {
 public:
  LlamaForward(const ModelConfig& cfg, Backend* backend, Communicator* comm, RankWeights weights,
               const ForwardLimits& limits);

  // Allocates each layer's KV pool of num_blocks blocks (once; the constructor does it when
  // limits.num_blocks > 0). Sizing the pool after the activations lets the engine give it what
  // device memory is left.
  void allocate_kv_pool(int num_blocks);
  // Bytes one KV block takes over all layers (k and v).
  size_t kv_block_bytes() const;
  // Whether the KV cache is FP8 (kv_cache_quant_algo FP8): e4m3 pools on the GPU.
  bool kv_fp8() const { return cfg_.kv_cache_quant_algo == "FP8"; }
  int num_kv_blocks() const { return attn_.num_blocks; }
  int max_blocks_per_seq() const { return attn_.max_blocks_per_seq; }

  // One step over T tokens. Checks the batch (ids, positions, block tables: a block id outside
  // the pool or a table too short for a token's position is an error here, never a device fault),
  // then writes the logits of the rows listed in logit_rows (e.g. each sequence's last token) into
  // this rank's logits buffer: [logit_rows.size(), vocab_per_rank] in activation dtype.
  void step(const StepBatch& batch);
  // step() whose token t takes, on the device, the id that the last token choice (choose_tokens
  // or a step_and_start_*) picked for its row t; batch.ids are not read. Its inputs
  // go up without waiting (or are made on the device from the last step's), so the host can queue
  // this step while the one before it still runs (pipelined decoding).
  void step_fed(const StepBatch& batch);
  // The checks step() makes first, alone: the leader of an mpirun job runs them before it sends
  // the batch anywhere, so a bad batch fails on it alone (runtime/follower_ranks.h).
  void check_step(const StepBatch& batch) const;

  // Host copy of the last step's logits as float32: [rows, vocab_per_rank].
  std::vector<float> logits_f32(int rows) const;
  // Host float32 copy of some of the last step's logit rows: [rows.size(), vocab_per_rank].
  std::vector<float> logit_rows_f32(const std::vector<int32_t>& rows) const;
  // One token for each of the last step's R logit rows, chosen on the device (choices: [R]);
  // only the R ids come back to the host. Needs the whole vocabulary on this rank (tp 1).
  std::vector<int32_t> choose_tokens(const std::vector<TokenChoice>& choices);
  // The R ids of a step_and_start_* ticket, once their copy back has arrived.
  std::vector<int32_t> finish_choose(uint64_t ticket, int R);
  // Pipelined decoding: step() (fed: step_fed()) with its token choice recorded into the step, so
  // a decode token is one recording; returns the ticket of the ids' copy back (finish_choose).
  // step_and_start_choose chooses each logit row by `choices` (tp 1). step_and_start_split_greedy
  // takes each row's greedy token over the whole vocabulary, split across the ranks, on every
  // rank's device: the ranks' slice argmaxes all-gathered through the communicator and joined as
  // combine_slice_argmax does. Every rank runs it (it meets the others in an all-reduce) and gets
  // the same ids; copy_back (rank 0): start their copy to the host, else the ticket is 0.
  // Greedy rows go through lm_head's screen where there is one (Backend::screened_argmax: the
  // same ids), so the logits buffer then holds no logits after these calls.
  uint64_t step_and_start_choose(const StepBatch& batch, bool fed, const std::vector<TokenChoice>& choices);
  // keep_logits: the logits may be read after it (Engine::step_and_choose), so the lm_head screen
  // is not used.
  uint64_t step_and_start_split_greedy(const StepBatch& batch, bool fed, bool copy_back, bool keep_logits);
  // Puts the choices of the next choice on the device, ordered before the step's ops: made after
  // the step with a waiting copy, it had left the device idle while the host copied and launched
  // the choice (8B engines at batch 1 on an H100: 0.006-0.043 ms a token). Choices equal to the
  // ones on the device already (greedy decode) are not copied again.
  void prepare_choices(const std::vector<TokenChoice>& choices);
  // The greedy argmax of each of the last step's R logit rows inside this rank's vocabulary slice
  // (its valid tokens: the last slice's padding rows never count), found on the device; only
  // 2 numbers a row come back. combine_slice_argmax (ops/token_choice.h) joins the ranks'.
  std::vector<SliceArgmax> slice_argmax(int R);
  int64_t vocab_per_rank() const { return vocab_rank_; }
  Backend* backend() const { return be_; }

 private:
  // Backend::prepare_matmul for each projection and lm_head at up to the limits' step size, before
  // the first step and before the KV pool takes the device's free memory.
  void prepare_matmuls(const ForwardLimits& limits);
  static constexpr int kMaxRecordedTokens = 8;
  // What a step runs after its layers: nothing, select_tokens over choices_, or split_greedy; the
  // Screened ones (every row greedy at tp 1, the split greedy at tp > 1) choose through the lm_head
  // screen (Backend::screened_argmax) in the lm_head GEMV's place, so no logits are written.
  enum class StepChoice : uint32_t { None = 0, Rows = 1, SplitGreedy = 2, GreedyScreened = 3, SplitGreedyScreened = 4 };
  // Whether the step's rows can go through the screen (one exists, few enough rows).
  bool can_screen(int R) const;
  void upload_inputs(const StepBatch& batch, bool ordered);  // step_inputs_ = batch (ordered: no wait)
  // A fed step's inputs: made on the device from the last step's where only the ids and positions
  // move on (advance_fed_inputs), else uploaded (ordered) with the last choice copied over the ids,
  // or, where batch.fed_rows names other rows (or prompt tokens), put in place by resolve_fed_ids.
  void feed_inputs(const StepBatch& batch);
  bool advances_last_inputs(const StepBatch& batch) const;
  // step_and_start_split_greedy's choice, into chosen_ (each rank's slice argmax through the screen)
  void split_greedy(int R, bool screened);
  static constexpr int kMaxScreenedRows = 8;  // Backend::screened_argmax's rows
  // The checked step's inputs (fed or uploaded, without waiting), the step with `choice`, and the
  // ids' copy back started when copy_back (else the ticket is 0).
  uint64_t queue_step_and_choice(const StepBatch& batch, bool fed, StepChoice choice, bool copy_back);
  void run_step(int T, int R, StepChoice choice);  // run_layers (+ the choice), recorded for small steps
  // Every op of one step, on already-uploaded inputs; the lm_head GEMV only with `logits`.
  void run_layers(int T, int R, bool logits = true);
  // The matmul that reads `normed` next: its weight [rows, H] (w nullptr: none), which the backend
  // may prepare for (Backend::add_rms_norm_before_matmul) and the fused all-reduce may ask L2 for;
  // or, with cols, the attention-out projection's [H, q width], which the attention may ask for.
  struct NextMatmul {
    const void* w = nullptr;
    int64_t rows = 0;
    int64_t cols = 0;  // 0: the hidden size (every projection that follows a norm)
  };
  // What of `next` a communicator or the attention may fetch into L2 (L2Prefetch): an unquantized weight's bytes;
  // nothing for a quantized weight, whose pointer is a handle.
  L2Prefetch l2_prefetch_of(NextMatmul next) const;
  // residual[T,H] += Σ_ranks proj; normed = rms_norm(residual) · norm_weight
  void reduce_add_norm(const void* norm_weight, int T, float eps, NextMatmul next);
  // proj = x[T,K] · w^T (a row-parallel projection), then reduce_add_norm; at one rank, where the
  // backend's matmul adds to the residual itself (matmul_accumulate), that and norm_before.
  void project_add_norm(const void* x, const void* w, int K, const void* norm_weight, int T, float eps,
                        NextMatmul next);
  // normed = rms_norm(residual) · norm_weight, residual already summed.
  void norm_before(const void* norm_weight, int T, float eps, NextMatmul next);

  ModelConfig cfg_;
  Backend* be_;
  Communicator* comm_;
  RankWeights w_;
  ForwardLimits lim_;
  AttentionShape attn_;
  int64_t H_, F_, qkv_rows_, q_width_, vocab_rank_;

  DeviceBuffer inv_freq_;                       // float [D/2]
  // A step's int32 inputs, packed so they cross in one copy: ids [T], positions [T],
  // seq_rows [T], logit_rows [R], then block tables [S, max_blocks_per_seq]. The offsets depend on
  // (T, R) only, which is also a recording's key, so a replayed step reads the same addresses.
  struct StepInputs {
    const int32_t *ids, *positions, *seq_rows, *logit_rows, *block_tables;
  };
  StepInputs step_inputs(int T, int R) const;
  DeviceBuffer step_inputs_;           // int32 [3 max_tokens + max_tokens + max_seqs * max_blocks_per_seq]
  std::vector<int32_t> inputs_host_;   // staging, same layout; what step_inputs_ holds (but fed ids)
  struct { int T = -1, R = -1, S = -1; } uploaded_;  // the shape of what step_inputs_ holds
  DeviceBuffer residual_, normed_, qkv_, attn_out_, proj_, gate_up_, mlp_;
  DeviceBuffer last_, logits_;
  DeviceBuffer choices_, chosen_;  // TokenChoice [max_tokens], int32 [max_tokens]
  std::vector<TokenChoice> choices_on_device_;  // what choices_ holds
  int chosen_rows_ = 0;                         // ids the last choice wrote into chosen_
  DeviceBuffer argmax_;            // SliceArgmax [max_tokens]
  DeviceBuffer lm_head_screen_;    // Backend::lm_head_screen_bytes (empty: none)
  int64_t vocab_valid_ = 0;        // this rank's real tokens (the last slice may hold padding rows)
  DeviceBuffer gathered_argmax_;   // float [max_tokens, tp, 2]: every rank's (value, index) pairs
  std::vector<DeviceBuffer> k_cache_, v_cache_;
};

}  // namespace lamina
