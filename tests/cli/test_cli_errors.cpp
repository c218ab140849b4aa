// Bad input through the real binary: each case must exit non-zero with a message that names the
// problem, and must not leave a half-written output directory behind.
#include <gtest/gtest.h>

#include <fstream>

#include "common/json.h"
#include "test_support.h"

namespace lamina {
namespace {

using test::run_lamina;
using test::ScratchDir;
namespace fs = std::filesystem;

void copy_fixture(const std::string& name, const fs::path& dst) {
  fs::create_directories(dst);
  for (const auto& e : fs::directory_iterator(test::golden_dir(name))) fs::copy_file(e.path(), dst / e.path().filename());
}

void expect_failure(const test::CommandResult& r, const std::string& needle) {
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(needle), std::string::npos) << "expected '" << needle << "' in:\n" << r.output;
  EXPECT_EQ(r.output.find("terminate called"), std::string::npos) << r.output;
}

TEST(CliErrors, MissingModelDir) {
  ScratchDir s("cli");
  auto r = run_lamina("convert --model_dir " + (s / "nope").string() + " --output_dir " + (s / "out").string());
  expect_failure(r, "does not exist");
  EXPECT_FALSE(fs::exists(s / "out"));
}

TEST(CliErrors, ServeWithMissingEngine) {
  ScratchDir s("cli");
  auto r = run_lamina("serve --port 0 --engine_dir " + (s / "nope").string());
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_LT(r.exit_code, 128) << "crashed: " << r.output;  // a signal shows as 128+
  EXPECT_NE(r.output.find("error"), std::string::npos) << r.output;
}

TEST(CliErrors, TruncatedSafetensors) {
  ScratchDir s("cli");
  copy_fixture("gqa_f32_hub", s / "hf");
  fs::resize_file(s / "hf/model.safetensors", fs::file_size(s / "hf/model.safetensors") / 2);
  auto r = run_lamina("convert --model_dir " + (s / "hf").string() + " --output_dir " + (s / "out").string());
  expect_failure(r, "data section");
  EXPECT_FALSE(fs::exists(s / "out"));
  for (const auto& e : fs::directory_iterator(s.path())) EXPECT_EQ(e.path().filename().string().find(".partial"), std::string::npos);
}

TEST(CliErrors, CorruptSafetensorsHeader) {
  ScratchDir s("cli");
  copy_fixture("gqa_f32_hub", s / "hf");
  {
    std::fstream f(s / "hf/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(8);
    f.write("#garbage#", 9);
  }
  auto r = run_lamina("convert --model_dir " + (s / "hf").string() + " --output_dir " + (s / "out").string());
  expect_failure(r, "corrupt safetensors header");
  EXPECT_FALSE(fs::exists(s / "out"));
}

TEST(CliErrors, HugeHeaderLength) {
  ScratchDir s("cli");
  copy_fixture("gqa_f32_hub", s / "hf");
  {
    std::fstream f(s / "hf/model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    const uint64_t len = 1ull << 40;
    f.write(reinterpret_cast<const char*>(&len), 8);
  }
  auto r = run_lamina("convert --model_dir " + (s / "hf").string() + " --output_dir " + (s / "out").string());
  expect_failure(r, "exceeds 100 MB");
}

TEST(CliErrors, NotALlamaConfig) {
  ScratchDir s("cli");
  copy_fixture("gqa_f32_hub", s / "hf");
  std::ofstream(s / "hf/config.json") << R"({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "n_embd": 64})";
  auto r = run_lamina("convert --model_dir " + (s / "hf").string() + " --output_dir " + (s / "out").string());
  expect_failure(r, "not a Llama checkpoint");
}

TEST(CliErrors, ShapeMismatch) {
  ScratchDir s("cli");
  copy_fixture("gqa_f32_hub", s / "hf");
  std::ifstream in(s / "hf/config.json");
  std::string cfg((std::istreambuf_iterator<char>(in)), {});
  in.close();
  cfg.replace(cfg.find("\"intermediate_size\": 256"), 24, "\"intermediate_size\": 512");
  std::ofstream(s / "hf/config.json") << cfg;
  auto r = run_lamina("convert --model_dir " + (s / "hf").string() + " --output_dir " + (s / "out").string());
  expect_failure(r, "do not match config.json");
  EXPECT_FALSE(fs::exists(s / "out"));
}

TEST(CliErrors, UnknownQuantAlgo) {
  ScratchDir s("cli");
  auto r = run_lamina("convert --model_dir " + test::golden_dir("gqa_f32_hub").string() + " --output_dir " +
                      (s / "out").string() + " --quant_algo INT3");
  expect_failure(r, "unknown --quant_algo 'INT3' (supported: W8A16, FP8, W4A16_AWQ)");
  EXPECT_FALSE(fs::exists(s / "out"));
}

// --quantize_lm_head applies to the weight-only formats; alone or with FP8 it is refused before
// anything is written.
TEST(CliErrors, QuantizeLmHeadNeedsAWeightOnlyFormat) {
  ScratchDir s("cli");
  const std::string base = "convert --model_dir " + test::golden_dir("gqa_f32_hub").string() + " --output_dir " +
                           (s / "out").string() + " --quantize_lm_head";
  expect_failure(run_lamina(base), "--quantize_lm_head needs --quant_algo W8A16 or W4A16_AWQ (no --quant_algo was given)");
  EXPECT_FALSE(fs::exists(s / "out"));
  expect_failure(run_lamina(base + " --quant_algo FP8"),
                 "--quantize_lm_head needs --quant_algo W8A16 or W4A16_AWQ, not FP8 (FP8 keeps lm_head in the engine dtype)");
  EXPECT_FALSE(fs::exists(s / "out"));
}

TEST(CliErrors, KvCacheQuantAlgoOnlyFp8AndNotInFloat32) {
  ScratchDir s("cli");
  const std::string base = "convert --model_dir " + test::golden_dir("gqa_f32_hub").string() + " --output_dir " +
                           (s / "out").string();
  expect_failure(run_lamina(base + " --kv_cache_quant_algo INT8"), "unknown --kv_cache_quant_algo 'INT8' (supported: FP8)");
  EXPECT_FALSE(fs::exists(s / "out"));
  expect_failure(run_lamina(base + " --kv_cache_quant_algo FP8 --dtype float32"),
                 "--kv_cache_quant_algo FP8 needs a float16 or bfloat16 checkpoint");
  EXPECT_FALSE(fs::exists(s / "out"));
}

// lamina build --kv_cache_quant_algo FP8 turns an FP8 KV cache on for an engine of an unquantized
// checkpoint (written into the engine's config); a float32 engine or another value is refused
// with no engine written.
TEST(CliErrors, BuildKvCacheQuantAlgo) {
  ScratchDir s("cli");
  ASSERT_EQ(run_lamina("convert --model_dir " + test::golden_dir("gqa_f32_hub").string() + " --output_dir " +
                       (s / "ckpt").string()).exit_code, 0);
  const std::string build = "build --checkpoint_dir " + (s / "ckpt").string() + " --output_dir " +
                            (s / "engine").string() + " --max_input_len 32 --max_seq_len 64";
  expect_failure(run_lamina(build + " --kv_cache_quant_algo FP8"), "an FP8 KV cache needs a float16 or bfloat16 engine");
  EXPECT_FALSE(fs::exists(s / "engine"));
  expect_failure(run_lamina(build + " --kv_cache_quant_algo FP16 --dtype bfloat16"),
                 "unknown --kv_cache_quant_algo 'FP16' (supported: FP8)");
  EXPECT_FALSE(fs::exists(s / "engine"));
  auto r = run_lamina(build + " --kv_cache_quant_algo FP8 --dtype bfloat16");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const Json cfg = read_json_file((s / "engine" / "config.json").string());
  EXPECT_EQ(cfg["pretrained_config"]["quantization"]["kv_cache_quant_algo"], "FP8");
  std::ofstream(s / "ids.csv") << "5, 6, 7, 8\n";
  r = run_lamina("run --device cpu --engine_dir " + (s / "engine").string() + " --input_file " +
                 (s / "ids.csv").string() + " --max_output_len 4");
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Output ids [Text 0 Beam 0]"), std::string::npos) << r.output;
}

TEST(CliErrors, Int4NeedsKAMultipleOfTheGroupSize) {
  ScratchDir s("cli");  // intermediate_size 320: the down projection's K is not a multiple of 128
  auto r = run_lamina("convert --model_dir " + test::golden_dir("llama31_bf16_sharded").string() + " --output_dir " +
                      (s / "out").string() + " --quant_algo W4A16_AWQ");
  expect_failure(r, "intermediate_size per rank = 320 is not a multiple of the group size 128");
  EXPECT_FALSE(fs::exists(s / "out"));
}

TEST(CliErrors, TpSizeThatDoesNotDivideHeads) {
  ScratchDir s("cli");
  auto r = run_lamina("convert --model_dir " + test::golden_dir("gqa_f32_hub").string() + " --output_dir " +
                      (s / "out").string() + " --tp_size 3");
  expect_failure(r, "does not divide num_attention_heads");
}

class BuiltEngine : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(run_lamina("convert --model_dir " + test::golden_dir("gqa_f32_hub").string() + " --output_dir " +
                         (s_ / "ckpt").string()).exit_code, 0);
    auto r = run_lamina("build --checkpoint_dir " + (s_ / "ckpt").string() + " --output_dir " + (s_ / "engine").string() +
                        " --max_input_len 32 --max_seq_len 64");
    ASSERT_EQ(r.exit_code, 0) << r.output;
  }
  ScratchDir s_{"engine"};
};

TEST_F(BuiltEngine, RunsFromIdFile) {
  std::ofstream(s_ / "ids.csv") << "5, 6, 7, 8\n";
  auto r = run_lamina("run --device cpu --engine_dir " + (s_ / "engine").string() + " --input_file " +
                      (s_ / "ids.csv").string() + " --max_output_len 4 --output_npy " + (s_ / "out.npy").string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("Output ids [Text 0 Beam 0]"), std::string::npos) << r.output;
  EXPECT_TRUE(fs::exists(s_ / "out.npy"));
}

TEST_F(BuiltEngine, PromptLongerThanMaxInputLen) {
  std::string ids;
  for (int i = 0; i < 40; ++i) ids += std::to_string(5 + i) + ",";
  std::ofstream(s_ / "ids.csv") << ids << "\n";
  auto r = run_lamina("run --device cpu --engine_dir " + (s_ / "engine").string() + " --input_file " +
                      (s_ / "ids.csv").string() + " --max_output_len 4");
  expect_failure(r, "max_input_len 32");
}

TEST_F(BuiltEngine, OutputBeyondMaxSeqLen) {
  std::ofstream(s_ / "ids.csv") << "5,6,7\n";
  auto r = run_lamina("run --device cpu --engine_dir " + (s_ / "engine").string() + " --input_file " +
                      (s_ / "ids.csv").string() + " --max_output_len 100");
  expect_failure(r, "max_seq_len 64");
}

TEST_F(BuiltEngine, OtherFormatVersionIsRefused) {
  const fs::path engine_file = s_ / "engine/rank0.engine";
  {
    std::fstream f(engine_file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(8);
    const uint32_t v = 99;
    f.write(reinterpret_cast<const char*>(&v), 4);
  }
  auto r = run_lamina("run --device cpu --engine_dir " + (s_ / "engine").string() + " --input_file /dev/null");
  expect_failure(r, "format version 99");
}

TEST_F(BuiltEngine, ChecksumMismatchIsRefused) {
  const fs::path engine_file = s_ / "engine/rank0.engine";
  {
    std::fstream f(engine_file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(5000);
    f.write("\x7f\x7f\x7f\x7f", 4);
  }
  std::ofstream(s_ / "ids.csv") << "5,6,7\n";
  auto r = run_lamina("run --device cpu --engine_dir " + (s_ / "engine").string() + " --input_file " +
                      (s_ / "ids.csv").string());
  expect_failure(r, "checksum mismatch");
}

TEST_F(BuiltEngine, TruncatedEngineIsRefused) {
  const fs::path engine_file = s_ / "engine/rank0.engine";
  fs::resize_file(engine_file, fs::file_size(engine_file) - 100);
  std::ofstream(s_ / "ids.csv") << "5,6,7\n";
  auto r = run_lamina("run --device cpu --engine_dir " + (s_ / "engine").string() + " --input_file " +
                      (s_ / "ids.csv").string());
  expect_failure(r, "truncated");
}

TEST_F(BuiltEngine, ContradictoryBuildFlags) {
  auto r = run_lamina("build --checkpoint_dir " + (s_ / "ckpt").string() + " --output_dir " + (s_ / "e2").string() +
                      " --max_input_len 32 --max_seq_len 64 --max_output_len 10");
  expect_failure(r, "contradicts");
  EXPECT_FALSE(fs::exists(s_ / "e2"));
}

TEST_F(BuiltEngine, UnknownFlagIsAnError) {
  auto r = run_lamina("build --checkpoint_dir " + (s_ / "ckpt").string() + " --output_dir " + (s_ / "e3").string() +
                      " --use_gpt_attention_plugin bfloat16");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_FALSE(fs::exists(s_ / "e3"));
}

TEST_F(BuiltEngine, InspectListsTensors) {
  auto r = run_lamina("inspect --tensors " + (s_ / "engine").string());
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("layers.0.gate_up"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("max_seq_len"), std::string::npos);
}

}  // namespace
}  // namespace lamina
