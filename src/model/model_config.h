// ModelConfig: everything about a Llama-family model that shapes its weights and forward pass.
// Pure data; parsed from HF config.json (io/hf_config) and from/to Lamina checkpoint config.json.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lamina {

// HF `rope_scaling` / `rope_parameters`. type "default" means none.
struct RopeScaling {
  std::string type = "default";  // "default", "llama3", "linear"
  double factor = 1.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct TpMapping {
  int world_size = 1;
  int tp_size = 1;
  int pp_size = 1;
};

// --quant_algo values Lamina converts and runs (TensorRT-LLM's spellings).
inline constexpr const char* kSupportedQuantAlgos = "W8A16, FP8, W4A16_AWQ";
inline bool quant_algo_supported(const std::string& a) { return a == "W8A16" || a == "FP8" || a == "W4A16_AWQ"; }
// --kv_cache_quant_algo values ("" = the engine dtype).
inline constexpr const char* kSupportedKvCacheQuantAlgos = "FP8";
inline bool kv_cache_quant_algo_supported(const std::string& a) { return a.empty() || a == "FP8"; }
// Whether a KV cache of kv_cache_quant_algo a goes with a model of dtype `dtype` (its user name):
// an FP8 cache stores e4m3 made from 16-bit activations, so float16 or bfloat16 only. Convert,
// build and ModelConfig::validate() apply it, each naming its own way out.
inline bool kv_cache_quant_algo_fits_dtype(const std::string& a, const std::string& dtype) {
  return a != "FP8" || dtype != "float32";
}

struct ModelConfig {
  std::string architecture = "LlamaForCausalLM";
  std::string dtype = "bfloat16";  // storage dtype: float32, float16, bfloat16
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;
  int64_t head_size = 0;
  double norm_epsilon = 1e-5;
  double rotary_base = 10000.0;
  RopeScaling rotary_scaling;
  int64_t max_position_embeddings = 2048;
  bool tie_word_embeddings = false;
  std::string hidden_act = "silu";
  int64_t bos_token_id = -1;
  std::vector<int64_t> eos_token_ids;  // any of these ends generation
  TpMapping mapping;
  // Weight quantization of the linear layers (TensorRT-LLM's names; docs/quantization.md):
  //   ""          none
  //   "W8A16"     int8 weights, one float scale per output channel; activations in the engine dtype
  //   "FP8"       float8 e4m3 weights, one scale per tensor; activations quantized at run time
  //   "W4A16_AWQ" int4 weights, one scale per group of group_size input features (round-to-nearest)
  // The embedding is never quantized; lm_head only under quantize_lm_head.
  std::string quant_algo;
  int64_t group_size = 128;  // W4A16_AWQ only
  // lm_head in the weight-only format too (W8A16, W4A16_AWQ; TensorRT-LLM's --quantize_lm_head).
  // config.json says so as TensorRT-LLM does: "lm_head" is absent from quantization.exclude_modules.
  bool quantize_lm_head = false;
  // KV cache quantization: "" (the engine dtype) or "FP8" (float8 e4m3, one scale per layer for k
  // and one for v; without calibration data every scale is 1.0).
  std::string kv_cache_quant_algo;

  // Derived sizes for one tensor-parallel rank.
  int64_t q_heads_per_rank() const { return num_attention_heads / mapping.tp_size; }
  int64_t kv_heads_per_rank() const;  // KV heads are duplicated when tp_size > num_kv_heads
  int64_t intermediate_per_rank() const { return intermediate_size / mapping.tp_size; }
  int64_t vocab_per_rank() const { return (vocab_size + mapping.tp_size - 1) / mapping.tp_size; }  // padded
  int64_t qkv_rows_per_rank() const { return (q_heads_per_rank() + 2 * kv_heads_per_rank()) * head_size; }
  // The KV head a rank holds as its j-th local KV head.
  int64_t kv_head_for_rank(int rank, int64_t j) const;

  // Throws lamina::Error if the numbers don't describe a model we can run (or shard to tp_size).
  void validate() const;
};

}  // namespace lamina
