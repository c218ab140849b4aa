// Tokenizer: loading from a directory, encode (added tokens → pre-tokens → BPE → post-processor),
// decode, and the lookups the runtime needs.
#include "tokenizer/tokenizer.h"

#include <filesystem>

#include "common/error.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace lamina {

namespace fs = std::filesystem;

namespace {

// The tokenizer files sit directly in a HF model dir, a checkpoint dir or an engine dir
// (convert and build copy them); a path to tokenizer.json itself is accepted too.
fs::path find_tokenizer_json(const std::string& dir) {
  const fs::path p(dir);
  if (!fs::exists(p)) fail("tokenizer dir '", dir, "' does not exist");
  if (fs::is_regular_file(p)) return p;
  for (const fs::path& candidate : {p / "tokenizer.json", p / "tokenizer" / "tokenizer.json"}) {
    if (fs::is_regular_file(candidate)) return candidate;
  }
  fail("no tokenizer.json in '", dir, "': pass a HF model dir, checkpoint dir or engine dir that holds "
       "tokenizer.json (lamina convert and build copy it there)");
}

Json read_optional_json(const fs::path& path) {
  if (!fs::is_regular_file(path)) return Json();
  return read_json_file(path.string());
}

}  // namespace

Tokenizer Tokenizer::load(const std::string& dir) {
  const fs::path json_path = find_tokenizer_json(dir);
  const fs::path base = json_path.parent_path();
  const fs::path config_path = base / "tokenizer_config.json";
  auto impl = std::make_shared<Impl>();
  load_tokenizer_json(*impl, read_json_file(json_path.string()), json_path.string());
  load_tokenizer_config(*impl, read_optional_json(config_path), read_optional_json(base / "generation_config.json"),
                        config_path.string());
  return Tokenizer(std::move(impl));
}

Tokenizer Tokenizer::from_json(const Json& tokenizer_json, const Json& tokenizer_config, const std::string& where) {
  auto impl = std::make_shared<Impl>();
  load_tokenizer_json(*impl, tokenizer_json, where);
  load_tokenizer_config(*impl, tokenizer_config, Json(), where + " (tokenizer_config)");
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(const std::string& text, bool add_special_tokens) const {
  const Impl& im = *impl_;
  if (const size_t bad = utf8::first_invalid(text); bad != text.size())
    fail("encode: the input is not valid UTF-8 (byte offset ", bad, ")");
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids = im.prefix_ids;

  thread_local std::vector<AddedTokenMatcher::Segment> segments;
  thread_local std::vector<std::string_view> pieces;
  std::deque<std::string> arena;  // holds pieces a pre-tokenizer step rewrote
  segments.clear();
  im.added.split(text, segments);
  for (const auto& seg : segments) {
    if (seg.id >= 0) {
      ids.push_back(seg.id);
      continue;
    }
    pieces.clear();
    im.pre_tokenizer.split(std::string_view(text).substr(seg.begin, seg.end - seg.begin), pieces, arena);
    for (std::string_view piece : pieces) im.model->encode_word(piece, ids);
  }
  if (add_special_tokens) ids.insert(ids.end(), im.suffix_ids.begin(), im.suffix_ids.end());
  return ids;
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  const Impl& im = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= im.known.size() || !im.known[id])
    fail("token id ", id, " is outside the vocabulary (size ", im.known.size(), ")");
  return im.token_bytes[id];
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  std::string bytes;
  for (int32_t id : ids) {
    const std::string& b = token_bytes(id);
    if (skip_special_tokens && impl_->special[id]) continue;
    bytes += b;
  }
  return utf8::to_valid_lossy(bytes);
}

std::string Tokenizer::render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (const auto& m : messages) msgs.push_back({{"role", m.role}, {"content", m.content}});
  return render_chat_json(msgs, add_generation_prompt);
}

std::string Tokenizer::render_chat_json(const nlohmann::ordered_json& messages, bool add_generation_prompt,
                                        const nlohmann::ordered_json& extra_context) const {
  const Impl& im = *impl_;
  if (!im.chat_template) {
    if (!im.chat_template_error.empty()) fail(im.chat_template_error);
    fail("this tokenizer has no chat template (tokenizer_config.json has no 'chat_template'); "
         "use plain text input instead of chat mode");
  }
  // What transformers' apply_chat_template passes: special token names, messages, tools (none),
  // add_generation_prompt; caller-supplied variables override.
  nlohmann::ordered_json context = im.template_tokens;
  context["messages"] = messages;
  context["tools"] = nullptr;
  context["documents"] = nullptr;
  context["add_generation_prompt"] = add_generation_prompt;
  for (const auto& [k, v] : extra_context.items()) context[k] = v;
  return im.chat_template->render(context);
}

std::vector<int32_t> Tokenizer::encode_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt) const {
  // The template writes BOS itself; the post-processor must not add a second one.
  return encode(render_chat(messages, add_generation_prompt), /*add_special_tokens=*/false);
}

bool Tokenizer::has_chat_template() const { return impl_->chat_template.has_value(); }

std::optional<int32_t> Tokenizer::token_to_id(const std::string& token) const {
  auto it = impl_->text_to_id.find(token);
  if (it == impl_->text_to_id.end()) return std::nullopt;
  return it->second;
}

std::string Tokenizer::id_to_token(int32_t id) const {
  token_bytes(id);  // validates the id
  return impl_->token_texts[id];
}

size_t Tokenizer::vocab_size() const { return impl_->known.size(); }

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->special.size() && impl_->special[id];
}

std::optional<int32_t> Tokenizer::bos_token_id() const { return impl_->bos_id; }

const std::vector<int32_t>& Tokenizer::eos_token_ids() const { return impl_->eos_ids; }

}  // namespace lamina
