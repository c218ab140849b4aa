// Tokenizer: loads a HuggingFace tokenizer.json (byte-level BPE, as LLaMA 3 uses) and produces
// exactly the ids HF tokenizers produces; decodes ids back to text; renders the chat template from
// tokenizer_config.json. Copies are cheap and share the loaded tables; all methods are thread-safe.
#pragma once
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/json.h"

namespace lamina {

struct ChatMessage {
  std::string role, content;
};

class Tokenizer {
 public:
  // `dir` holds tokenizer.json (+ optional tokenizer_config.json, generation_config.json); an
  // engine or checkpoint dir works, since they carry the tokenizer files. Errors name the file.
  static Tokenizer load(const std::string& dir);
  // The same from in-memory JSON (tests, tools); config may be null.
  static Tokenizer from_json(const Json& tokenizer_json, const Json& tokenizer_config = Json(),
                             const std::string& where = "tokenizer.json");

  // Text → ids. add_special_tokens applies the post-processor (LLaMA 3.1-era files add BOS);
  // special-token text such as "<|eot_id|>" in the input always maps to its id, as in HF.
  // Input must be valid UTF-8 (lamina::Error otherwise).
  std::vector<int32_t> encode(const std::string& text, bool add_special_tokens = true) const;
  // Ids → text; invalid UTF-8 (a split multi-byte character) becomes U+FFFD. Unknown ids throw.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;
  // Raw bytes of one token (no UTF-8 repair); what the streaming detokenizer accumulates.
  const std::string& token_bytes(int32_t id) const;

  // Renders tokenizer_config.json's chat_template, as transformers' apply_chat_template does.
  // The result already holds BOS where the template writes it: encode it with
  // add_special_tokens=false (encode_chat does), or BOS appears twice.
  std::string render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt = true) const;
  // Same with messages as JSON (tool calls etc.) and extra template variables (tools, date_string...).
  // Ordered JSON keeps the caller's key order, which tojson in the template reproduces.
  std::string render_chat_json(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                               const nlohmann::ordered_json& extra_context = nlohmann::ordered_json::object()) const;
  std::vector<int32_t> encode_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt = true) const;
  bool has_chat_template() const;

  std::optional<int32_t> token_to_id(const std::string& token) const;  // vocab text ("Ġthe") or added token
  std::string id_to_token(int32_t id) const;                            // throws on an unknown id
  // Ids run 0 .. vocab_size()-1, added tokens included (for LLaMA 3: 128256).
  size_t vocab_size() const;
  bool is_special(int32_t id) const;

  std::optional<int32_t> bos_token_id() const;  // tokenizer_config's bos_token, if any
  // Stop candidates: tokenizer_config's eos_token plus generation_config.json's eos_token_id
  // (when that file is next to tokenizer.json). May be empty.
  const std::vector<int32_t>& eos_token_ids() const;

  struct Impl;

 private:
  explicit Tokenizer(std::shared_ptr<const Impl> impl) : impl_(std::move(impl)) {}
  std::shared_ptr<const Impl> impl_;
};

// Turns ids into text one at a time without ever emitting part of a UTF-8 character: an incomplete
// trailing sequence is held back until the next token completes it (or flush()).
class StreamingDetokenizer {
 public:
  explicit StreamingDetokenizer(const Tokenizer& tok, bool skip_special_tokens = false);
  std::string push(int32_t id);  // newly completed text (may be empty)
  std::string flush();           // whatever is held back, invalid bytes as U+FFFD

 private:
  Tokenizer tok_;
  bool skip_special_;
  std::string pending_;  // bytes not yet emitted
};

}  // namespace lamina
