// The scheduler on a real tiny engine (golden fixture gqa_f32_hub on the CPU): requests batched
// together must produce exactly what each produces alone with generate(), whatever the step
// budget, capacity policy or preemptions; cancellation frees capacity at once.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <map>
#include <numeric>
#include <random>
#include <thread>

#include "build/build_engine.h"
#include "convert/convert.h"
#include "runtime/generator.h"
#include "scheduler/executor.h"
#include "scheduler/scheduler.h"
#include "test_support.h"

namespace lamina {
namespace {

constexpr int kSlots = 4;

class SchedulerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new test::ScratchDir("scheduler");
    ConvertOptions c;
    c.model_dir = test::golden_dir("gqa_f32_hub").string();
    c.output_dir = (*scratch_ / "ckpt").string();
    convert_checkpoint(c);
    BuildOptions b;
    b.checkpoint_dir = c.output_dir;
    b.output_dir = (*scratch_ / "engine").string();
    b.max_batch_size = kSlots;
    b.max_input_len = 128;
    b.max_seq_len = 192;
    b.max_num_tokens = 64;
    build_engine(b);
    EngineOptions eo;
    eo.device = Device::CPU;
    eo.num_slots = kSlots;
    eo.tokens_per_block = 4;  // small blocks: the capacity tests below count them
    engine_ = Engine::load(b.output_dir, eo).release();
  }
  static void TearDownTestSuite() {
    delete engine_;
    delete scratch_;
  }

  struct Collected {
    std::vector<int32_t> ids;
    std::vector<GeneratedToken> tokens;
    bool finished = false;
    EndReason reason = EndReason::Length;
    int outputs = 0;
  };

  // Queues specs[i] as request i + 1, its outputs collected into got[i + 1].
  static void add_all(Scheduler& s, const std::vector<RequestSpec>& specs, std::map<RequestId, Collected>& got) {
    for (size_t i = 0; i < specs.size(); ++i) {
      const RequestId id = i + 1;
      s.add(id, specs[i], [&got, id](RequestOutput&& o) {
        Collected& c = got[id];
        EXPECT_FALSE(c.finished) << "output after the final one";
        ++c.outputs;
        for (auto& t : o.tokens) {
          c.ids.push_back(t.id);
          c.tokens.push_back(t);
        }
        c.finished = o.finished;
        c.reason = o.end_reason;
      }, std::chrono::steady_clock::now());
    }
  }

  // Runs the scheduler until idle; returns each request's output.
  static std::map<RequestId, Collected> run_all(Scheduler& s, const std::vector<RequestSpec>& specs) {
    std::map<RequestId, Collected> got;
    add_all(s, specs, got);
    for (int guard = 0; s.has_work() && guard < 10000; ++guard) s.step();
    EXPECT_FALSE(s.has_work());
    return got;
  }

  static GenerationResult alone(const RequestSpec& spec) {
    GenerationRequest g;
    g.prompt = spec.prompt;
    g.max_new_tokens = spec.max_tokens;
    g.sampling = spec.sampling;
    g.end_ids = spec.end_ids;
    g.stop_words = spec.stop_words;
    return generate(*engine_, g);
  }

  static std::vector<RequestSpec> random_specs(int n, uint32_t seed, int min_len, int max_len, int max_tokens) {
    std::mt19937 rng(seed);
    std::uniform_int_distribution<int32_t> tok(0, int32_t(engine_->config().vocab_size) - 1);
    std::uniform_int_distribution<int> len(min_len, max_len), out(1, max_tokens);
    std::vector<RequestSpec> specs(static_cast<size_t>(n));
    for (auto& s : specs) {
      for (int i = len(rng); i > 0; --i) s.prompt.push_back(tok(rng));
      s.max_tokens = out(rng);
    }
    return specs;
  }

  static void expect_same_as_alone(const std::vector<RequestSpec>& specs, const std::map<RequestId, Collected>& got) {
    ASSERT_EQ(got.size(), specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      const Collected& c = got.at(i + 1);
      const GenerationResult ref = alone(specs[i]);
      EXPECT_TRUE(c.finished);
      EXPECT_EQ(c.ids, ref.output_ids) << "request " << i;
    }
  }

