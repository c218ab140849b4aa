// The tokenizer and generation files that travel from a HF checkpoint into Lamina's checkpoint
// and engine dirs, so each is self-contained.
#pragma once
#include <filesystem>

namespace lamina {

// Copies whichever of tokenizer.json, tokenizer_config.json, generation_config.json and
// special_tokens_map.json exist in `from` into `to`.
void copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& to);

}  // namespace lamina
