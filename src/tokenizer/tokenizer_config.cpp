// Reads tokenizer_config.json (special token names, chat template) and generation_config.json
// (stop ids). Both are optional: a bare tokenizer.json still encodes and decodes.
#include <algorithm>

#include "common/error.h"
#include "tokenizer/tokenizer_impl.h"

namespace lamina {

namespace {

// A special token is written either as a string or as {"content": "...", ...} (an AddedToken dump).
std::optional<std::string> token_name(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) return v["content"].get<std::string>();
  return std::nullopt;
}

// chat_template is a string, or a list of {"name", "template"} from which "default" is used.
std::optional<std::string> template_source(const Json& config, const std::string& where) {
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    for (const Json& t : *it) {
      if (t.value("name", "") == "default" && t.contains("template")) return t["template"].get<std::string>();
    }
    fail(where, ": chat_template is a list without a \"default\" entry");
  }
  fail(where, ": chat_template must be a string or a list of named templates");
}

void add_eos(Tokenizer::Impl& impl, int32_t id) {
  if (std::find(impl.eos_ids.begin(), impl.eos_ids.end(), id) == impl.eos_ids.end()) impl.eos_ids.push_back(id);
}

}  // namespace

void load_tokenizer_config(Tokenizer::Impl& impl, const Json& config, const Json& generation_config,
                           const std::string& where) {
  if (config.is_object()) {
    // transformers passes these names to the template as variables (special_tokens_map).
    for (const char* key : {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
      auto it = config.find(key);
      if (it == config.end()) continue;
      if (auto name = token_name(*it)) impl.template_tokens[key] = *name;
    }
    auto id_of = [&](const char* key) -> std::optional<int32_t> {
      if (!impl.template_tokens.contains(key)) return std::nullopt;
      const std::string name = impl.template_tokens[key].get<std::string>();
      auto f = impl.text_to_id.find(name);
      if (f == impl.text_to_id.end()) fail(where, ": ", key, " '", name, "' is not a token of tokenizer.json");
      return f->second;
    };
    impl.bos_id = id_of("bos_token");
    if (auto eos = id_of("eos_token")) add_eos(impl, *eos);
    if (auto source = template_source(config, where)) {
      try {
        impl.chat_template.emplace(*source);
      } catch (const Error& e) {
        impl.chat_template_error = where + ": chat_template is not supported: " + e.what();
      }
    }
  } else if (!config.is_null()) {
    fail(where, ": expected a JSON object at the top level");
  }

  if (generation_config.is_object()) {
    auto it = generation_config.find("eos_token_id");
    if (it != generation_config.end() && it->is_number_integer()) add_eos(impl, it->get<int32_t>());
    if (it != generation_config.end() && it->is_array()) {
      for (const Json& id : *it) {
        if (id.is_number_integer()) add_eos(impl, id.get<int32_t>());
      }
    }
  }
}

}  // namespace lamina
