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
  int max_tokens = 0;   // tokens in one step (prefill chunk or decode batch)
  int max_seq_len = 0;  // KV cache rows per slot
  int num_slots = 1;    // sequences resident at once
};

class LlamaForward {
 public:
  LlamaForward(const ModelConfig& cfg, Backend* backend, Communicator* comm, RankWeights weights,
               const ForwardLimits& limits);

  // One step over T tokens (host arrays): token ids, their positions and KV slots. Writes the
  // logits of the rows listed in logit_rows (e.g. each sequence's last token) into this rank's
  // logits buffer: [logit_rows.size(), vocab_per_rank] in activation dtype.
  void step(const std::vector<int32_t>& ids, const std::vector<int32_t>& positions,
            const std::vector<int32_t>& slots, const std::vector<int32_t>& logit_rows);

  // Host copy of the last step's logits as float32: [rows, vocab_per_rank].
  std::vector<float> logits_f32(int rows) const;
  // Host float32 copy of some of the last step's logit rows: [rows.size(), vocab_per_rank].
  std::vector<float> logit_rows_f32(const std::vector<int32_t>& rows) const;
  // One token for each of the last step's R logit rows, chosen on the device (choices: [R]);
  // only the R ids come back to the host. Needs the whole vocabulary on this rank (tp 1).
  std::vector<int32_t> choose_tokens(const std::vector<TokenChoice>& choices);
  int64_t vocab_per_rank() const { return vocab_rank_; }
  Backend* backend() const { return be_; }

 private:
  static constexpr int kMaxRecordedTokens = 8;
  void run_layers(int T, int R);  // every op of one step, on already-uploaded inputs

  ModelConfig cfg_;
  Backend* be_;
  Communicator* comm_;
  RankWeights w_;
  ForwardLimits lim_;
  AttentionShape attn_;
  int64_t H_, F_, qkv_rows_, q_width_, vocab_rank_;

  DeviceBuffer inv_freq_;                       // float [D/2]
  DeviceBuffer ids_, positions_, slots_, rows_;  // int32 [max_tokens]
  DeviceBuffer residual_, normed_, qkv_, attn_out_, proj_, gate_up_, mlp_;
  DeviceBuffer last_, logits_;
  DeviceBuffer choices_, chosen_;  // TokenChoice [max_tokens], int32 [max_tokens]
  std::vector<DeviceBuffer> k_cache_, v_cache_;
};

}  // namespace lamina
