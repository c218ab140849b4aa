#include "engine_fixture.h"

#include <gtest/gtest.h>

#include <cstdio>

#include "build/build_engine.h"
#include "common/json.h"
#include "convert/convert.h"

namespace lamina::test {

std::unique_ptr<Engine> convert_build_load(const ScratchDir& scratch, const fs::path& hf_dir, const EngineSetup& setup) {
  ConvertOptions c;
  c.model_dir = hf_dir.string();
  c.output_dir = (scratch / "ckpt").string();
  c.dtype = setup.dtype;
  c.dtype_given = true;
  c.tp_size = setup.tp_size;
  c.quant_algo = setup.quant_algo;
  c.kv_cache_quant_algo = setup.kv_cache_quant_algo;
  c.quantize_lm_head = setup.quantize_lm_head;
  convert_checkpoint(c);
  BuildOptions b;
  b.checkpoint_dir = c.output_dir;
  b.output_dir = (scratch / "engine").string();
  b.max_input_len = setup.max_input_len;
  b.max_seq_len = setup.max_seq_len;
  b.max_num_tokens = setup.max_num_tokens;
  build_engine(b);
  EngineOptions eo;
  eo.device = setup.device;
  eo.num_slots = setup.num_slots;
  return Engine::load(b.output_dir, eo);
}

DefaultModelSample default_model_sample(int index) {
  DefaultModelSample d;
  d.model = source_dir() / "models/lamina-tiny-llama";
  const Json e = read_json_file((d.model / "eval.json").string());
  const Json& sample = e["greedy_fp32"]["samples"][size_t(index)];
  d.prompt = sample["prompt_ids"].get<std::vector<int32_t>>();
  d.expected = sample["output_ids"].get<std::vector<int32_t>>();
  d.margins = sample["top2_logit_margins"].get<std::vector<double>>();
  d.context_request.prompt = d.prompt;
  d.context_request.prompt.insert(d.context_request.prompt.end(), d.expected.begin(), d.expected.end());
  d.context_request.max_new_tokens = 1;
  d.context_request.return_context_logits = true;
  return d;
}

void expect_matches_default_sample(Engine& engine, DType dt, const DefaultModelSample& d,
                                   const std::vector<float>& ref_logits, const std::string& what) {
  const std::string name = dtype_user_name(dt);
  const double err = rel_l2(generate(engine, d.context_request).context_logits, ref_logits);
  std::printf("[ metric   ] default model %s %s context logits rel_l2 %.3g\n", name.c_str(), what.c_str(), err);
  EXPECT_LE(err, dt == DType::F32 ? 1e-4 : 1e-2) << name << " " << what;
  GenerationRequest greedy;
  greedy.prompt = d.prompt;
  greedy.max_new_tokens = int(d.expected.size());
  const size_t agreed = expect_greedy_agrees(generate(engine, greedy).output_ids, d.expected, d.margins,
                                             dt == DType::F32 ? 1e-2 : 0.25, name + " " + what);
  EXPECT_GT(agreed, 5u) << name << " " << what;
}

DecodeIds decode_stepwise_and_pipelined(Engine& stepwise, Engine& pipelined, const std::vector<int32_t>& prompt,
                                        const std::vector<TokenChoice>& choices) {
  const int n = int(prompt.size()), steps = int(choices.size());
  StepBatch b;
  b.block_tables.assign(1, {});
  for (int k = 0; k * stepwise.kv_cache().tokens_per_block < n + steps; ++k) b.block_tables[0].push_back(k);
  const auto prompt_step = [&] {
    b.ids = prompt;
    b.positions.resize(size_t(n));
    for (int t = 0; t < n; ++t) b.positions[size_t(t)] = t;
    b.seq_rows.assign(size_t(n), 0);
    b.logit_rows = {n - 1};
  };
  const auto token_step = [&](int32_t id, int pos) {
    b.ids = {id};
    b.positions = {pos};
    b.seq_rows = {0};
    b.logit_rows = {0};
  };
  DecodeIds out;
  prompt_step();
  out.stepwise.push_back(stepwise.step_and_choose(b, {choices[0]}, {}).ids.at(0));
  for (int i = 1; i < steps; ++i) {
    token_step(out.stepwise.back(), n + i - 1);
    out.stepwise.push_back(stepwise.step_and_choose(b, {choices[size_t(i)]}, {}).ids.at(0));
  }
  prompt_step();
  uint64_t ticket = pipelined.enqueue_step_and_choose(b, {choices[0]}, false);
  for (int i = 1; i < steps; ++i) {
    token_step(0, n + i - 1);  // id 0: the step must take the previous choice instead
    const uint64_t next = pipelined.enqueue_step_and_choose(b, {choices[size_t(i)]}, true);
    out.pipelined.push_back(pipelined.collect_chosen(ticket).at(0));
    ticket = next;
  }
  out.pipelined.push_back(pipelined.collect_chosen(ticket).at(0));
  return out;
}

}  // namespace lamina::test
