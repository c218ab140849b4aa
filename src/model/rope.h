// Rotary embedding frequencies, including Llama 3.1's "llama3" long-context scaling.
#pragma once
#include <vector>

#include "model/model_config.h"

namespace lamina {

// inv_freq[i] for i < head_size/2, computed as HF transformers does (float32 results).
std::vector<float> rope_inv_freq(const ModelConfig& cfg);

}  // namespace lamina
