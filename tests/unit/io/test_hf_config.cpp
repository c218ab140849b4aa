#include <gtest/gtest.h>

#include "common/error.h"
#include "io/hf_config.h"
#include "test_support.h"

namespace lamina {

TEST(HfConfig, HubSpelling) {
  const ModelConfig c = load_hf_config(test::golden_dir("tied_mqa_f16_hub").string());
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_key_value_heads, 1);
  EXPECT_EQ(c.head_size, 32);  // explicit head_dim, not hidden / heads
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.dtype, "float16");
  EXPECT_EQ(c.rotary_scaling.type, "default");
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{2, 5}));
}

TEST(HfConfig, TransformersV5Spelling) {
  const ModelConfig c = load_hf_config(test::golden_dir("llama31_bf16_sharded").string());
  EXPECT_EQ(c.rotary_scaling.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rotary_scaling.factor, 8.0);
  EXPECT_EQ(c.rotary_scaling.original_max_position_embeddings, 32);
  EXPECT_DOUBLE_EQ(c.rotary_base, 500000.0);
  EXPECT_EQ(c.dtype, "bfloat16");
}

TEST(HfConfig, Llama31HubConfigAndIntEos) {
  const Json j = Json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 4096,
    "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
    "num_key_value_heads": 8, "vocab_size": 128256, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "max_position_embeddings": 131072, "torch_dtype": "bfloat16", "eos_token_id": 128001,
    "tie_word_embeddings": false})");
  const ModelConfig c = parse_hf_config(j, "config.json");
  EXPECT_EQ(c.head_size, 128);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{128001}));
  EXPECT_EQ(c.rotary_scaling.original_max_position_embeddings, 8192);
}

TEST(HfConfig, RejectsOtherArchitecturesAndBadShapes) {
  EXPECT_THROW(parse_hf_config(Json::parse(R"({"model_type": "mistral", "architectures": ["MistralForCausalLM"]})"), "x"), Error);
  EXPECT_THROW(parse_hf_config(Json::parse(R"({"model_type": "llama", "hidden_size": 64})"), "x"), Error);
  const Json bad_gqa = Json::parse(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 3, "vocab_size": 10})");
  EXPECT_THROW(parse_hf_config(bad_gqa, "x"), Error);
  const Json scaling = Json::parse(R"({"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 10, "rope_scaling": {"rope_type": "yarn", "factor": 4}})");
  EXPECT_THROW(parse_hf_config(scaling, "x"), Error);
}

TEST(HfConfig, CheckpointConfigRoundTrip) {
  ModelConfig c = load_hf_config(test::golden_dir("llama31_bf16_sharded").string());
  c.mapping = {2, 2, 1};
  const ModelConfig d = model_config_from_json(model_config_to_json(c), "config.json");
  EXPECT_EQ(d.mapping.tp_size, 2);
  EXPECT_EQ(d.rotary_scaling.type, "llama3");
  EXPECT_EQ(d.eos_token_ids, c.eos_token_ids);
  EXPECT_EQ(d.q_heads_per_rank(), 4);
  EXPECT_EQ(d.kv_heads_per_rank(), 1);
}

// The checkpoint's quantization block carries kv_cache_quant_algo FP8 through; other values are
// refused with the field named.
TEST(HfConfig, KvCacheQuantAlgoRoundTripsAndOnlyFp8) {
  ModelConfig c = load_hf_config(test::golden_dir("llama31_bf16_sharded").string());
  c.kv_cache_quant_algo = "FP8";
  Json j = model_config_to_json(c);
  EXPECT_EQ(j["quantization"]["kv_cache_quant_algo"], "FP8");
  EXPECT_EQ(model_config_from_json(j, "config.json").kv_cache_quant_algo, "FP8");
  c.kv_cache_quant_algo.clear();
  EXPECT_TRUE(model_config_to_json(c)["quantization"]["kv_cache_quant_algo"].is_null());
  j["dtype"] = "float32";  // an FP8 cache runs with 16-bit activations only
  try {
    model_config_from_json(j, "config.json");
    ADD_FAILURE() << "kv_cache_quant_algo FP8 with dtype float32 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("needs a float16 or bfloat16 model"), std::string::npos) << e.what();
  }
  j["dtype"] = "bfloat16";
  j["quantization"]["kv_cache_quant_algo"] = "INT8";
  try {
    model_config_from_json(j, "config.json");
    ADD_FAILURE() << "kv_cache_quant_algo INT8 was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("config.json: kv_cache_quant_algo 'INT8' is not supported (supported: FP8)"),
              std::string::npos)
        << e.what();
  }
}

// A quantized lm_head is written as TensorRT-LLM writes it: "lm_head" left out of
// quantization.exclude_modules. Without the list (older checkpoints) lm_head is not quantized;
// FP8 and unquantized checkpoints never have it.
TEST(HfConfig, QuantizedLmHeadRoundTripsThroughExcludeModules) {
  ModelConfig c = load_hf_config(test::golden_dir("llama31_bf16_sharded").string());
  EXPECT_TRUE(model_config_to_json(c)["quantization"]["exclude_modules"].is_null());
  c.quant_algo = "W4A16_AWQ";
  Json j = model_config_to_json(c);
  EXPECT_EQ(j["quantization"]["exclude_modules"], Json::array({"lm_head"}));
  EXPECT_FALSE(model_config_from_json(j, "config.json").quantize_lm_head);
  c.quantize_lm_head = true;
  j = model_config_to_json(c);
  EXPECT_EQ(j["quantization"]["exclude_modules"], Json::array());
  EXPECT_TRUE(model_config_from_json(j, "config.json").quantize_lm_head);
  j["quantization"]["exclude_modules"] = Json::array({"*lm_head*"});
  EXPECT_FALSE(model_config_from_json(j, "config.json").quantize_lm_head);
  j["quantization"].erase("exclude_modules");
  EXPECT_FALSE(model_config_from_json(j, "config.json").quantize_lm_head);
  j["quantization"]["exclude_modules"] = Json::array();
  j["quantization"]["quant_algo"] = "FP8";
  try {
    model_config_from_json(j, "config.json");
    ADD_FAILURE() << "an FP8 lm_head was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("a quantized lm_head needs quant_algo W8A16 or W4A16_AWQ"), std::string::npos)
        << e.what();
  }
  j["quantization"]["quant_algo"] = "W8A16";
  j["quantization"]["exclude_modules"] = "lm_head";
  try {
    model_config_from_json(j, "config.json");
    ADD_FAILURE() << "a string exclude_modules was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("quantization.exclude_modules must be a list"), std::string::npos) << e.what();
  }
}

TEST(HfConfig, KvHeadsDuplicateWhenTpExceedsThem) {
  ModelConfig c = load_hf_config(test::golden_dir("gqa_f32_hub").string());  // 8 q heads, 2 kv heads
  c.mapping = {4, 4, 1};
  EXPECT_EQ(c.kv_heads_per_rank(), 1);
  EXPECT_EQ(c.kv_head_for_rank(0, 0), 0);
  EXPECT_EQ(c.kv_head_for_rank(1, 0), 0);
  EXPECT_EQ(c.kv_head_for_rank(2, 0), 1);
  EXPECT_EQ(c.kv_head_for_rank(3, 0), 1);
}

}  // namespace lamina
