// lamina build: checkpoint dir → engine dir (config.json + rank{r}.engine + tokenizer files).
// Fuses gate/up into one matrix, converts to the engine dtype, records the runtime limits.
#pragma once
#include <cstdint>
#include <optional>
#include <string>

#include "common/dtype.h"
#include "common/json.h"

namespace lamina {

struct BuildOptions {
  std::string checkpoint_dir;
  std::string output_dir;
  std::string tokenizer_dir;  // optional: where the tokenizer files come from (default: checkpoint dir)
  int max_batch_size = 8;
  int max_input_len = 1024;
  std::optional<int> max_seq_len;     // default: max_input_len + max_output_len, else max_position_embeddings
  std::optional<int> max_output_len;  // TensorRT-LLM's older spelling
  std::optional<int> max_num_tokens;  // default: max(max_input_len, max_batch_size) capped at 8192
  std::optional<DType> dtype;         // default: the checkpoint's dtype
  // KV cache quantization of the engine: "FP8", or "" to keep the checkpoint's
  // (quantization.kv_cache_quant_algo). Unlike weight quantization it needs no converted tensors.
  std::string kv_cache_quant_algo;
};

// The build_config block written into the engine's config.json (exposed for tests).
struct BuildLimits {
  int max_batch_size, max_input_len, max_seq_len, max_num_tokens;
};

void build_engine(const BuildOptions& opts);

}  // namespace lamina