  static test::ScratchDir* scratch_;
  static Engine* engine_;
};
test::ScratchDir* SchedulerTest::scratch_ = nullptr;
Engine* SchedulerTest::engine_ = nullptr;

TEST_F(SchedulerTest, ConcurrentGreedyRequestsMatchGenerateAlone) {
  // 10 requests over 4 slots: they queue, join and leave the batch at different steps.
  const auto specs = random_specs(10, 1, 1, 100, 24);
  Scheduler s(*engine_, {});
  const auto got = run_all(s, specs);
  expect_same_as_alone(specs, got);
  EXPECT_EQ(s.stats().kv_blocks_used, 0);
  EXPECT_EQ(s.stats().finished_total[size_t(EndReason::Length)], 10u);
}

TEST_F(SchedulerTest, ChunkedPrefillWithASmallBudgetMatchesAndKeepsDecoding) {
  SchedulerOptions o;
  o.max_num_tokens = 8;
  Scheduler s(*engine_, o);
  // A short request starts decoding, then a 100-token prompt arrives: its prefill takes 13+
  // steps of at most 7 tokens, and the short one still gets a token at every step.
  RequestSpec shortr;
  shortr.prompt = {5, 6, 7};
  shortr.max_tokens = 20;
  auto specs = random_specs(1, 2, 100, 100, 4);
  int short_tokens = 0;
  s.add(1, shortr, [&](RequestOutput&& o) { short_tokens += int(o.tokens.size()); }, std::chrono::steady_clock::now());
  s.step();
  ASSERT_EQ(short_tokens, 1);
  std::vector<int32_t> long_ids;
  s.add(2, specs[0], [&](RequestOutput&& o) { for (auto& t : o.tokens) long_ids.push_back(t.id); },
        std::chrono::steady_clock::now());
  for (int step = 0; step < 10; ++step) {
    const int fed = s.step();
    EXPECT_LE(fed, 8);
    EXPECT_EQ(short_tokens, step + 2) << "the decode stalled at step " << step;
  }
  while (s.has_work()) s.step();
  EXPECT_EQ(long_ids, alone(specs[0]).output_ids);

  // And a whole mixed set under the small budget.
  const auto mixed = random_specs(6, 3, 20, 120, 12);
  Scheduler s2(*engine_, o);
  expect_same_as_alone(mixed, run_all(s2, mixed));
}

TEST_F(SchedulerTest, SeededSamplingMatchesGenerate) {
  auto specs = random_specs(4, 4, 5, 40, 16);
  for (size_t i = 0; i < specs.size(); ++i) {
    specs[i].sampling.top_k = 0;
    specs[i].sampling.temperature = 0.9f;
    specs[i].sampling.top_p = 0.95f;
    specs[i].sampling.presence_penalty = 0.5f;
    specs[i].sampling.seed = 100 + i;
  }
  specs[3].sampling.seed = specs[2].sampling.seed;
  specs[3].prompt = specs[2].prompt;  // same seed, same prompt: same text
  specs[3].max_tokens = specs[2].max_tokens;
  Scheduler s(*engine_, {});
  const auto got = run_all(s, specs);
  expect_same_as_alone(specs, got);
  EXPECT_EQ(got.at(3).ids, got.at(4).ids);
}

