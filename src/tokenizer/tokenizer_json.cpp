// Reads tokenizer.json. Everything we do not implement is refused by name, so a tokenizer that
// would silently give different ids from HF never loads.
#include <algorithm>
#include <unordered_map>

#include "common/error.h"
#include "common/progress.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/tokenizer_impl.h"

namespace lamina {

namespace {

std::vector<Json> flatten_sequence(const Json& j, const char* list_key) {
  if (j.is_object() && j.value("type", "") == "Sequence") {
    auto it = j.find(list_key);
    if (it != j.end() && it->is_array()) return it->get<std::vector<Json>>();
  }
  return {j};
}

// TemplateProcessing's "single" template → the ids before and after the sequence.
void load_template_processing(Tokenizer::Impl& impl, const Json& p, const std::string& where) {
  const std::string ctx = where + " post_processor";
  const Json specials = p.value("special_tokens", Json::object());
  bool seen_sequence = false;
  for (const Json& piece : json_get<std::vector<Json>>(p, "single", ctx)) {
    if (piece.contains("Sequence")) {
      const std::string id = piece["Sequence"].value("id", "");
      if (id != "A") fail(where, ": TemplateProcessing single template uses sequence '", id, "' (only A is supported)");
      seen_sequence = true;
    } else if (piece.contains("SpecialToken")) {
      const std::string name = json_get<std::string>(piece["SpecialToken"], "id", ctx);
      auto sp = specials.find(name);
      if (sp == specials.end()) fail(where, ": TemplateProcessing uses '", name, "', which is not in its special_tokens");
      auto& target = seen_sequence ? impl.suffix_ids : impl.prefix_ids;
      for (const Json& id : json_get<std::vector<Json>>(*sp, "ids", ctx)) target.push_back(id.get<int32_t>());
    } else {
      fail(where, ": TemplateProcessing piece ", piece.dump(), " is not understood");
    }
  }
}

void load_post_processor(Tokenizer::Impl& impl, const Json& post, const std::string& where) {
  if (post.is_null()) return;
  for (const Json& p : flatten_sequence(post, "processors")) {
    const std::string type = p.value("type", "");
    if (type == "ByteLevel") continue;  // only adjusts offsets; ids are untouched
    if (type == "TemplateProcessing") {
      load_template_processing(impl, p, where);
      continue;
    }
    fail(where, ": post_processor type '", type, "' is not supported (supported: ByteLevel, TemplateProcessing, Sequence)");
  }
}

void check_decoder(const Json& decoder, const std::string& where) {
  if (decoder.is_null()) fail(where, ": a tokenizer without decoder is not supported (byte-level BPE needs ByteLevel)");
  for (const Json& d : flatten_sequence(decoder, "decoders")) {
    const std::string type = d.value("type", "");
    if (type != "ByteLevel") fail(where, ": decoder type '", type, "' is not supported (only ByteLevel)");
  }
}

std::vector<AddedToken> load_added_tokens(const Json& j, const std::string& where) {
  std::vector<AddedToken> out;
  auto it = j.find("added_tokens");
  if (it == j.end() || it->is_null()) return out;
  const std::string ctx = where + " added_tokens";
  for (const Json& t : *it) {
    AddedToken a;
    a.id = json_get<int32_t>(t, "id", ctx);
    a.content = json_get<std::string>(t, "content", ctx);
    a.special = json_get_or<bool>(t, "special", false);
    a.single_word = json_get_or<bool>(t, "single_word", false);
    a.lstrip = json_get_or<bool>(t, "lstrip", false);
    a.rstrip = json_get_or<bool>(t, "rstrip", false);
    // HF's default: special tokens are not normalized, other added tokens are.
    a.normalized = json_get_or<bool>(t, "normalized", !a.special);
    if (a.id < 0) fail(where, ": added token '", a.content, "' has a negative id");
    out.push_back(std::move(a));
  }
  return out;
}

// HF ignores the ids written in added_tokens when it loads a file: a token whose text is in the
// model vocab takes that id, an earlier added token with the same text keeps its id, and any other
// gets the next id after both the model vocab and the added tokens so far. We do the same (for
// LLaMA 3 the written ids agree) and warn when the file disagrees, as HF does.
void assign_added_token_ids(const Tokenizer::Impl& impl, std::vector<AddedToken>& added, const std::string& where) {
  std::unordered_map<std::string, int32_t> assigned;
  const auto vocab_entries = static_cast<int32_t>(impl.model->vocab_entries());
  int32_t max_added = -1;
  size_t moved = 0;
  for (auto& a : added) {
    int32_t id;
    if (auto it = assigned.find(a.content); it != assigned.end()) id = it->second;
    else if (auto v = impl.text_to_id.find(a.content); v != impl.text_to_id.end()) id = v->second;
    else id = std::max(vocab_entries, max_added + 1);
    max_added = std::max(max_added, id);
    assigned[a.content] = id;
    moved += id != a.id;
    a.id = id;
  }
  if (moved)
    log_warn(where + ": " + std::to_string(moved) + " added token(s) get ids other than the ones written in the "
             "file (HF tokenizers assigns them the same way)");
}

}  // namespace

void load_tokenizer_json(Tokenizer::Impl& impl, const Json& j, const std::string& where) {
  if (!j.is_object()) fail(where, ": expected a JSON object at the top level");
  if (auto n = j.find("normalizer"); n != j.end() && !n->is_null())
    fail(where, ": normalizer '", n->value("type", n->dump()), "' is not supported (LLaMA 3 has none)");
  for (const char* key : {"truncation", "padding"}) {
    if (auto it = j.find(key); it != j.end() && !it->is_null())
      log_warn(where + ": '" + key + "' settings are ignored (the runtime enforces its own length limits)");
  }

  const Json& model = j.contains("model") ? j["model"] : throw Error(where + ": required field 'model' is missing");
  const std::string type = model.value("type", model.contains("merges") ? "BPE" : "");
  if (type != "BPE") fail(where, ": model type '", type, "' is not supported (only byte-level BPE)");
  VocabTables vocab;
  impl.model = BpeModel::from_json(model, where, vocab);
  impl.token_texts = std::move(vocab.texts);
  impl.token_bytes = std::move(vocab.bytes);
  impl.text_to_id = std::move(vocab.text_to_id);
  impl.pre_tokenizer = PreTokenizer::from_json(j.value("pre_tokenizer", Json()), where);
  check_decoder(j.value("decoder", Json()), where);
  load_post_processor(impl, j.value("post_processor", Json()), where);

  std::vector<AddedToken> added = load_added_tokens(j, where);
  assign_added_token_ids(impl, added, where);
  impl.added = AddedTokenMatcher(added);

  // Id tables over the model vocab and the added tokens (an added token may reuse a vocab id).
  size_t size = impl.token_texts.size();
  for (const auto& a : added) size = std::max(size, static_cast<size_t>(a.id) + 1);
  impl.token_texts.resize(size);
  impl.known.assign(size, 0);
  impl.special.assign(size, 0);
  impl.token_bytes.resize(size);
  for (const auto& [text, id] : impl.text_to_id) impl.known[id] = 1;
  for (const auto& a : added) {
    impl.token_texts[a.id] = a.content;
    impl.known[a.id] = 1;
    impl.special[a.id] = a.special;
    impl.text_to_id[a.content] = a.id;  // HF looks in the added vocabulary first
    // HF's ByteLevel decoder maps a token's characters back to bytes, or keeps the token's own UTF-8
    // when a character is outside the byte alphabet (BpeModel did the same for the model vocab).
    auto bytes = byte_level::decode(a.content);
    impl.token_bytes[a.id] = bytes ? std::move(*bytes) : a.content;
  }
  for (const auto* ids : {&impl.prefix_ids, &impl.suffix_ids}) {
    for (int32_t id : *ids) {
      if (id < 0 || static_cast<size_t>(id) >= size || !impl.known[id])
        fail(where, ": post_processor template uses id ", id, ", which is not in the vocabulary");
    }
  }
}

}  // namespace lamina
