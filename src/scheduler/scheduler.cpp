#include "scheduler/scheduler.h"

#include <algorithm>
#include <cstdio>
#include <unordered_map>
#include <unordered_set>

#include "scheduler/scheduled_step.h"
#include "scheduler/token_processor.h"

namespace lamina {

namespace {

int clamp_to_engine(int asked, int engine_max) { return asked > 0 ? std::min(asked, engine_max) : engine_max; }

KVCacheOptions kv_options(const Engine& engine, const SchedulerOptions& o) {
  // The blocks are the engine's: same size, at most as many as its pool holds.
  const KVCacheLayout& pool = engine.kv_cache();
  if (o.tokens_per_block != 0 && o.tokens_per_block != pool.tokens_per_block)
    fail("the scheduler's tokens_per_block ", o.tokens_per_block, " differs from the engine's KV blocks (",
         pool.tokens_per_block, " tokens): load the engine with the same --tokens_per_block");
  if (o.num_kv_blocks > pool.num_blocks)
    fail("the scheduler asks for ", o.num_kv_blocks, " KV blocks but the engine's pool holds ", pool.num_blocks);
  KVCacheOptions kv;
  kv.tokens_per_block = pool.tokens_per_block;
  kv.num_blocks = o.num_kv_blocks > 0 ? o.num_kv_blocks : pool.num_blocks;
  kv.enable_reuse = o.enable_kv_cache_reuse && kEngineSharesKVBlocks;
  return kv;
}

// The request of each chunk, to tell later whether it still exists (Scheduler::alive).
std::vector<RequestId> request_ids(const std::vector<ScheduledChunk>& chunks) {
  std::vector<RequestId> ids;
  for (const ScheduledChunk& c : chunks) ids.push_back(c.req->id);
  return ids;
}

}  // namespace

Scheduler::Scheduler(Engine& engine, const SchedulerOptions& o)
    : engine_(engine),
      max_batch_(clamp_to_engine(o.max_batch_size, engine.num_slots())),
      max_tokens_(clamp_to_engine(o.max_num_tokens, engine.limits().max_num_tokens)),
      vocab_(int(engine.config().vocab_size)),
      capacity_(o.capacity_policy, kv_options(engine, o), max_batch_),
      overlap_steps_(o.overlap_steps) {
  const EngineLimits& lim = engine.limits();
  const KVBlockManager& kv = capacity_.kv();
  limits_ = {lim.max_input_len, lim.max_seq_len, vocab_, kv.num_blocks() * kv.tokens_per_block()};
  stats_.kv_blocks_total = kv.num_blocks();
  stats_.tokens_per_block = kv.tokens_per_block();
}

Scheduler::~Scheduler() { discard_in_flight(); }

void Scheduler::add(RequestId id, RequestSpec spec, OutputCallback on_output, SteadyTime arrival) {
  validate_spec(spec, limits_);
  LAMINA_CHECK(!requests_.count(id), "request id ", id, " is already in use");
  auto r = std::make_unique<Request>();
  r->id = id;
  r->tokens = spec.prompt;
  r->num_prompt = int(spec.prompt.size());
  r->sampler.emplace(spec.sampling);
  r->spec = std::move(spec);
  r->on_output = std::move(on_output);
  r->arrival = arrival;
  stats_.prompt_tokens_total += uint64_t(r->num_prompt);
  waiting_.push_back(r.get());
  requests_.emplace(id, std::move(r));
  update_gauges();
}

bool Scheduler::cancel(RequestId id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return false;
  finish(*it->second, EndReason::Cancelled);
  update_gauges();
  return true;
}

void Scheduler::cancel_all() { end_all(EndReason::Cancelled, ""); }

void Scheduler::end_all(EndReason why, const std::string& error) {
  std::vector<RequestId> ids;
  for (const auto& [id, r] : requests_) ids.push_back(id);
  for (RequestId id : ids) finish(*requests_.at(id), why, {}, error);
  update_gauges();
}

void Scheduler::admit() {
  // FIFO without overtaking: a large request at the head is not starved by smaller ones behind it.
  while (!waiting_.empty() && int(running_.size()) < max_batch_) {
    Request* r = waiting_.front();
    if (!capacity_.try_admit(*r, admissions_ + 1)) break;
    ++admissions_;
    stats_.reused_tokens_total += uint64_t(r->num_computed);  // KV found in cached prefix blocks
    waiting_.pop_front();
    running_.push_back(r);
  }
}

int Scheduler::step() {
  const SteadyTime t_begin = std::chrono::steady_clock::now();
  enqueue_seconds_ = 0;
  if (!in_flight_) {
    // 1. Capacity: room for every running decode (may preempt), then admission. After a
    //    preemption nothing new is admitted this step, or the victim would just bounce back in.
    const std::vector<Request*> preempted = capacity_.make_room_for_decode(running_);
    for (Request* p : preempted) waiting_.push_front(p);  // newest first, so the oldest ends up in front
    stats_.preemptions_total += preempted.size();
    if (preempted.empty()) admit();

    // 2. Micro-batch: this step's tokens.
    const std::vector<ScheduledChunk> chunks = plan_micro_batch(running_, max_tokens_);
    if (chunks.empty()) {
      update_gauges();
      return 0;
    }
    const ScheduledStep batch = build_scheduled_step(chunks, capacity_.kv());

    // 3. Token choices: on the device, except for requests with penalties or logprobs, which get
    //    their logits row and sample here.
    std::vector<TokenChoice> choices(batch.row_owner.size());
    std::vector<int32_t> host_rows;
    for (size_t i = 0; i < batch.row_owner.size(); ++i) {
      Request& r = *batch.row_owner[i];
      if (samples_on_host(r))
        host_rows.push_back(int32_t(i));
      else
        choices[i] = r.sampler->next_choice();
    }
    if (!overlap_steps_ || !host_rows.empty() || choices.empty())
      return run_planned_step(chunks, batch, choices, host_rows, t_begin);

    // 4. Queued without waiting, so the step after it can be queued behind it (below).
    QueuedStep q;
    q.chunks = chunks;
    q.row_owner = batch.row_owner;
    q.tokens = int(batch.batch.ids.size());
    q.chunk_ids = request_ids(chunks);
    try {
      q.ticket = enqueue(batch.batch, choices, false);
    } catch (const std::exception& e) {
      end_with_error(chunks, q.chunk_ids, e);
      return 0;
    }
    in_flight_ = std::move(q);
  }
  // 5. The next step goes to the engine before this one's ids are read: the GPU runs it while
  //    the host reads them, applies the stop rules and hands out the tokens.
  std::optional<QueuedStep> next;
  try {
    next = queue_next_step(*in_flight_);
  } catch (const std::exception& e) {
    // The next step is planned again the usual way once this one is read.
    std::fprintf(stderr, "[lamina] engine step failed: %s\n", e.what());
  }
  QueuedStep current = std::move(*in_flight_);
  in_flight_ = std::move(next);
  return complete(std::move(current), t_begin);
}

int Scheduler::run_planned_step(const std::vector<ScheduledChunk>& chunks, const ScheduledStep& batch,
                                const std::vector<TokenChoice>& choices, const std::vector<int32_t>& host_rows,
                                SteadyTime t_begin) {
  using Seconds = std::chrono::duration<double>;
  const SteadyTime t_scheduled = std::chrono::steady_clock::now();
  stats_.step_schedule_seconds_total += Seconds(t_scheduled - t_begin).count();
  // A failure ends the requests of this step with an error; the rest go on.
  ChosenTokens chosen;
  try {
    chosen = run_step(engine_, batch, choices, host_rows);
  } catch (const std::exception& e) {
    end_with_error(chunks, request_ids(chunks), e);
    return 0;
  }
  finish_step(chunks, request_ids(chunks), batch.row_owner, chosen, host_rows, t_scheduled);
  return int(batch.batch.ids.size());
}

std::optional<Scheduler::QueuedStep> Scheduler::queue_next_step(const QueuedStep& s) {
  if (!overlap_steps_ || capacity_.policy() != CapacityPolicy::GuaranteedNoEvict) return std::nullopt;
  for (size_t i = 0; i < s.chunks.size(); ++i)
    if (!alive(s.chunk_ids[i], s.chunks[i].req)) return std::nullopt;
  admit();  // no-evict: nothing is preempted, so arrivals join now rather than after the chain

  // The requests as s leaves them once read: each chunk's tokens computed, and a sampling chunk's
  // token (being chosen now) appended as a stand-in that the step feeds from s's row instead. A
  // request whose s token is its last (max_tokens) runs no more. Undone before returning.
  struct Advanced {
    Request* req;
    int count;
    bool stand_in;
  };
  std::vector<Advanced> advanced;
  std::unordered_map<const Request*, int32_t> fed_row;  // request → s's logit row that feeds it
  std::unordered_set<const Request*> leaving;
  int32_t row = 0;
  for (const ScheduledChunk& c : s.chunks) {
    Request* r = c.req;
    r->num_computed += c.count;
    bool stand_in = false;
    if (c.samples) {
      if (r->num_generated() + 1 >= r->spec.max_tokens) {
        leaving.insert(r);
      } else {
        r->tokens.push_back(0);
        stand_in = true;
        fed_row[r] = row;
      }
      ++row;
    }
    advanced.push_back({r, c.count, stand_in});
  }
  const auto undo = [&] {
    for (const Advanced& a : advanced) {
      a.req->num_computed -= a.count;
      if (a.stand_in) a.req->tokens.pop_back();
    }
  };
  std::vector<Request*> runnable;
  for (Request* r : running_)
    if (leaving.count(r) == 0) runnable.push_back(r);
  // Each decode token's KV row (position num_computed) must be in the request's blocks.
  bool planned = true;
  for (Request* r : runnable) {
    if (samples_on_host(*r) || (r->pending() == 1 && !capacity_.reserve_ahead(*r, r->num_computed + 1))) {
      planned = false;
      break;
    }
  }
  const std::vector<ScheduledChunk> chunks =
      planned ? plan_micro_batch(runnable, max_tokens_) : std::vector<ScheduledChunk>{};
  if (chunks.empty()) {
    undo();
    return std::nullopt;
  }
  ScheduledStep batch = build_scheduled_step(chunks, capacity_.kv());
  // Token t of a fed request's chunk (its one token, the stand-in) takes s's row; prompt tokens
  // keep their ids.
  bool any_fed = false;
  for (const ScheduledChunk& c : chunks) {
    const auto it = fed_row.find(c.req);
    const bool fed = it != fed_row.end() && c.begin + c.count == int(c.req->tokens.size());
    for (int i = 0; i < c.count; ++i) batch.batch.fed_rows.push_back(fed && i == c.count - 1 ? it->second : -1);
    any_fed = any_fed || fed;
  }
  undo();
  if (!any_fed) batch.batch.fed_rows.clear();
  std::vector<TokenChoice> choices;
  for (Request* r : batch.row_owner) choices.push_back(r->sampler->next_choice());
  QueuedStep q;
  q.chunks = chunks;
  q.row_owner = batch.row_owner;
  q.chunk_ids = request_ids(chunks);
  q.tokens = int(batch.batch.ids.size());
  q.ticket = enqueue(batch.batch, choices, any_fed);
  ++stats_.steps_overlapped_total;
  return q;
}

uint64_t Scheduler::enqueue(const StepBatch& batch, const std::vector<TokenChoice>& choices, bool feed_previous) {
  const SteadyTime t0 = std::chrono::steady_clock::now();
  const uint64_t ticket = engine_.enqueue_step_and_choose(batch, choices, feed_previous);
  enqueue_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return ticket;
}

int Scheduler::complete(QueuedStep s, SteadyTime t_begin) {
  using Seconds = std::chrono::duration<double>;
  const SteadyTime t_scheduled = std::chrono::steady_clock::now();
  // Queuing a step is engine time (on the CPU backend the step runs inside the call).
  stats_.step_schedule_seconds_total += Seconds(t_scheduled - t_begin).count() - enqueue_seconds_;
  stats_.step_engine_seconds_total += enqueue_seconds_;
  ChosenTokens chosen;
  try {
    chosen.ids = engine_.collect_chosen(s.ticket);
  } catch (const std::exception& e) {
    end_with_error(s.chunks, s.chunk_ids, e);
    discard_in_flight();  // queued behind the failed one, from its choice
    return 0;
  }
  finish_step(s.chunks, s.chunk_ids, s.row_owner, chosen, {}, t_scheduled);
  return s.tokens;
}

void Scheduler::finish_step(const std::vector<ScheduledChunk>& chunks, const std::vector<RequestId>& chunk_ids,
                            const std::vector<Request*>& row_owner, const ChosenTokens& chosen,
                            const std::vector<int32_t>& host_rows, SteadyTime t_scheduled) {
  using Seconds = std::chrono::duration<double>;
  ++stats_.steps_total;
  // The rows' requests, where they still exist (a stop rule or a cancel may have ended one while
  // this step was in flight); row i is chunk j's last token for the j-th sampling chunk.
  std::vector<Request*> live_rows(row_owner.size(), nullptr);
  size_t row = 0;
  for (size_t j = 0; j < chunks.size(); ++j) {
    const ScheduledChunk& c = chunks[j];
    const bool live = alive(chunk_ids[j], c.req);
    if (c.samples) {
      if (live) live_rows[row] = c.req;
      ++row;
    }
    stats_.computed_tokens_total += uint64_t(c.count);
    if (!live) continue;
    c.req->num_computed += c.count;
    capacity_.commit(*c.req);
  }
  LAMINA_CHECK(row == row_owner.size(), "a step's logit rows do not match its sampling chunks");

  // Sampling and stop rules for every chunk that reached the end of its request.
  const SteadyTime now = std::chrono::steady_clock::now();
  stats_.step_engine_seconds_total += Seconds(now - t_scheduled).count();
  size_t next_host = 0;  // host_rows is ascending: host_logits row j belongs to logit row host_rows[j]
  for (size_t i = 0; i < row_owner.size(); ++i) {
    const bool on_host = next_host < host_rows.size() && size_t(host_rows[next_host]) == i;
    const float* host_logits = on_host ? chosen.host_logits.data() + next_host++ * size_t(vocab_) : nullptr;
    if (live_rows[i] == nullptr) continue;
    Request& r = *live_rows[i];
    SampleOutcome o = on_host ? sample_next(r, host_logits, vocab_) : accept_token(r, chosen.ids[i], nullptr, vocab_);
    std::vector<GeneratedToken> toks;
    if (o.token) {
      toks.push_back(std::move(*o.token));
      ++stats_.generation_tokens_total;
      record_token_times(r, now);
    }
    if (o.end) {
      finish(r, *o.end, std::move(toks));
    } else {
      r.state = RequestState::Decoding;
      emit(r, std::move(toks));
    }
  }
  update_gauges();
  stats_.step_output_seconds_total += Seconds(std::chrono::steady_clock::now() - now).count();
}

void Scheduler::end_with_error(const std::vector<ScheduledChunk>& chunks, const std::vector<RequestId>& chunk_ids,
                               const std::exception& e) {
  std::fprintf(stderr, "[lamina] engine step failed: %s\n", e.what());
  for (size_t i = 0; i < chunks.size(); ++i)
    if (alive(chunk_ids[i], chunks[i].req)) finish(*chunks[i].req, EndReason::Error, {}, e.what());
  update_gauges();
}

bool Scheduler::alive(RequestId id, const Request* r) const {
  const auto it = requests_.find(id);
  return it != requests_.end() && it->second.get() == r;
}

void Scheduler::discard_in_flight() {
  if (!in_flight_) return;
  const uint64_t ticket = in_flight_->ticket;
  in_flight_.reset();
  try {
    engine_.collect_chosen(ticket);
  } catch (const std::exception&) {
    // the step's requests ended with the failure that brought us here
  }
}

void Scheduler::record_token_times(Request& r, SteadyTime now) {
  const double since = std::chrono::duration<double>(now - (r.has_first_token ? r.last_token : r.arrival)).count();
  (r.has_first_token ? stats_.itl : stats_.ttft).observe(since);
  r.has_first_token = true;
  r.last_token = now;
}

void Scheduler::emit(Request& r, std::vector<GeneratedToken> tokens) {
  if (tokens.empty() || !r.on_output) return;
  RequestOutput out;
  out.id = r.id;
  out.tokens = std::move(tokens);
  out.prompt_tokens = r.num_prompt;
  out.generated_tokens = r.num_generated();
  r.on_output(std::move(out));
}

void Scheduler::finish(Request& r, EndReason why, std::vector<GeneratedToken> tokens, const std::string& error) {
  if (r.running()) capacity_.release(r);
  running_.erase(std::remove(running_.begin(), running_.end(), &r), running_.end());
  waiting_.erase(std::remove(waiting_.begin(), waiting_.end(), &r), waiting_.end());
  r.state = why == EndReason::Cancelled ? RequestState::Cancelled : RequestState::Finished;
  ++stats_.finished_total[size_t(why)];
  RequestOutput out;
  out.id = r.id;
  out.tokens = std::move(tokens);
  out.finished = true;
  out.end_reason = why;
  out.error = error;
  out.prompt_tokens = r.num_prompt;
  out.generated_tokens = r.num_generated();
  OutputCallback cb = std::move(r.on_output);
  requests_.erase(r.id);  // r is gone from here on
  if (cb) cb(std::move(out));
}

void Scheduler::update_gauges() {
  stats_.num_waiting = int(waiting_.size());
  stats_.num_running = int(running_.size());
  stats_.kv_blocks_used = capacity_.kv().num_used_blocks();
  stats_.kv_blocks_cached = capacity_.kv().num_cached_blocks();
}

}  // namespace lamina
