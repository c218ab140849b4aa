#include "model/model_config.h"

#include "common/error.h"

namespace lamina {

int64_t ModelConfig::kv_heads_per_rank() const {
  const int64_t tp = mapping.tp_size;
  return num_key_value_heads >= tp ? num_key_value_heads / tp : 1;
}

int64_t ModelConfig::kv_head_for_rank(int rank, int64_t j) const {
  const int64_t tp = mapping.tp_size;
  if (num_key_value_heads >= tp) return rank * kv_heads_per_rank() + j;
  // Fewer KV heads than ranks: consecutive ranks share (duplicate) one KV head.
  return rank / (tp / num_key_value_heads);
}

void ModelConfig::validate() const {
  if (vocab_size <= 0 || hidden_size <= 0 || intermediate_size <= 0 || num_hidden_layers <= 0 ||
      num_attention_heads <= 0 || num_key_value_heads <= 0 || head_size <= 0)
    fail("model config has a non-positive size (vocab, hidden, intermediate, layers, heads or head size)");
  if (num_attention_heads % num_key_value_heads != 0)
    fail("num_attention_heads (", num_attention_heads, ") is not a multiple of num_key_value_heads (",
         num_key_value_heads, ")");
  if (head_size % 2 != 0) fail("head size ", head_size, " must be even for rotary embeddings");
  if (hidden_act != "silu") fail("hidden_act '", hidden_act, "' is not supported (Llama uses silu)");
  if (!kv_cache_quant_algo_supported(kv_cache_quant_algo))
    fail("kv_cache_quant_algo '", kv_cache_quant_algo, "' is not supported (supported: ", kSupportedKvCacheQuantAlgos,
         ")");
  if (!kv_cache_quant_algo_fits_dtype(kv_cache_quant_algo, dtype))
    fail("kv_cache_quant_algo FP8 needs a float16 or bfloat16 model (dtype is float32)");
  if (quantize_lm_head && quant_algo != "W8A16" && quant_algo != "W4A16_AWQ")
    fail("a quantized lm_head needs quant_algo W8A16 or W4A16_AWQ (quant_algo is '", quant_algo,
         "'; FP8 keeps lm_head in the engine dtype)");
  const int64_t tp = mapping.tp_size;
  if (tp < 1) fail("tp_size must be at least 1");
  if (mapping.pp_size != 1) fail("pp_size ", mapping.pp_size, " is not supported: use --pp_size 1");
  if (num_attention_heads % tp != 0)
    fail("tp_size ", tp, " does not divide num_attention_heads ", num_attention_heads,
         ": choose a tp_size that divides the number of heads");
  if (num_key_value_heads % tp != 0 && tp % num_key_value_heads != 0)
    fail("tp_size ", tp, " and num_key_value_heads ", num_key_value_heads, " do not divide one another");
  if (intermediate_size % tp != 0)
    fail("tp_size ", tp, " does not divide intermediate_size ", intermediate_size);
  const auto& rs = rotary_scaling;
  if (rs.type != "default" && rs.type != "llama3" && rs.type != "linear")
    fail("rope scaling type '", rs.type, "' is not supported (supported: llama3, linear)");
}

}  // namespace lamina