// End ids and stop words (picked from each request's own greedy output, so they trigger mid-way)
// and seeded sampling behave as in generate(), with overlapped steps and without. Requests that
// all decode, with nothing waiting, run in overlapped steps: each decode step is queued before the
// ids of the one in flight are read, so a request that a stop rule ends has one more token
// computed in the step queued behind; it must be dropped, and sampled requests must draw exactly
// as generate() does.
TEST_F(SchedulerTest, StopRulesAndSamplingMatchGenerateWithOrWithoutOverlappedSteps) {
  auto specs = random_specs(4, 11, 10, 30, 20);
  for (auto& sp : specs) sp.max_tokens = 20;
  const auto r0 = alone(specs[0]).output_ids, r1 = alone(specs[1]).output_ids;
  specs[0].end_ids = {r0[5]};
  specs[1].stop_words = {{r1[7], r1[8]}};
  specs[2].sampling.top_k = 0;
  specs[2].sampling.temperature = 0.8f;
  specs[2].sampling.top_p = 0.9f;
  specs[2].sampling.seed = 42;
  for (bool overlap : {true, false}) {
    SchedulerOptions o;
    o.overlap_steps = overlap;
    Scheduler s(*engine_, o);
    const auto got = run_all(s, specs);
    expect_same_as_alone(specs, got);
    EXPECT_EQ(got.at(1).reason, EndReason::EndId);
    EXPECT_EQ(got.at(2).reason, EndReason::StopWord);
    EXPECT_EQ(got.at(3).reason, EndReason::Length);
    EXPECT_EQ(s.stats().kv_blocks_used, 0);
    EXPECT_EQ(s.stats().generation_tokens_total, uint64_t(5 + 9 + 20 + 20));
    if (overlap) {
      EXPECT_GT(s.stats().steps_overlapped_total, 10u);  // ~19 decode steps, all but the chain's first
    } else {
      EXPECT_EQ(s.stats().steps_overlapped_total, 0u);
    }
  }
}

// Overlapped steps carry on through admissions, prompt chunks and requests that reach max_tokens:
// the step queued ahead admits what waits, feeds prompt chunks their own tokens and each request
// that samples the token its in-flight row chooses (rows named by StepBatch::fed_rows, other than
// one a token), and leaves out the requests whose in-flight token is their last. Outputs equal
// generate() alone and the run without overlapped steps; nearly every step is queued ahead.
TEST_F(SchedulerTest, OverlappedStepsCarryAdmissionsPromptChunksAndLastTokens) {
  auto specs = random_specs(12, 21, 1, 100, 16);  // 12 requests over 4 slots, prompts over 64 tokens chunked
  specs[3].sampling.temperature = 0.7f;
  specs[3].sampling.top_k = 0;
  specs[3].sampling.seed = 5;
  std::map<bool, std::map<RequestId, Collected>> outputs;
  for (bool overlap : {true, false}) {
    SchedulerOptions o;
    o.overlap_steps = overlap;
    Scheduler s(*engine_, o);
    outputs[overlap] = run_all(s, specs);
    expect_same_as_alone(specs, outputs[overlap]);
    EXPECT_EQ(s.stats().kv_blocks_used, 0);
    if (overlap) {
      // Only the first step, and one after each moment when every running request ended together
      // and nothing could be admitted yet, are planned the plain way.
      EXPECT_GE(s.stats().steps_overlapped_total, s.stats().steps_total * 3 / 4)
          << s.stats().steps_overlapped_total << " of " << s.stats().steps_total << " steps queued ahead";
    }
  }
  for (const auto& [id, c] : outputs[true]) EXPECT_EQ(c.ids, outputs[false].at(id).ids) << "request " << id;
}

// A request cancelled while the step queued behind the last one holds a token of it: its blocks
// are free at once, it gets no output after its final one, and the others go on unchanged.
TEST_F(SchedulerTest, CancelWhileAStepIsQueuedAhead) {
  auto specs = random_specs(2, 12, 8, 16, 1);
  for (auto& sp : specs) sp.max_tokens = 24;
  Scheduler s(*engine_, {});
  std::map<RequestId, Collected> got;
  add_all(s, specs, got);
  for (int i = 0; i < 100 && s.stats().steps_overlapped_total < 3; ++i) s.step();
  ASSERT_GE(s.stats().steps_overlapped_total, 3u);
  ASSERT_TRUE(s.has_work());
  const int used = s.stats().kv_blocks_used;
  EXPECT_TRUE(s.cancel(1));
  EXPECT_LT(s.stats().kv_blocks_used, used);
  EXPECT_TRUE(got[1].finished);
  EXPECT_EQ(got[1].reason, EndReason::Cancelled);
  const size_t tokens_at_cancel = got[1].ids.size();
  while (s.has_work()) s.step();
  EXPECT_EQ(got[1].ids.size(), tokens_at_cancel);
  const auto ref = alone(specs[1]).output_ids;
  EXPECT_EQ(got[2].ids, ref);
  EXPECT_EQ(got[2].reason, EndReason::Length);
  EXPECT_EQ(s.stats().kv_blocks_used, 0);
}

