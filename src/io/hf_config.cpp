#include "io/hf_config.h"

#include <algorithm>
#include <filesystem>

#include "common/error.h"
#include "common/quant.h"

namespace lamina {

namespace {

std::vector<int64_t> id_list(const Json& v) {
  std::vector<int64_t> out;
  if (v.is_number_integer()) out.push_back(v.get<int64_t>());
  else if (v.is_array())
    for (const auto& x : v) out.push_back(x.get<int64_t>());
  return out;
}

RopeScaling parse_rope_scaling(const Json& s, const std::string& where) {
  RopeScaling rs;
  if (s.is_null()) return rs;
  if (!s.is_object()) fail(where, ": rope scaling must be an object");
  rs.type = json_get_or<std::string>(s, "rope_type", json_get_or<std::string>(s, "type", "default"));
  rs.factor = json_get_or<double>(s, "factor", 1.0);
  rs.low_freq_factor = json_get_or<double>(s, "low_freq_factor", 1.0);
  rs.high_freq_factor = json_get_or<double>(s, "high_freq_factor", 4.0);
  rs.original_max_position_embeddings = json_get_or<int64_t>(s, "original_max_position_embeddings", 8192);
  if (rs.type == "llama3" && rs.low_freq_factor >= rs.high_freq_factor)
    fail(where, ": llama3 rope scaling needs low_freq_factor < high_freq_factor");
  return rs;
}

Json rope_scaling_to_json(const RopeScaling& rs) {
  if (rs.type == "default") return nullptr;
  Json j = {{"rope_type", rs.type}, {"factor", rs.factor}};
  if (rs.type == "llama3") {
    j["low_freq_factor"] = rs.low_freq_factor;
    j["high_freq_factor"] = rs.high_freq_factor;
    j["original_max_position_embeddings"] = rs.original_max_position_embeddings;
  }
  return j;
}

// quantization.exclude_modules, as TensorRT-LLM writes it: the modules left in the engine dtype
// when quant_algo is set (null without quant_algo). Lamina's only optional one is lm_head.
Json exclude_modules_json(const ModelConfig& c) {
  if (c.quant_algo.empty()) return nullptr;
  return c.quantize_lm_head ? Json::array() : Json::array({"lm_head"});
}

// Whether a checkpoint's lm_head is quantized: quant_algo is set and exclude_modules is a list
// with no entry naming lm_head (TensorRT-LLM also writes patterns such as "*lm_head*"). Without
// the list (older checkpoints) lm_head stays in the engine dtype.
bool lm_head_quantized(const ModelConfig& c, const Json& quantization, const std::string& where) {
  if (c.quant_algo.empty() || !quantization.contains("exclude_modules")) return false;
  const Json& ex = quantization["exclude_modules"];
  if (ex.is_null()) return false;
  if (!ex.is_array()) fail(where, ": quantization.exclude_modules must be a list of module names, got ", ex.dump());
  for (const auto& m : ex)
    if (m.is_string() && m.get<std::string>().find("lm_head") != std::string::npos) return false;
  return true;
}

}  // namespace

ModelConfig parse_hf_config(const Json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": expected a JSON object");
  const auto archs = json_get_or<std::vector<std::string>>(j, "architectures", {});
  const auto model_type = json_get_or<std::string>(j, "model_type", "");
  const bool is_llama = model_type == "llama" ||
                        std::find(archs.begin(), archs.end(), "LlamaForCausalLM") != archs.end();
  if (!is_llama)
    fail(where, ": not a Llama checkpoint (model_type '", model_type, "'",
         archs.empty() ? std::string() : ", architectures " + Json(archs).dump(),
         "); Lamina converts LlamaForCausalLM models (Llama 3, 3.1, 3.2, 3.3)");
  if (json_get_or<bool>(j, "attention_bias", false) || json_get_or<bool>(j, "mlp_bias", false))
    fail(where, ": attention_bias/mlp_bias are not supported (Llama 3 has no biases)");

