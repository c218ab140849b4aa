// lamina build --checkpoint_dir CKPT --output_dir ENGINE [limits...]
#include "build/build_engine.h"
#include "commands.h"
#include "common/error.h"

namespace lamina::cli {

void register_build(CLI::App& app) {
  auto* sub = app.add_subcommand("build", "Lamina checkpoint → engine directory");
  auto opts = std::make_shared<BuildOptions>();
  auto seq = std::make_shared<int>(0), out = std::make_shared<int>(0), tokens = std::make_shared<int>(0);
  auto dtype = std::make_shared<std::string>();
  auto fp16 = std::make_shared<bool>(false);
  sub->add_option("--checkpoint_dir", opts->checkpoint_dir, "Output of lamina convert")->required();
  sub->add_option("--output_dir", opts->output_dir, "Where to write the engine")->required();
  sub->add_option("--max_batch_size", opts->max_batch_size, "Most sequences in flight")->capture_default_str();
  sub->add_option("--max_input_len", opts->max_input_len, "Longest prompt, in tokens")->capture_default_str();
  sub->add_option("--max_seq_len", *seq, "Longest prompt + output (default: max_position_embeddings)");
  sub->add_option("--max_output_len", *out, "Older spelling: max_seq_len = max_input_len + max_output_len");
  sub->add_option("--max_num_tokens", *tokens, "Most tokens in one forward step (prefill chunk)");
  sub->add_option("--tokenizer_dir", opts->tokenizer_dir, "Take tokenizer files from here");
  sub->add_option("--dtype", *dtype, "Engine dtype (default: the checkpoint's)")
      ->check(CLI::IsMember({"float32", "float16", "bfloat16", "fp32", "fp16", "bf16"}));
  sub->add_flag("--enable_fp16", *fp16, "Older spelling of --dtype float16");
  sub->add_option("--kv_cache_quant_algo", opts->kv_cache_quant_algo,
                  "FP8: keep the KV cache in float8 e4m3 (default: the checkpoint's setting from lamina convert)");
  sub->callback([=] {
    if (*seq > 0) opts->max_seq_len = *seq;
    if (*out > 0) opts->max_output_len = *out;
    if (*tokens > 0) opts->max_num_tokens = *tokens;
    if (*fp16 && !dtype->empty() && dtype_from_user_name(*dtype) != DType::F16)
      fail("--enable_fp16 contradicts --dtype ", *dtype, ": give one of them");
    if (*fp16) opts->dtype = DType::F16;
    if (!dtype->empty()) opts->dtype = dtype_from_user_name(*dtype);
    build_engine(*opts);
  });
}

}  // namespace lamina::cli