TEST_F(SchedulerTest, MaxUtilizationPreemptsAndRecomputesToTheSameOutput) {
  SchedulerOptions o;
  o.capacity_policy = CapacityPolicy::MaxUtilization;
  o.tokens_per_block = 4;
  o.num_kv_blocks = 24;  // 96 tokens for 4 requests that grow to 60+ each
  o.max_num_tokens = 16;
  auto specs = random_specs(4, 6, 20, 40, 1);
  for (auto& sp : specs) sp.max_tokens = 24;
  Scheduler s(*engine_, o);
  const auto got = run_all(s, specs);
  expect_same_as_alone(specs, got);
  EXPECT_GT(s.stats().preemptions_total, 0u);
  EXPECT_EQ(s.stats().kv_blocks_used, 0);
}

TEST_F(SchedulerTest, NoEvictAdmitsOnlyWhatFitsAndNeverPreempts) {
  SchedulerOptions o;
  o.tokens_per_block = 4;
  o.num_kv_blocks = 20;  // 80 tokens: two 40-token requests at a time
  auto specs = random_specs(5, 7, 20, 20, 1);
  for (auto& sp : specs) sp.max_tokens = 20;
  Scheduler s(*engine_, o);
  int max_running = 0;
  std::map<RequestId, std::vector<int32_t>> got;
  for (size_t i = 0; i < specs.size(); ++i)
    s.add(i + 1, specs[i], [&got, i](RequestOutput&& out) { for (auto& t : out.tokens) got[i + 1].push_back(t.id); },
          std::chrono::steady_clock::now());
  while (s.has_work()) {
    s.step();
    max_running = std::max(max_running, s.stats().num_running);
    EXPECT_LE(s.stats().kv_blocks_used, 20);
  }
  EXPECT_EQ(max_running, 2);
  EXPECT_EQ(s.stats().preemptions_total, 0u);
  for (size_t i = 0; i < specs.size(); ++i) EXPECT_EQ(got[i + 1], alone(specs[i]).output_ids);
}

TEST_F(SchedulerTest, CancellationFreesCapacityAtOnce) {
  SchedulerOptions o;
  o.tokens_per_block = 4;
  o.num_kv_blocks = 12;  // one 48-token request at a time
  Scheduler s(*engine_, o);
  auto specs = random_specs(2, 8, 16, 16, 1);
  for (auto& sp : specs) sp.max_tokens = 32;
  std::map<RequestId, RequestOutput> last;
  std::map<RequestId, int> count;
  for (size_t i = 0; i < 2; ++i)
    s.add(i + 1, specs[i], [&, i](RequestOutput&& out) { count[i + 1] += int(out.tokens.size()); last[i + 1] = out; },
          std::chrono::steady_clock::now());
  for (int i = 0; i < 3; ++i) s.step();
  EXPECT_EQ(s.stats().num_running, 1);
  EXPECT_EQ(s.stats().num_waiting, 1);
  EXPECT_EQ(s.stats().kv_blocks_used, 12);

  EXPECT_TRUE(s.cancel(1));
  EXPECT_EQ(s.stats().kv_blocks_used, 0);  // before any further step
  EXPECT_EQ(s.stats().num_running, 0);
  EXPECT_TRUE(last[1].finished);
  EXPECT_EQ(last[1].end_reason, EndReason::Cancelled);
  EXPECT_EQ(count[1], 3);
  EXPECT_FALSE(s.cancel(1));  // already gone

  while (s.has_work()) s.step();
  EXPECT_EQ(last[2].end_reason, EndReason::Length);
  EXPECT_EQ(count[2], 32);
}

