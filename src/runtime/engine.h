// A loaded engine: its config, limits, tokenizer files and one LlamaForward per rank.
// Engine::step runs every rank (a thread each when tp_size > 1) and returns full-vocab logits.
// Each rank owns a paged KV pool of the same number of blocks; one StepBatch drives them all.
// Under mpirun (EngineOptions::mpi) each process holds one rank: process 0 leads, the others
// follow (runtime/follower_ranks.h); the leader's API is the same as a one-process engine's.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/json.h"
#include "io/engine_file.h"
#include "model/llama_forward.h"
#include "model/model_config.h"
#include "ops/backend.h"

namespace lamina {

class MpiSession;
class FollowerRanks;

enum class Device { Auto, CPU, CUDA };
Device parse_device(const std::string& s);  // "cuda", "cpu", "auto"
bool cuda_available();

struct EngineLimits {
  int max_batch_size = 1, max_input_len = 0, max_seq_len = 0, max_num_tokens = 0;
};

// What Engine::step_and_choose returns for a step with R logit rows.
struct ChosenTokens {
  std::vector<int32_t> ids;          // [R] the token each row's TokenChoice picked
  std::vector<float> host_logits;    // [host_rows.size(), vocab_size] float32, for host-side sampling
};

struct EngineOptions {
  Device device = Device::Auto;
  bool verify_checksums = true;
  int num_slots = 1;  // sequences in one step, i.e. block tables a step may pass (≤ max_batch_size)
  // Paged KV cache (docs/runtime.md). The pool holds, per layer, num_blocks blocks of
  // tokens_per_block tokens. Its size:
  //   CUDA with kv_cache_free_gpu_memory_fraction > 0: that fraction of the device memory free
  //     after weights and activations, capped by max_tokens_in_paged_kv_cache when given;
  //   otherwise max_tokens_in_paged_kv_cache when given, else num_slots × max_seq_len tokens.
  int tokens_per_block = 32;
  int64_t max_tokens_in_paged_kv_cache = 0;
  double kv_cache_free_gpu_memory_fraction = 0;
  // Set: this process is one rank of an mpirun job with one process per rank (its rank is its
  // MPI rank; docs/tensor-parallel.md). Null: every rank runs in this process.
  MpiSession* mpi = nullptr;
  // An int8 copy of lm_head on each GPU rank that lets the pipelined greedy decoding of generate()
  // (lamina run / bench) find each token without reading lm_head in full (Backend::screened_argmax;
  // the same ids). It takes vocab_per_rank x hidden_size bytes of device memory (0.5 GB for
  // Llama 3 8B) before the KV cache is sized. lamina serve, whose steps need the logits, turns it off.
  bool screen_lm_head = true;
};

// The paged KV cache an engine allocated.
struct KVCacheLayout {
  int tokens_per_block = 0;
  int max_blocks_per_seq = 0;  // ceil(max_seq_len / tokens_per_block)
  int num_blocks = 0;          // blocks in the pool (the same on every rank)
  size_t block_bytes = 0;      // bytes one block takes over all layers, k and v, on one rank
};

class RankWorkers;

class Engine {
 public:
  static std::unique_ptr<Engine> load(const std::string& engine_dir, const EngineOptions& opts = {});
  ~Engine();

  const ModelConfig& config() const { return cfg_; }
  const EngineLimits& limits() const { return lim_; }
  const std::string& dir() const { return dir_; }
  std::string device_name() const;
  int num_slots() const { return num_slots_; }
  const KVCacheLayout& kv_cache() const { return kv_; }

  // One forward step over T tokens (see StepBatch: ids, positions, seq_rows, block_tables,
  // logit_rows); returns float32 logits [logit_rows.size(), vocab_size].
  std::vector<float> step(const StepBatch& batch);
  // The same step, but each logit row's next token is chosen where the logits are (on the GPU
  // for a one-GPU engine), by choices[r] (ops/token_choice.h); only the ids cross to the host,
  // plus the float32 logits of the rows listed in host_rows (indices into logit_rows), for rows
  // the caller samples itself (penalties, logprobs).
  ChosenTokens step_and_choose(const StepBatch& batch, const std::vector<TokenChoice>& choices,
                               const std::vector<int32_t>& host_rows);