  ModelConfig c;
  c.vocab_size = json_get<int64_t>(j, "vocab_size", where);
  c.hidden_size = json_get<int64_t>(j, "hidden_size", where);
  c.intermediate_size = json_get<int64_t>(j, "intermediate_size", where);
  c.num_hidden_layers = json_get<int64_t>(j, "num_hidden_layers", where);
  c.num_attention_heads = json_get<int64_t>(j, "num_attention_heads", where);
  c.num_key_value_heads = json_get_or<int64_t>(j, "num_key_value_heads", c.num_attention_heads);
  c.head_size = json_get_or<int64_t>(j, "head_dim", c.num_attention_heads ? c.hidden_size / c.num_attention_heads : 0);
  c.norm_epsilon = json_get_or<double>(j, "rms_norm_eps", 1e-6);
  c.max_position_embeddings = json_get_or<int64_t>(j, "max_position_embeddings", 2048);
  c.tie_word_embeddings = json_get_or<bool>(j, "tie_word_embeddings", false);
  c.hidden_act = json_get_or<std::string>(j, "hidden_act", "silu");
  c.dtype = json_get_or<std::string>(j, "dtype", json_get_or<std::string>(j, "torch_dtype", "bfloat16"));

  // transformers >= 5: rope_parameters {rope_theta, rope_type, ...}; Hub: rope_theta + rope_scaling.
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    const Json& rp = j["rope_parameters"];
    c.rotary_base = json_get_or<double>(rp, "rope_theta", json_get_or<double>(j, "rope_theta", 10000.0));
    c.rotary_scaling = parse_rope_scaling(rp, where);
  } else {
    c.rotary_base = json_get_or<double>(j, "rope_theta", 10000.0);
    if (j.contains("rope_scaling")) c.rotary_scaling = parse_rope_scaling(j["rope_scaling"], where);
  }
  if (c.rotary_scaling.type == "default" && c.rotary_scaling.factor != 1.0) c.rotary_scaling = RopeScaling{};
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer()) c.bos_token_id = j["bos_token_id"];
  if (j.contains("eos_token_id")) c.eos_token_ids = id_list(j["eos_token_id"]);
  try {
    c.validate();
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
  return c;
}

ModelConfig load_hf_config(const std::string& model_dir) {
  namespace fs = std::filesystem;
  const fs::path dir(model_dir);
  if (!fs::is_directory(dir)) fail("model directory '", model_dir, "' does not exist");
  const fs::path cfg_path = dir / "config.json";
  if (!fs::exists(cfg_path)) fail("'", cfg_path.string(), "' is missing: --model_dir must be a HuggingFace checkpoint directory");
  ModelConfig c = parse_hf_config(read_json_file(cfg_path.string()), cfg_path.string());
  const fs::path gen_path = dir / "generation_config.json";
  if (fs::exists(gen_path)) {
    const Json g = read_json_file(gen_path.string());
    if (g.contains("eos_token_id")) {
      auto ids = id_list(g["eos_token_id"]);
      if (!ids.empty()) c.eos_token_ids = ids;
    }
    if (g.contains("bos_token_id") && g["bos_token_id"].is_number_integer()) c.bos_token_id = g["bos_token_id"];
  }
  return c;
}

Json model_config_to_json(const ModelConfig& c) {
  return {
      {"architecture", c.architecture},
      {"dtype", c.dtype},
      {"vocab_size", c.vocab_size},
      {"hidden_size", c.hidden_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"head_size", c.head_size},
      {"intermediate_size", c.intermediate_size},
      {"hidden_act", c.hidden_act},
      {"norm_epsilon", c.norm_epsilon},
      {"position_embedding_type", "rope_gpt_neox"},
      {"rotary_base", c.rotary_base},
      {"rotary_scaling", rope_scaling_to_json(c.rotary_scaling)},
      {"max_position_embeddings", c.max_position_embeddings},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"bos_token_id", c.bos_token_id},
      {"eos_token_id", c.eos_token_ids},
      {"mapping", {{"world_size", c.mapping.world_size}, {"tp_size", c.mapping.tp_size}, {"pp_size", c.mapping.pp_size}}},
      {"quantization", {{"quant_algo", c.quant_algo.empty() ? Json(nullptr) : Json(c.quant_algo)},
                        {"kv_cache_quant_algo", c.kv_cache_quant_algo.empty() ? Json(nullptr) : Json(c.kv_cache_quant_algo)},
                        {"group_size", c.group_size},
                        {"exclude_modules", exclude_modules_json(c)}}},
  };
}

