#include "engine_fixture.h"

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

}  // namespace lamina::test
