// Tensor parallelism on GPUs (one rank per GPU, NCCL all-reduce): an engine converted with
// --tp_size 2, 4 or 8 gives tp 1's logits within the dtype's tolerance, greedy ids agree with
// transformers' where the margin is clear, and step_and_choose follows the gathered logits.
// Skips without NCCL or with fewer than 2 GPUs (CI); scripts/device-check.sh runs it on a
// multi-GPU machine (TARGETS=test_gpu_tensor_parallel).
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "common/error.h"
#include "common/json.h"
#include "engine_fixture.h"
#include "io/npy.h"
#include "runtime/engine.h"
#include "runtime/generator.h"
#include "test_support.h"
#include "token_choice_oracle.h"
#if LAMINA_HAVE_CUDA
#include "backends/cuda/cuda_backend.h"
#endif

namespace lamina {
namespace {

using test::ScratchDir;

int visible_gpus() {
#if LAMINA_HAVE_CUDA
  return cuda_device_count();
#else
  return 0;
#endif
}

#if LAMINA_HAVE_NCCL
constexpr bool kHaveNccl = true;
#else
constexpr bool kHaveNccl = false;
#endif

#define SKIP_WITHOUT_GPUS(n)                                                                        \
  if (!kHaveNccl) GTEST_SKIP() << "built without NCCL: multi-GPU test skipped";                     \
  if (visible_gpus() < (n)) GTEST_SKIP() << visible_gpus() << " GPU(s) visible, " << (n) << " needed"

// The tensor-parallel sizes this machine and the fixture allow: tp must divide the q heads.
std::vector<int> tp_sizes(const test::fs::path& fixture) {
  const Json cfg = read_json_file((fixture / "config.json").string());
  const int heads = cfg["num_attention_heads"].get<int>();
  std::vector<int> out;
  for (int tp : {2, 4, 8})
    if (tp <= visible_gpus() && heads % tp == 0) out.push_back(tp);
  return out;
}

std::unique_ptr<Engine> make_engine(const ScratchDir& s, const test::fs::path& model, DType dtype, int tp) {
  test::EngineSetup setup;
  setup.dtype = dtype;
  setup.device = Device::CUDA;
  setup.tp_size = tp;
  return test::convert_build_load(s, model, setup);
}

struct Case {
  std::string fixture;
  DType dtype;
  double tolerance;  // relative L2 of tp N's context logits against tp 1's
};

class GpuTensorParallel : public ::testing::TestWithParam<Case> {};

TEST_P(GpuTensorParallel, MatchesOneGpu) {
  SKIP_WITHOUT_GPUS(2);
  const Case& c = GetParam();
  const auto dir = test::golden_dir(c.fixture);
  const Json ref = read_json_file((dir / "reference.json").string());
  GenerationRequest req;
  req.prompt = ref["input_ids"].get<std::vector<int32_t>>();
  const auto greedy = ref["greedy_ids"].get<std::vector<int32_t>>();
  const auto margins = ref["greedy_top2_margins"].get<std::vector<double>>();
  req.max_new_tokens = int(greedy.size());  // decode steps: recorded, then replayed from CUDA graphs
  req.return_context_logits = true;

  // The one-GPU test's rule (test_gpu_end_to_end.cpp): on these random weights transformers' own
  // bf16 forward is ~2e-2 from its fp32 one, and tp N rounds each rank's partial sum to bf16 before
  // the all-reduce, so a bf16 engine is held to 1e-2 or 1.5x that noise, whichever is larger. The
  // bundled model (real weights, below) is held to 1e-2 flat.
  double tol = c.tolerance;
  if (c.dtype == DType::BF16 && ref.contains("hf_bf16_rel_l2")) tol = std::max(tol, 1.5 * ref["hf_bf16_rel_l2"].get<double>());
  ScratchDir s1("tp1");
  const GenerationResult base = generate(*make_engine(s1, dir, c.dtype, 1), req);
  const std::vector<int> sizes = tp_sizes(dir);
  ASSERT_FALSE(sizes.empty());
  for (int tp : sizes) {
    SCOPED_TRACE(c.fixture + " " + dtype_user_name(c.dtype) + " tp " + std::to_string(tp));
    ScratchDir s("tp");
    auto engine = make_engine(s, dir, c.dtype, tp);
    EXPECT_EQ(engine->config().mapping.tp_size, tp);
    const GenerationResult r = generate(*engine, req);
    const double err = test::rel_l2(r.context_logits, base.context_logits);
    std::printf("[ metric   ] %s %s tp %d vs tp 1 context logits rel_l2 %.3g (bound %.3g)\n", c.fixture.c_str(),
                dtype_user_name(c.dtype).c_str(), tp, err, tol);
    EXPECT_LE(err, tol);
    // Greedy ids: tp N against transformers where its margin is clear, as the one-GPU test does.
    test::expect_greedy_agrees(r.output_ids, greedy, margins, c.dtype == DType::F32 ? 1e-2 : 50 * tol,
                               c.fixture + " tp " + std::to_string(tp));
    // And against tp 1 itself on the first token, where its margin is clear.
    ASSERT_FALSE(r.output_ids.empty());
    if (!margins.empty() && margins[0] > 50 * tol) {
      EXPECT_EQ(r.output_ids[0], base.output_ids[0]);
    }
  }
}

// bf16/f16 tolerance 1e-2 (DESIGN.md §5), widened for bf16 on random weights as the test says.
INSTANTIATE_TEST_SUITE_P(Fixtures, GpuTensorParallel,
                         ::testing::Values(Case{"llama31_bf16_sharded", DType::F32, 1e-4},
                                           Case{"gqa_f32_hub", DType::F32, 1e-4},
                                           Case{"llama31_bf16_sharded", DType::BF16, 1e-2},
                                           Case{"gqa_f32_hub", DType::BF16, 1e-2},
                                           Case{"tied_mqa_f16_hub", DType::F16, 1e-2}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return i.param.fixture + "_" + dtype_user_name(i.param.dtype);
                         });

// The bundled model (trained weights, 8 q / 2 kv heads): tp 2 context logits within 1e-2 of tp 1's
// in bf16 and 1e-4 in f32, and tp 2's greedy continuation equal to transformers' fp32 one
// (eval.json) wherever its margin is clear.
TEST(GpuTensorParallelDefaultModel, MatchesOneGpu) {
  SKIP_WITHOUT_GPUS(2);
  const test::DefaultModelSample d = test::default_model_sample();
  for (DType dt : {DType::F32, DType::BF16}) {
    ScratchDir s1("default-tp1"), s2("default-tp2");
    const std::vector<float> tp1_logits = generate(*make_engine(s1, d.model, dt, 1), d.context_request).context_logits;
    test::expect_matches_default_sample(*make_engine(s2, d.model, dt, 2), dt, d, tp1_logits, "tp 2 vs tp 1");
  }
}

// step_and_choose on a vocabulary split over GPUs: greedy rows (joined per-rank argmaxes) give
// exactly the argmax of the logits step() gathers; sampled rows follow the definition; host
// rows bring the gathered logits.
TEST(GpuTensorParallelChoice, ChosenIdsFollowTheGatheredLogits) {
  SKIP_WITHOUT_GPUS(2);
  const auto dir = test::golden_dir("llama31_bf16_sharded");
  const Json ref = read_json_file((dir / "reference.json").string());
  const auto prompt = ref["input_ids"].get<std::vector<int32_t>>();
  for (int tp : tp_sizes(dir)) {
    for (DType dt : {DType::F32, DType::BF16}) {
      ScratchDir s("tp-choose");
      auto engine = make_engine(s, dir, dt, tp);
      const int T = std::min<int>(24, int(prompt.size())), V = int(engine->config().vocab_size);
      std::vector<int32_t> ids(prompt.begin(), prompt.begin() + T), pos(static_cast<size_t>(T)), slots(static_cast<size_t>(T), 0), rows;
      for (int t = 0; t < T; ++t) pos[size_t(t)] = t, rows.push_back(t);
      StepBatch batch{ids, pos, slots, {{}}, rows};
      for (int b = 0; b * engine->kv_cache().tokens_per_block < T; ++b) batch.block_tables[0].push_back(b);
      const std::vector<float> logits = engine->step(batch);
      const std::vector<int32_t> host_rows = {3};

      std::vector<TokenChoice> greedy(rows.size());
      for (auto& c : greedy) c.temperature = 0.0f;
      const ChosenTokens g = engine->step_and_choose(batch, greedy, host_rows);
      for (size_t i = 0; i < rows.size(); ++i)
        EXPECT_EQ(g.ids[i], choose_token(logits.data() + i * size_t(V), V, greedy[i]))
            << "tp " << tp << " " << dtype_user_name(dt) << " greedy row " << i;
      ASSERT_EQ(g.host_logits.size(), size_t(V));
      EXPECT_TRUE(std::equal(g.host_logits.begin(), g.host_logits.end(), logits.begin() + 3 * V));

      std::mt19937_64 rng{uint64_t(tp)};
      const std::vector<TokenChoice> sampled = test::make_params(rng, T);
      const ChosenTokens got = engine->step_and_choose(batch, sampled, host_rows);
      for (int i = 0; i < T; ++i) {
        SCOPED_TRACE("tp " + std::to_string(tp) + " " + dtype_user_name(dt) + " row " + std::to_string(i));
        test::expect_valid_choice(got.ids[size_t(i)], logits.data() + size_t(i) * V, V, sampled[size_t(i)]);
      }
    }
  }
}

// Too few GPUs for the engine's tp_size is a clear error, not a hang (runs on one GPU too).
// Pipelined decoding over tp GPUs: greedy steps queued one ahead, each fed on the devices by the
// ranks' slice argmaxes all-gathered through the all-reduce, and sampled steps chosen on the host
// in between, give step-by-step decoding's ids.
TEST(GpuTensorParallelChoice, PipelinedDecodeMatchesStepwise) {
  SKIP_WITHOUT_GPUS(2);
  const auto dir = test::golden_dir("llama31_bf16_sharded");
  const Json ref = read_json_file((dir / "reference.json").string());
  const auto all = ref["input_ids"].get<std::vector<int32_t>>();
  const std::vector<int32_t> prompt(all.begin(), all.begin() + std::min<size_t>(16, all.size()));
  std::vector<TokenChoice> choices(24, TokenChoice{0.0f, 0, 1.0f, 0.0f});
  for (size_t i = 8; i < 12; ++i) choices[i] = TokenChoice{1.5f, 0, 1.0f, 0.1f + 0.2f * float(i - 8)};
  for (int tp : tp_sizes(dir)) {
    for (DType dt : {DType::F32, DType::BF16}) {
      SCOPED_TRACE("tp " + std::to_string(tp) + " " + dtype_user_name(dt));
      ScratchDir s1("tp-stepwise"), s2("tp-pipelined");
      auto stepwise = make_engine(s1, dir, dt, tp);
      auto pipelined = make_engine(s2, dir, dt, tp);
      const test::DecodeIds ids = test::decode_stepwise_and_pipelined(*stepwise, *pipelined, prompt, choices);
      EXPECT_EQ(ids.pipelined, ids.stepwise);
    }
  }
}

TEST(GpuTensorParallelErrors, TooFewGpusIsAnError) {
  SKIP_WITHOUT_GPUS(1);
  const auto dir = test::golden_dir("llama31_bf16_sharded");
  int tp = 0;
  for (int t : {2, 4, 8})
    if (t > visible_gpus()) { tp = t; break; }
  if (tp == 0) GTEST_SKIP() << "every tp size of the fixture fits on " << visible_gpus() << " GPUs";
  ScratchDir s("tp-few");
  try {
    make_engine(s, dir, DType::BF16, tp);
    FAIL() << "loading a tp " << tp << " engine on " << visible_gpus() << " GPU(s) should fail";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("GPUs are visible"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lamina