ModelConfig model_config_from_json(const Json& j, const std::string& where) {
  ModelConfig c;
  c.architecture = json_get<std::string>(j, "architecture", where);
  if (c.architecture != "LlamaForCausalLM")
    fail(where, ": architecture '", c.architecture, "' is not supported (expected LlamaForCausalLM)");
  c.dtype = json_get<std::string>(j, "dtype", where);
  c.vocab_size = json_get<int64_t>(j, "vocab_size", where);
  c.hidden_size = json_get<int64_t>(j, "hidden_size", where);
  c.num_hidden_layers = json_get<int64_t>(j, "num_hidden_layers", where);
  c.num_attention_heads = json_get<int64_t>(j, "num_attention_heads", where);
  c.num_key_value_heads = json_get_or<int64_t>(j, "num_key_value_heads", c.num_attention_heads);
  c.head_size = json_get_or<int64_t>(j, "head_size", c.hidden_size / c.num_attention_heads);
  c.intermediate_size = json_get<int64_t>(j, "intermediate_size", where);
  c.hidden_act = json_get_or<std::string>(j, "hidden_act", "silu");
  c.norm_epsilon = json_get_or<double>(j, "norm_epsilon", 1e-5);
  c.rotary_base = json_get_or<double>(j, "rotary_base", 10000.0);
  if (j.contains("rotary_scaling")) c.rotary_scaling = parse_rope_scaling(j["rotary_scaling"], where);
  c.max_position_embeddings = json_get_or<int64_t>(j, "max_position_embeddings", 2048);
  c.tie_word_embeddings = json_get_or<bool>(j, "tie_word_embeddings", false);
  c.bos_token_id = json_get_or<int64_t>(j, "bos_token_id", -1);
  if (j.contains("eos_token_id")) c.eos_token_ids = id_list(j["eos_token_id"]);
  if (j.contains("mapping")) {
    const Json& m = j["mapping"];
    c.mapping.tp_size = json_get_or<int>(m, "tp_size", 1);
    c.mapping.pp_size = json_get_or<int>(m, "pp_size", 1);
    c.mapping.world_size = json_get_or<int>(m, "world_size", c.mapping.tp_size * c.mapping.pp_size);
  }
  if (j.contains("quantization") && j["quantization"].is_object()) {
    const Json& q = j["quantization"];
    if (q.contains("quant_algo") && !q["quant_algo"].is_null()) {
      c.quant_algo = q["quant_algo"].is_string() ? q["quant_algo"].get<std::string>() : q["quant_algo"].dump();
      if (!quant_algo_supported(c.quant_algo))
        fail(where, ": quant_algo ", q["quant_algo"].dump(), " is not supported (supported: ", kSupportedQuantAlgos, ")");
    }
    c.group_size = json_get_or<int64_t>(q, "group_size", 128);
    if (c.quant_algo == "W4A16_AWQ" && c.group_size != kInt4GroupSize)
      fail(where, ": W4A16_AWQ with group_size ", c.group_size, " is not supported (only ", kInt4GroupSize, ")");
    c.quantize_lm_head = lm_head_quantized(c, q, where);
    if (q.contains("kv_cache_quant_algo") && !q["kv_cache_quant_algo"].is_null()) {  // validate() checks it
      const Json& kv = q["kv_cache_quant_algo"];
      c.kv_cache_quant_algo = kv.is_string() ? kv.get<std::string>() : kv.dump();
    }
  }
  try {
    c.validate();
  } catch (const Error& e) {
    fail(where, ": ", e.what());
  }
  return c;
}

}  // namespace lamina
