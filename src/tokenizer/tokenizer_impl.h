// The loaded state behind Tokenizer (internal to src/tokenizer). Built once by load_tokenizer_json
// and load_tokenizer_config, then shared read-only by every copy of the Tokenizer.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "common/json.h"
#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace lamina {

struct Tokenizer::Impl {
  std::shared_ptr<BpeModel> model;
  PreTokenizer pre_tokenizer;
  AddedTokenMatcher added;
  // The post-processor's template for a single sequence: prefix ids, the text's ids, suffix ids.
  std::vector<int32_t> prefix_ids, suffix_ids;

  std::vector<std::string> token_texts;  // id → token as written in tokenizer.json
  std::vector<std::string> token_bytes;  // id → the bytes it decodes to
  std::vector<uint8_t> known;            // id → 1 when the id exists
  std::vector<uint8_t> special;          // id → 1 for special added tokens
  std::unordered_map<std::string, int32_t> text_to_id;

  // From tokenizer_config.json / generation_config.json.
  std::optional<int32_t> bos_id;
  std::vector<int32_t> eos_ids;
  std::optional<ChatTemplate> chat_template;
  std::string chat_template_error;  // why a present template could not be used
  Json template_tokens = Json::object();  // bos_token, eos_token, ... as template variables
};

// tokenizer.json → model, pre-tokenizer, added tokens, post-processor, decoder tables.
void load_tokenizer_json(Tokenizer::Impl& impl, const Json& j, const std::string& where);
// tokenizer_config.json (may be null) → special token names, chat template; generation_config may be null.
void load_tokenizer_config(Tokenizer::Impl& impl, const Json& config, const Json& generation_config,
                           const std::string& where);

}  // namespace lamina