TEST_F(SchedulerTest, LogprobsAreALogSoftmax) {
  auto specs = random_specs(1, 9, 10, 10, 1);
  specs[0].max_tokens = 5;
  specs[0].top_logprobs = 3;
  Scheduler s(*engine_, {});
  const auto got = run_all(s, specs);
  const auto& toks = got.at(1).tokens;
  ASSERT_EQ(toks.size(), 5u);
  for (const auto& t : toks) {
    ASSERT_EQ(t.top.size(), 3u);
    EXPECT_EQ(t.top[0].token, t.id);  // greedy picks the most likely
    EXPECT_FLOAT_EQ(t.top[0].logprob, t.logprob);
    EXPECT_LE(t.logprob, 0.0f);
    EXPECT_GE(t.top[0].logprob, t.top[1].logprob);
    EXPECT_LE(std::exp(t.top[0].logprob) + std::exp(t.top[1].logprob) + std::exp(t.top[2].logprob), 1.0001);
  }
}

TEST_F(SchedulerTest, RejectsRequestsOverTheLimits) {
  Scheduler s(*engine_, {});
  RequestSpec r;
  r.prompt.assign(129, 1);
  try {
    s.add(1, r, nullptr, std::chrono::steady_clock::now());
    FAIL() << "a 129-token prompt was accepted";
  } catch (const RequestRejected& e) {
    EXPECT_EQ(e.param(), "prompt");
    EXPECT_NE(std::string(e.what()).find("max_input_len"), std::string::npos);
  }
  r.prompt.assign(100, 1);
  r.max_tokens = 93;  // 193 > max_seq_len 192
  EXPECT_THROW(s.add(2, r, nullptr, std::chrono::steady_clock::now()), RequestRejected);
  r.prompt = {600};
  r.max_tokens = 1;
  EXPECT_THROW(s.add(3, r, nullptr, std::chrono::steady_clock::now()), RequestRejected);
  EXPECT_FALSE(s.has_work());
}

TEST_F(SchedulerTest, ExecutorServesConcurrentSubmitters) {
  const auto specs = random_specs(12, 10, 1, 60, 10);
  std::vector<std::vector<int32_t>> got(specs.size());
  std::vector<int> finished(specs.size(), 0);
  {
    ExecutorOptions eo;
    Executor ex(*engine_, eo);
    std::vector<std::thread> threads;
    for (size_t i = 0; i < specs.size(); ++i)
      threads.emplace_back([&, i] {
        ex.submit(specs[i], [&, i](RequestOutput&& o) {
          for (auto& t : o.tokens) got[i].push_back(t.id);
          if (o.finished) ++finished[i];
        });
      });
    for (auto& t : threads) t.join();
    ex.drain();
    EXPECT_THROW(ex.submit(specs[0], nullptr), RequestRejected);  // draining: no new work
    const SchedulerStats st = ex.stats();
    EXPECT_EQ(st.num_running + st.num_waiting, 0);
    EXPECT_EQ(st.ttft.count(), specs.size());
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    EXPECT_EQ(finished[i], 1);
    EXPECT_EQ(got[i], alone(specs[i]).output_ids) << "request " << i;
  }
}

