#include "runtime/generator.h"

#include <algorithm>

#include "common/error.h"

namespace lamina {

const char* finish_reason_name(FinishReason r) { return r == FinishReason::Length ? "length" : "stop"; }

void validate_request(const Engine& engine, const GenerationRequest& req) {
  const EngineLimits& lim = engine.limits();
  const int64_t n = int64_t(req.prompt.size());
  if (n == 0) fail("the prompt is empty: give at least one token");
  if (n > lim.max_input_len)
    fail("the prompt has ", n, " tokens but the engine was built with max_input_len ", lim.max_input_len,
         ": shorten the prompt or rebuild with a larger --max_input_len");
  if (req.max_new_tokens < 1) fail("max output length must be at least 1 (got ", req.max_new_tokens, ")");
  if (n + req.max_new_tokens > lim.max_seq_len)
    fail("prompt (", n, " tokens) + max output (", req.max_new_tokens, ") exceeds the engine's max_seq_len ",
         lim.max_seq_len, ": lower --max_output_len or rebuild with a larger --max_seq_len");
  for (int32_t t : req.prompt)
    if (t < 0 || t >= engine.config().vocab_size)
      fail("prompt token id ", t, " is outside the vocabulary [0, ", engine.config().vocab_size, ")");
  req.sampling.validate();
}

namespace {
bool ends_with(const std::vector<int32_t>& seq, const std::vector<int32_t>& suffix) {
  return !suffix.empty() && seq.size() >= suffix.size() && std::equal(suffix.rbegin(), suffix.rend(), seq.rbegin());
}

// The pipelined steps of one generate() call: every ticket is collected, even when generation
// ends early (a callback's false, an end id) or throws, so no step is left queued behind it.
class PendingSteps {
 public:
  explicit PendingSteps(Engine& engine) : engine_(engine) {}
  ~PendingSteps() {
    for (uint64_t t : tickets_) try {
        engine_.collect_chosen(t);
      } catch (...) {
      }
  }
  PendingSteps(const PendingSteps&) = delete;
  PendingSteps& operator=(const PendingSteps&) = delete;
  uint64_t enqueue(const StepBatch& batch, const TokenChoice& choice, bool feed_previous) {
    const uint64_t t = engine_.enqueue_step_and_choose(batch, {choice}, feed_previous);
    tickets_.push_back(t);
    return t;
  }
  int32_t collect(uint64_t ticket) {
    const auto it = std::find(tickets_.begin(), tickets_.end(), ticket);
    if (it != tickets_.end()) tickets_.erase(it);
    return engine_.collect_chosen(ticket).at(0);
  }

 private:
  Engine& engine_;
  std::vector<uint64_t> tickets_;
};

}  // namespace

GenerationResult generate(Engine& engine, const GenerationRequest& req, const TokenCallback& on_token, int slot) {
  validate_request(engine, req);
  const size_t V = size_t(engine.config().vocab_size);
  const int chunk = engine.limits().max_num_tokens;
  GenerationResult res;
  Sampler sampler(req.sampling);
  // KV blocks: a contiguous run of the pool per slot, [slot * max_blocks_per_seq, ...).
  const KVCacheLayout& kv = engine.kv_cache();
  const int total = int(req.prompt.size()) + req.max_new_tokens;
  const int need = (total + kv.tokens_per_block - 1) / kv.tokens_per_block;
  const int64_t first = int64_t(slot) * kv.max_blocks_per_seq;
  if (slot < 0 || first + need > kv.num_blocks)
    fail("the KV cache holds ", kv.num_blocks, " blocks of ", kv.tokens_per_block, " tokens: too few for ", total,
         " tokens in slot ", slot, ": raise --max_tokens_in_paged_kv_cache");
  StepBatch batch;
  batch.block_tables.assign(1, std::vector<int32_t>(size_t(need)));
  for (int i = 0; i < need; ++i) batch.block_tables[0][size_t(i)] = int32_t(first + i);
  std::vector<int32_t> history = req.prompt;

  // Tokens are chosen where the logits are (on the GPU: only the id comes back), unless the
  // caller wants the logits themselves or penalties need the history: then the host samples.
  // Chosen there, decoding is pipelined: step i + 1 is queued, fed by step i's token on the
  // device, before the host reads that token, so the GPU never waits for the host between
  // tokens. A step queued after the token that ends generation is collected and dropped.
  const bool choose_on_device = !req.return_generation_logits && !sampler.has_penalties();
  PendingSteps pending(engine);
  uint64_t chosen = 0;  // ticket of the step that chooses the next token (0: sample last_logits here)

  // Prefill in chunks of at most max_num_tokens; keep logits of every row if asked, else the last.
  std::vector<float> last_logits;
  const int n = int(req.prompt.size());
  for (int begin = 0; begin < n; begin += chunk) {
    const int T = std::min(chunk, n - begin);
    const bool last_chunk = begin + T == n;
    batch.ids.assign(req.prompt.begin() + begin, req.prompt.begin() + begin + T);
    batch.positions.resize(size_t(T));
    batch.seq_rows.assign(size_t(T), 0);
    batch.logit_rows.clear();
    for (int t = 0; t < T; ++t) batch.positions[size_t(t)] = begin + t;
    if (req.return_context_logits)
      for (int t = 0; t < T; ++t) batch.logit_rows.push_back(t);
    else if (last_chunk)
      batch.logit_rows.push_back(T - 1);
    if (last_chunk && choose_on_device && !req.return_context_logits) {
      chosen = pending.enqueue(batch, sampler.next_choice(), false);
      continue;
    }
    std::vector<float> logits = engine.step(batch);
    if (req.return_context_logits) res.context_logits.insert(res.context_logits.end(), logits.begin(), logits.end());
    if (last_chunk) last_logits.assign(logits.end() - static_cast<long>(V), logits.end());
  }

  for (int i = 0; i < req.max_new_tokens; ++i) {
    if (req.return_generation_logits) res.generation_logits.insert(res.generation_logits.end(), last_logits.begin(), last_logits.end());
    // The next step takes this token at position n + i (the prompt holds 0..n-1).
    batch.ids = {0};
    batch.positions = {int32_t(n + i)};
    batch.seq_rows = {0};
    batch.logit_rows = {0};
    const bool more = i + 1 < req.max_new_tokens;
    uint64_t next = 0;
    if (choose_on_device && chosen != 0 && more) next = pending.enqueue(batch, sampler.next_choice(), true);
    const int32_t tok = chosen != 0 ? pending.collect(chosen) : sampler.sample(last_logits.data(), last_logits.size(), history);
    chosen = next;
    if (std::find(req.end_ids.begin(), req.end_ids.end(), tok) != req.end_ids.end()) {
      res.finish_reason = FinishReason::EndId;
      break;
    }
    res.output_ids.push_back(tok);
    history.push_back(tok);
    const bool keep_going = !on_token || on_token(tok);
    bool stopped = false;
    for (const auto& sw : req.stop_words) stopped = stopped || ends_with(res.output_ids, sw);
    if (stopped) {
      res.finish_reason = FinishReason::StopWord;
      break;
    }
    if (!keep_going || !more) break;
    if (chosen != 0) continue;  // queued above
    batch.ids = {tok};
    if (choose_on_device)
      chosen = pending.enqueue(batch, sampler.next_choice(), false);
    else
      last_logits = engine.step(batch);
  }
  return res;
}

}  // namespace lamina
