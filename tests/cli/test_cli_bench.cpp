// lamina bench_serving --engine_dir: the offline load test (engine + in-flight batching scheduler
// in-process, no HTTP) on the bundled model, CPU backend; also reached as `lamina bench --concurrency`.
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>
#include "test_support.h"

namespace lamina {
namespace {

using Json = nlohmann::json;
using test::run_lamina;
using test::ScratchDir;

class OfflineBench : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    scratch_ = new ScratchDir("bench_offline");
    const auto model = test::source_dir() / "models/lamina-tiny-llama";
    auto r = run_lamina("convert --model_dir " + model.string() + " --output_dir " + (*scratch_ / "ckpt").string() +
                        " --dtype float32");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    r = run_lamina("build --checkpoint_dir " + (*scratch_ / "ckpt").string() + " --output_dir " +
                   (*scratch_ / "engine").string() + " --max_batch_size 4 --max_input_len 32 --max_seq_len 64");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  static void TearDownTestSuite() { delete scratch_; }
  static std::string engine() { return (*scratch_ / "engine").string(); }
  static ScratchDir* scratch_;
};
ScratchDir* OfflineBench::scratch_ = nullptr;

TEST_F(OfflineBench, ReportsEveryTokenOfEveryRequest) {
  const auto json = *scratch_ / "offline.json";
  const auto r = run_lamina("bench_serving --engine_dir " + engine() + " --device cpu --concurrency 4 --num_requests 10" +
                            " --isl 12 --osl 6 --vocab_size 4000 --request_rate 200 --json " + json.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("output tok/s"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("offline"), std::string::npos) << r.output;
  std::ifstream in(json);
  const Json j = Json::parse(in, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["failed"], 0);
  EXPECT_EQ(j["offline"], true);
  EXPECT_EQ(j["output_tokens"], 60);  // exactly osl tokens each: no end id stops them
  EXPECT_GT(j["output_token_throughput"].get<double>(), 0);
  EXPECT_GT(j["ttft_ms"]["p50"].get<double>(), 0);
  EXPECT_GE(j["itl_ms"]["p99"].get<double>(), j["itl_ms"]["p50"].get<double>());
}

// --warmup N runs N requests of the same shape before the clock starts: they add no tokens to the
// report and no steps to its phases. One request at a time, each takes exactly osl steps (its
// prefill and osl - 1 decodes), so the timed run has 4 x 5 steps with or without the warm-up.
TEST_F(OfflineBench, WarmupRequestsAreNotCounted) {
  auto run = [&](int warmup) {
    const auto json = *scratch_ / ("warmup" + std::to_string(warmup) + ".json");
    const auto r = run_lamina("bench_serving --engine_dir " + engine() + " --device cpu --concurrency 1" +
                              " --num_requests 4 --isl 8 --osl 5 --vocab_size 4000 --warmup " + std::to_string(warmup) +
                              " --json " + json.string());
    EXPECT_EQ(r.exit_code, 0) << r.output;
    std::ifstream in(json);
    const Json j = Json::parse(in, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.output;
    if (!j.is_discarded()) EXPECT_EQ(j["output_tokens"], 20) << r.output;
    const size_t at = r.output.find("steps: ");
    EXPECT_NE(at, std::string::npos) << r.output;
    return at == std::string::npos ? -1 : std::atoi(r.output.c_str() + at + 7);
  };
  EXPECT_EQ(run(0), 20);
  EXPECT_EQ(run(3), 20);
}

// --max_num_tokens caps the scheduler's tokens a step below the engine's: at 4, an 8-token prompt
// is prefilled in two chunks, so each request (one at a time) takes 2 + 4 steps for its 5 tokens.
TEST_F(OfflineBench, MaxNumTokensChunksThePrefill) {
  auto steps = [&](const std::string& extra) {
    const auto r = run_lamina("bench_serving --engine_dir " + engine() + " --device cpu --concurrency 1" +
                              " --num_requests 4 --isl 8 --osl 5 --vocab_size 4000 --warmup 0" + extra);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    const size_t at = r.output.find("steps: ");
    EXPECT_NE(at, std::string::npos) << r.output;
    return at == std::string::npos ? -1 : std::atoi(r.output.c_str() + at + 7);
  };
  EXPECT_EQ(steps(""), 20);
  EXPECT_EQ(steps(" --max_num_tokens 4"), 24);
}

// The issue-style spelling: `lamina bench` with --concurrency/--isl/--osl is the serving load test.
TEST_F(OfflineBench, BenchWithConcurrencyIsTheServingLoadTest) {
  const auto r = run_lamina("bench --engine_dir " + engine() + " --device cpu --concurrency 2 --num_requests 4" +
                            " --isl 8 --osl 3 --vocab_size 4000");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("output tok/s"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("| offline "), std::string::npos) << r.output;
  // Without those flags it stays the batch-1 latency benchmark, whose flags bench_serving lacks.
  const auto latency = run_lamina("bench --engine_dir " + engine() + " --device cpu --input_len 8 --output_len 4 --runs 1");
  ASSERT_EQ(latency.exit_code, 0) << latency.output;
  EXPECT_EQ(latency.output.find("| offline "), std::string::npos) << latency.output;
  // Mixed: bench_serving names the flag it does not know.
  const auto mixed = run_lamina("bench --engine_dir " + engine() + " --device cpu --concurrency 2 --input_len 8");
  EXPECT_NE(mixed.exit_code, 0);
  EXPECT_NE(mixed.output.find("input_len"), std::string::npos) << mixed.output;
}

// Sampled decoding is timed with lamina run's flags, and the report says which choice ran.
TEST_F(OfflineBench, BatchOneBenchTimesSampledDecoding) {
  const auto json = *scratch_ / "sampled.json";
  const auto r = run_lamina("bench --engine_dir " + engine() + " --device cpu --input_len 8 --output_len 5 --runs 1" +
                            " --temperature 0.7 --top_k 50 --top_p 0.9 --random_seed 7 --json " + json.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("| temperature 0.7 top_k 50 top_p 0.9 |"), std::string::npos) << r.output;
  std::ifstream in(json);
  const Json j = Json::parse(in, nullptr, false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["sampling"], "temperature 0.7 top_k 50 top_p 0.9");
  EXPECT_GT(j["ms_per_token"].get<double>(), 0);
  // Greedy (the default) keeps the table's columns as they were.
  const auto greedy = run_lamina("bench --engine_dir " + engine() + " --device cpu --input_len 8 --output_len 3 --runs 1");
  ASSERT_EQ(greedy.exit_code, 0) << greedy.output;
  EXPECT_EQ(greedy.output.find("sampling"), std::string::npos) << greedy.output;
  // A value out of range is named before the engine loads.
  const auto bad = run_lamina("bench --engine_dir " + engine() + " --device cpu --top_k 50 --top_p 1.5");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("top_p"), std::string::npos) << bad.output;
}

TEST_F(OfflineBench, RefusesPromptIdsOutsideTheVocabulary) {
  const auto r = run_lamina("bench_serving --engine_dir " + engine() + " --device cpu --num_requests 1 --isl 4" +
                            " --osl 2 --vocab_size 999999");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("exceeds the engine's vocabulary"), std::string::npos) << r.output;
}

TEST_F(OfflineBench, ServerAndEngineAreExclusive) {
  const auto r = run_lamina("bench_serving --engine_dir " + engine() + " --server http://127.0.0.1:1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("excludes"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace lamina
