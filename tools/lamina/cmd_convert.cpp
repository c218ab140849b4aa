// lamina convert --model_dir HF_DIR --output_dir CKPT [--dtype D] [--tp_size N] [--pp_size 1]
//                [--quant_algo Q] [--quantize_lm_head] [--kv_cache_quant_algo FP8]
#include "commands.h"
#include "convert/convert.h"

namespace lamina::cli {

void register_convert(CLI::App& app) {
  auto* sub = app.add_subcommand("convert", "HF Llama checkpoint → Lamina checkpoint (TensorRT-LLM schema)");
  auto opts = std::make_shared<ConvertOptions>();
  auto dtype = std::make_shared<std::string>();
  sub->add_option("--model_dir", opts->model_dir, "HuggingFace checkpoint directory")->required();
  sub->add_option("--output_dir", opts->output_dir, "Where to write the checkpoint")->required();
  sub->add_option("--dtype", *dtype, "float32, float16 or bfloat16 (default: the checkpoint's dtype)")
      ->check(CLI::IsMember({"float32", "float16", "bfloat16", "fp32", "fp16", "bf16", "auto"}));
  sub->add_option("--tp_size", opts->tp_size, "Tensor-parallel ranks")->check(CLI::PositiveNumber);
  sub->add_option("--pp_size", opts->pp_size, "Pipeline-parallel ranks (only 1 is supported)");
  sub->add_option("--quant_algo", opts->quant_algo,
                  "Weight quantization (docs/quantization.md): W8A16 (int8, per-channel scales), FP8 (e4m3, per-tensor "
                  "scales, dynamic activation scales), W4A16_AWQ (int4, group-128 scales; round-to-nearest, no calibration)");
  sub->add_flag("--quantize_lm_head", opts->quantize_lm_head,
               "Quantize lm_head as well (W8A16, W4A16_AWQ; FP8 keeps it in the engine dtype): a quarter (int4) or "
               "half (int8) of its bytes, which a decode step reads once a token");
  sub->add_option("--kv_cache_quant_algo", opts->kv_cache_quant_algo,
                  "KV cache quantization: FP8 (e4m3, half the KV memory and reads; per-layer scales 1.0, no "
                  "calibration)");
  sub->callback([opts, dtype] {
    if (!dtype->empty() && *dtype != "auto") {
      opts->dtype = dtype_from_user_name(*dtype);
      opts->dtype_given = true;
    }
    convert_checkpoint(*opts);
  });
}

}  // namespace lamina::cli
