// lamina convert: HF Llama checkpoint dir → Lamina (TensorRT-LLM schema) checkpoint dir:
// config.json + rank{r}.safetensors per tensor-parallel rank + the tokenizer files.
#pragma once
#include <string>

#include "common/dtype.h"

namespace lamina {

struct ConvertOptions {
  std::string model_dir;
  std::string output_dir;
  DType dtype = DType::BF16;
  bool dtype_given = false;  // false: keep the checkpoint's own dtype
  int tp_size = 1;
  int pp_size = 1;
  std::string quant_algo;  // "", "W8A16", "FP8" or "W4A16_AWQ" (TensorRT-LLM's names; others are refused)
  std::string kv_cache_quant_algo;  // "" or "FP8": an FP8 KV cache (no calibration: per-layer scales 1.0)
  bool quantize_lm_head = false;  // lm_head in the weight-only format too (W8A16, W4A16_AWQ only)
};

void convert_checkpoint(const ConvertOptions& opts);

}  // namespace lamina