  // Pipelined decoding. enqueue_step_and_choose starts a step and its token choice (every row
  // chosen where the logits are) and returns a ticket without waiting; collect_chosen(ticket)
  // waits and returns the ids step_and_choose would have. With feed_previous, token t's id is the
  // one the previous choice (step_and_choose or enqueue_step_and_choose) picked for its logit
  // row t, and batch.ids are not read: the host can queue step n + 1 before it has read step n's
  // token, so the GPU does not sit idle while the host handles that token (generate() does this).
  // A one-process engine queues the step where its rows are chosen on the devices (tp 1; at
  // tp > 1, greedy rows: the ranks' slice argmaxes all-gathered on the GPUs); elsewhere (sampled
  // rows at tp > 1, mpirun jobs) the step runs at once and collect_chosen hands its ids over.
  // Collect every ticket once.
  uint64_t enqueue_step_and_choose(const StepBatch& batch, const std::vector<TokenChoice>& choices,
                                   bool feed_previous);
  std::vector<int32_t> collect_chosen(uint64_t ticket);

  // Process r > 0 of an mpirun job: it holds rank r only and must call run_follower(), which runs
  // that rank for the leader (process 0) until the leader shuts down; step() is not for it.
  bool is_follower() const { return follower_mpi_ != nullptr; }
  void run_follower();

 private:
  Engine() = default;
  void forward(const StepBatch& batch);
  std::vector<float> gather_logits(size_t rows) const;  // [rows, vocab_size] from every rank's slice
  ChosenTokens choose(const std::vector<TokenChoice>& choices, const std::vector<int32_t>& host_rows);
  // Whether every row is greedy or comes back whole (host_rows): then tp ranks choose by slice argmax.
  static bool greedy_rows(const std::vector<TokenChoice>& choices, const std::vector<int32_t>& host_rows);
  // The ids from the ranks' slice argmaxes (parts[rank][row]); host rows chosen from their whole rows.
  ChosenTokens join_greedy(const std::vector<std::vector<SliceArgmax>>& parts, const std::vector<TokenChoice>& choices,
                           const std::vector<int32_t>& host_rows);
  // Host rows of a vocabulary-split greedy step: their whole logits gathered into out.host_logits
  // and their ids chosen from them by their own choices.
  void add_host_rows(ChosenTokens& out, const std::vector<TokenChoice>& choices,
                     const std::vector<int32_t>& host_rows) const;
  // In-process ranks, greedy rows: every rank queues its step (fed: from the devices' last choice)
  // with its part of the choice (LlamaForward::step_and_start_split_greedy); returns rank 0's
  // ticket for the ids' copy back. keep_logits: the step's logits may be read after it.
  uint64_t run_split_greedy(const StepBatch& batch, bool feed_previous, bool keep_logits);
  // Every rank's part of the last step's output, in rank order: this process's ranks' and, on
  // the leader of an mpirun job, its followers'.
  std::vector<std::vector<float>> rank_logits(size_t rows) const;
  std::vector<std::vector<float>> rank_logit_rows(const std::vector<int32_t>& rows) const;
  // An mpirun job's leader: every rank runs its step, then the argmax of its vocabulary slice over
  // the first `rows` logit rows; the argmaxes in rank order (rank 0's, then the followers').
  std::vector<std::vector<SliceArgmax>> step_and_slice_argmax(const StepBatch& batch, int rows);
  // fn() = one step; on the leader of an mpirun job, the batch is checked first and an error
  // inside the step ends the job (the followers would wait in a collective forever).
  template <class Fn>
  auto lead(const StepBatch& batch, Fn&& fn) -> decltype(fn());
  size_t tp_size() const { return size_t(cfg_.mapping.tp_size); }
  struct Rank;
  std::string dir_;
  ModelConfig cfg_;
  EngineLimits lim_;
  int num_slots_ = 1;
  KVCacheLayout kv_;
  std::vector<std::unique_ptr<Rank>> ranks_;
  std::unique_ptr<RankWorkers> workers_;  // tp_size > 1: runs the ranks of a step at once
  std::shared_ptr<void> comm_group_;
  std::unique_ptr<FollowerRanks> followers_;  // the leader of an mpirun job: ranks 1..N-1
  MpiSession* follower_mpi_ = nullptr;        // a follower: the job it follows in
  // Tickets of enqueue_step_and_choose not collected yet: a queued step's copy back (the backend's
  // ticket, never 0) or, with copy_ticket 0, the ids of a step that ran at once.
  struct PendingChoice {
    uint64_t copy_ticket = 0;
    int rows = 0;
    std::vector<int32_t> ids;
  };
  std::vector<std::pair<uint64_t, PendingChoice>> pending_;
  uint64_t next_ticket_ = 1;
  std::vector<int32_t> last_chosen_;  // the last choice's ids, when it ran at once
  bool choice_on_device_ = false;     // every rank's device holds the last choice's ids (LlamaForward::step_fed)
};

}  // namespace lamina