// Output callbacks run off the scheduler thread, so a slow one (here the first, which waits until
// the scheduler has made every token of the request) does not hold the steps up. When the
// scheduler thread called them, this wait never ended.
TEST_F(SchedulerTest, ExecutorStepsWhileAnOutputCallbackWaits) {
  ExecutorOptions eo;
  Executor ex(*engine_, eo);
  RequestSpec r;
  r.prompt = {1, 2, 3};
  r.max_tokens = 12;
  std::atomic<int> calls{0};
  std::atomic<bool> saw_all_tokens{false};
  std::vector<int32_t> got;
  ex.submit(r, [&](RequestOutput&& o) {
    for (auto& t : o.tokens) got.push_back(t.id);
    if (calls++ > 0) return;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (ex.stats().generation_tokens_total < uint64_t(r.max_tokens) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    saw_all_tokens = ex.stats().generation_tokens_total >= uint64_t(r.max_tokens);
  });
  ex.drain();
  EXPECT_TRUE(saw_all_tokens) << "the scheduler stopped stepping while an output callback ran";
  EXPECT_EQ(got, alone(r).output_ids);  // and every output still arrived, in order
}

// The engine reads KV only through the block tables: a sequence whose blocks are scattered over
// the pool in random order gives exactly the logits of one held in consecutive blocks, through
// chunked prefill and decode. A bad table is a host-side error.
TEST_F(SchedulerTest, EngineLogitsDoNotDependOnWhichBlocksHoldTheKV) {
  const KVCacheLayout& kv = engine_->kv_cache();
  const int n = 70, steps = 4, need = (n + steps + kv.tokens_per_block - 1) / kv.tokens_per_block;
  std::mt19937 rng(11);
  std::vector<int32_t> contiguous(static_cast<size_t>(need)), shuffled(static_cast<size_t>(kv.num_blocks));
  std::iota(contiguous.begin(), contiguous.end(), 0);
  std::iota(shuffled.begin(), shuffled.end(), 0);
  std::shuffle(shuffled.begin(), shuffled.end(), rng);
  shuffled.resize(size_t(need));
  const auto prompt = random_specs(1, 12, n, n, 1)[0].prompt;
  auto run = [&](const std::vector<int32_t>& table) {
    std::vector<std::vector<float>> logits;
    StepBatch b;
    b.block_tables = {table};
    for (int begin = 0; begin < n; begin += 40) {  // two prefill chunks: 40, then 30 after them
      const int T = std::min(40, n - begin);
      b.ids.assign(prompt.begin() + begin, prompt.begin() + begin + T);
      b.positions.resize(size_t(T));
      std::iota(b.positions.begin(), b.positions.end(), begin);
      b.seq_rows.assign(size_t(T), 0);
      b.logit_rows = {T - 1};
      logits.push_back(engine_->step(b));
    }
    for (int i = 0; i < steps; ++i) {  // greedy decode
      const auto& l = logits.back();
      b.ids = {int32_t(std::max_element(l.begin(), l.end()) - l.begin())};
      b.positions = {n + i};
      b.seq_rows = {0};
      b.logit_rows = {0};
      logits.push_back(engine_->step(b));
    }
    return logits;
  };
  const auto want = run(contiguous);
  const auto got = run(shuffled);
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], want[i]) << "step " << i;

  StepBatch bad;
  bad.ids = {1};
  bad.positions = {5};
  bad.seq_rows = {0};
  bad.logit_rows = {0};
  bad.block_tables = {{int32_t(kv.num_blocks), 0}};  // 5 / 4 = entry 1 is fine, entry 0 is not in the pool
  EXPECT_THROW(engine_->step(bad), Error);
  bad.block_tables = {{0}};  // position 5 needs entry 1: missing
  EXPECT_THROW(engine_->step(bad), Error);
  bad.block_tables = {{0, 1}};
  bad.seq_rows = {1};  // no such table
  EXPECT_THROW(engine_->step(bad), Error);
}

