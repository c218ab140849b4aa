// HF config.json (+ generation_config.json) → ModelConfig, for Llama 3, 3.1, 3.2 and 3.3.
// Both spellings are accepted: the Hub's (`rope_theta`, `rope_scaling`, `torch_dtype`) and
// transformers >= 5's (`rope_parameters`, `dtype`).
#pragma once
#include <string>

#include "common/json.h"
#include "model/model_config.h"

namespace lamina {

ModelConfig parse_hf_config(const Json& config, const std::string& where);
// Reads model_dir/config.json and, when present, generation_config.json (its eos list wins).
ModelConfig load_hf_config(const std::string& model_dir);

// Lamina/TensorRT-LLM checkpoint config.json ↔ ModelConfig.
Json model_config_to_json(const ModelConfig& cfg);
ModelConfig model_config_from_json(const Json& j, const std::string& where);

}  // namespace lamina
