// Tensor names in the three formats Lamina touches: HF checkpoints, Lamina/TensorRT-LLM
// checkpoints (DESIGN.md §2) and Lamina engine files (fused, in the layout the kernels read).
#pragma once
#include <string>

namespace lamina::names {

inline std::string hf_layer(int i, const std::string& rest) { return "model.layers." + std::to_string(i) + "." + rest; }
inline std::string ckpt_layer(int i, const std::string& rest) {
  return "transformer.layers." + std::to_string(i) + "." + rest;
}
inline std::string engine_layer(int i, const std::string& rest) { return "layers." + std::to_string(i) + "." + rest; }

// A W8A16 weight's scales (TensorRT-LLM's name): "x.weight" → "x.per_channel_scale" [rows] float32.
inline std::string ckpt_scale_name(const std::string& weight) {
  return weight.substr(0, weight.size() - std::string(".weight").size()) + ".per_channel_scale";
}
// An FP8 or W4A16_AWQ weight's scales (TensorRT-LLM's name): "x.weight" → "x.weights_scaling_factor"
// (FP8: [1] float32, one per tensor; W4A16_AWQ: [rows, cols / group_size] float32).
inline std::string ckpt_weights_scaling_factor_name(const std::string& weight) {
  return weight.substr(0, weight.size() - std::string(".weight").size()) + ".weights_scaling_factor";
}
// In the engine, a quantized tensor "x" has its scales in "x.scale" float32 (common/quant.h).
inline std::string engine_scale_name(const std::string& tensor) { return tensor + ".scale"; }

// Checkpoint (TensorRT-LLM schema)
inline const std::string kCkptEmbedding = "transformer.vocab_embedding.weight";
inline const std::string kCkptFinalNorm = "transformer.ln_f.weight";
inline const std::string kCkptLmHead = "lm_head.weight";

// Engine
inline const std::string kEngEmbedding = "embedding";      // [vocab, hidden]
inline const std::string kEngFinalNorm = "final_norm";     // [hidden]
inline const std::string kEngLmHead = "lm_head";           // [vocab_per_rank (padded), hidden]
inline const std::string kEngInputNorm = "input_norm";     // [hidden]
inline const std::string kEngQkv = "qkv";                  // [(q + 2 kv) * head, hidden]
inline const std::string kEngAttnOut = "attn_out";         // [hidden, q_heads * head]
inline const std::string kEngPostNorm = "post_norm";       // [hidden]
inline const std::string kEngGateUp = "gate_up";           // [2 * inter, hidden]: gate (SiLU) rows, then up rows
inline const std::string kEngDown = "down";                // [hidden, inter]

}  // namespace lamina::names