// Requests sharing a long prefix: with --enable_kv_cache_reuse the later ones take the first one's
// cached full blocks and compute fewer tokens, and every output equals the output with reuse off.
TEST_F(SchedulerTest, PrefixReuseComputesFewerTokensWithTheSameOutput) {
  const auto base = random_specs(1, 13, 61, 61, 1)[0].prompt;  // 15 full blocks of 4 + 1
  std::vector<RequestSpec> specs(4);
  for (size_t i = 0; i < specs.size(); ++i) {
    specs[i].prompt = base;
    specs[i].max_tokens = 6;
  }
  specs[1].prompt.push_back(7);
  specs[2].prompt.insert(specs[2].prompt.end(), {9, 10, 11, 12, 13});
  specs[3].prompt.resize(60);  // a prompt of whole cached blocks: its last token is still computed
  // One request after another, so each finds the blocks the earlier ones published.
  auto run_in_turn = [&](bool reuse) {
    SchedulerOptions o;
    o.enable_kv_cache_reuse = reuse;
    Scheduler s(*engine_, o);
    std::vector<std::vector<int32_t>> out;
    for (size_t i = 0; i < specs.size(); ++i) {
      const auto got = run_all(s, {specs[i]});
      out.push_back(got.at(1).ids);
    }
    EXPECT_EQ(s.stats().kv_blocks_used, 0);
    return std::pair{out, s.stats()};
  };
  const auto [off, off_stats] = run_in_turn(false);
  const auto [on, on_stats] = run_in_turn(true);
  EXPECT_EQ(on, off);
  for (size_t i = 0; i < specs.size(); ++i) EXPECT_EQ(off[i], alone(specs[i]).output_ids) << "request " << i;
  EXPECT_EQ(off_stats.reused_tokens_total, 0u);
  EXPECT_EQ(on_stats.reused_tokens_total, uint64_t(60 + 60 + 56));  // whole blocks, never the last token
  EXPECT_EQ(on_stats.computed_tokens_total + on_stats.reused_tokens_total, off_stats.computed_tokens_total);
  EXPECT_GT(on_stats.kv_blocks_cached, 0);
}

// Reuse under memory pressure: preempted requests give back their blocks (shared ones only
// drop a reference), recompute, and still produce the outputs of reuse off.
TEST_F(SchedulerTest, PrefixReuseSurvivesPreemptionAndCancellation) {
  auto specs = random_specs(4, 14, 30, 30, 1);
  for (size_t i = 1; i < specs.size(); ++i)  // a shared 24-token prefix, different tails
    std::copy_n(specs[0].prompt.begin(), 24, specs[i].prompt.begin());
  for (auto& sp : specs) sp.max_tokens = 24;
  std::vector<std::vector<int32_t>> want;
  for (const auto& sp : specs) want.push_back(alone(sp).output_ids);
  SchedulerOptions o;
  o.capacity_policy = CapacityPolicy::MaxUtilization;
  o.enable_kv_cache_reuse = true;
  o.num_kv_blocks = 28;  // 112 tokens: not enough for 4 x 54
  o.max_num_tokens = 16;
  Scheduler s(*engine_, o);
  const auto got = run_all(s, specs);
  for (size_t i = 0; i < specs.size(); ++i) EXPECT_EQ(got.at(i + 1).ids, want[i]) << "request " << i;
  EXPECT_GT(s.stats().preemptions_total, 0u);
  EXPECT_GT(s.stats().reused_tokens_total, 0u);
  EXPECT_EQ(s.stats().kv_blocks_used, 0);

  // Cancelling a request that shares blocks frees its own and keeps the others' intact.
  s.add(10, specs[0], nullptr, std::chrono::steady_clock::now());
  s.add(11, specs[1], nullptr, std::chrono::steady_clock::now());
  s.step();
  EXPECT_GT(s.stats().kv_blocks_used, 0);
  EXPECT_TRUE(s.cancel(10));
  EXPECT_TRUE(s.cancel(11));
  EXPECT_EQ(s.stats().kv_blocks_used, 0);
  const auto again = run_all(s, {specs[1]});
  EXPECT_EQ(again.at(1).ids, want[1]);
}

TEST_F(SchedulerTest, ExecutorRefusesWhenTheQueueIsFull) {
  ExecutorOptions eo;
  eo.max_queue = 2;
  eo.scheduler.max_batch_size = 1;
  Executor ex(*engine_, eo);
  RequestSpec r;
  r.prompt = {1, 2, 3};
  r.max_tokens = 100;
  int refused = 0;
  std::vector<RequestId> ids;
  for (int i = 0; i < 8; ++i) {
    try {
      ids.push_back(ex.submit(r, nullptr));
    } catch (const RequestRejected& e) {
      EXPECT_EQ(e.kind(), RequestRejected::Kind::QueueFull);
      ++refused;
    }
  }
  EXPECT_GE(refused, 5);  // at most one running + two waiting
  for (RequestId id : ids) ex.cancel(id);
  ex.drain();
}

}  // namespace
}  // namespace lamina
