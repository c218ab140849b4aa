// Converts + builds a HF checkpoint dir into a scratch dir and loads the engine: the set-up every
// end-to-end test shares.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "runtime/engine.h"
#include "runtime/generator.h"
#include "test_support.h"

namespace lamina::test {

struct EngineSetup {
  DType dtype = DType::F32;
  Device device = Device::CPU;
  int tp_size = 1;
  int max_input_len = 256;
  int max_seq_len = 512;
  int max_num_tokens = 40;  // smaller than the longer prompts: exercises chunked prefill
  std::string quant_algo;   // "", "W8A16", "FP8" or "W4A16_AWQ"
  std::string kv_cache_quant_algo;  // "" or "FP8"
  bool quantize_lm_head = false;    // lm_head in the quant_algo format too (W8A16, W4A16_AWQ)
  int num_slots = 1;                // sequences a step may hold (EngineOptions::num_slots; ≤ the build's 8)
};

std::unique_ptr<Engine> convert_build_load(const ScratchDir& scratch, const fs::path& hf_dir, const EngineSetup& setup);

// The bundled model (models/lamina-tiny-llama) and one of its recorded transformers fp32 greedy
// samples (eval.json): the prompt, the continuation and its top-2 logit margins, and a request for
// the context logits of prompt + continuation (a longer, real-text context).
struct DefaultModelSample {
  fs::path model;
  std::vector<int32_t> prompt, expected;
  std::vector<double> margins;
  GenerationRequest context_request;
};
DefaultModelSample default_model_sample(int index = 1);

// `engine` (built in dtype dt) against the sample: its context logits within 1e-4 (float32) or
// 1e-2 relative L2 of ref_logits (printed as the metric "default model <dtype> <what> context
// logits rel_l2"), and its greedy continuation equal to the sample's wherever the margin is clear,
// on more than 5 tokens.
void expect_matches_default_sample(Engine& engine, DType dt, const DefaultModelSample& d,
                                   const std::vector<float>& ref_logits, const std::string& what);

// One prompt step, then choices.size() - 1 one-token decode steps, on two engines built alike:
// `stepwise` gets each chosen id back on the host and sends it into the next step
// (step_and_choose); `pipelined` queues each step one ahead, fed by the previous choice where it
// was made (enqueue_step_and_choose with feed_previous, its batch ids left 0), and reads each id
// after the next step is queued. choices[i] chooses the i-th id. The ids of both, to compare.
struct DecodeIds {
  std::vector<int32_t> stepwise, pipelined;
};
DecodeIds decode_stepwise_and_pipelined(Engine& stepwise, Engine& pipelined, const std::vector<int32_t>& prompt,
                                        const std::vector<TokenChoice>& choices);

}  // namespace lamina::test
