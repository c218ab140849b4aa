#include "server/openai_response.h"

#include <random>

namespace lamina::server {

namespace {

bool known(const Tokenizer& tok, int32_t id) { return id >= 0 && size_t(id) < tok.vocab_size(); }

std::string token_text(const Tokenizer& tok, int32_t id) { return known(tok, id) ? tok.decode({id}, false) : ""; }

Json token_bytes(const Tokenizer& tok, int32_t id) {
  Json b = Json::array();
  if (!known(tok, id)) return b;
  for (unsigned char c : tok.token_bytes(id)) b.push_back(int(c));
  return b;
}

// Completions: {"tokens", "token_logprobs", "top_logprobs", "text_offset"}.
Json completion_logprobs(const std::vector<GeneratedToken>& tokens, const Tokenizer& tok, size_t text_offset) {
  Json out = {{"tokens", Json::array()}, {"token_logprobs", Json::array()}, {"top_logprobs", Json::array()},
              {"text_offset", Json::array()}};
  for (const GeneratedToken& t : tokens) {
    const std::string text = token_text(tok, t.id);
    out["tokens"].push_back(text);
    out["token_logprobs"].push_back(t.logprob);
    Json top = Json::object();
    for (const TokenLogprob& a : t.top) top[token_text(tok, a.token)] = a.logprob;
    out["top_logprobs"].push_back(top);
    out["text_offset"].push_back(text_offset);
    text_offset += text.size();
  }
  return out;
}

// Chat: {"content": [{"token", "logprob", "bytes", "top_logprobs": [{"token", "logprob", "bytes"}]}]}.
Json chat_logprobs(const std::vector<GeneratedToken>& tokens, const Tokenizer& tok) {
  Json content = Json::array();
  for (const GeneratedToken& t : tokens) {
    Json top = Json::array();
    for (const TokenLogprob& a : t.top)
      top.push_back({{"token", token_text(tok, a.token)}, {"logprob", a.logprob}, {"bytes", token_bytes(tok, a.token)}});
    content.push_back({{"token", token_text(tok, t.id)}, {"logprob", t.logprob}, {"bytes", token_bytes(tok, t.id)},
                       {"top_logprobs", top}});
  }
  return {{"content", content}};
}

Json logprobs_or_null(const ResponseMeta& meta, const std::vector<GeneratedToken>& tokens, const Tokenizer& tok) {
  if (!meta.logprobs) return nullptr;
  return meta.endpoint == Endpoint::Chat ? chat_logprobs(tokens, tok) : completion_logprobs(tokens, tok, 0);
}

Json envelope(const ResponseMeta& meta, bool chunk) {
  const bool chat = meta.endpoint == Endpoint::Chat;
  const char* object = chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion";
  return {{"id", meta.id}, {"object", object}, {"created", meta.created}, {"model", meta.model},
          {"system_fingerprint", nullptr}};
}

Json finish_or_null(const std::optional<std::string>& r) { return r ? Json(*r) : Json(nullptr); }

}  // namespace

std::string new_response_id(Endpoint endpoint) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string id = endpoint == Endpoint::Chat ? "chatcmpl-" : "cmpl-";
  for (int i = 0; i < 24; ++i) id += hex[rng() & 15];
  return id;
}

Json usage_json(int prompt_tokens, int completion_tokens) {
  return {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion_tokens},
          {"total_tokens", prompt_tokens + completion_tokens}};
}

Json chunk_json(const ResponseMeta& meta, const ChoiceDelta& d, const Tokenizer& tok) {
  Json j = envelope(meta, true);
  Json choice = {{"index", d.index}, {"logprobs", logprobs_or_null(meta, d.tokens, tok)},
                 {"finish_reason", finish_or_null(d.finish_reason)}};
  if (meta.endpoint == Endpoint::Chat) choice["delta"] = d.text.empty() ? Json::object() : Json{{"content", d.text}};
  else choice["text"] = d.text;
  j["choices"] = Json::array({choice});
  return j;
}

Json chat_role_chunk_json(const ResponseMeta& meta, int index) {
  Json j = envelope(meta, true);
  j["choices"] = Json::array({{{"index", index},
                               {"delta", {{"role", "assistant"}, {"content", ""}}},
                               {"logprobs", nullptr},
                               {"finish_reason", nullptr}}});
  return j;
}

Json usage_chunk_json(const ResponseMeta& meta, int prompt_tokens, int completion_tokens) {
  Json j = envelope(meta, true);
  j["choices"] = Json::array();
  j["usage"] = usage_json(prompt_tokens, completion_tokens);
  return j;
}

Json response_json(const ResponseMeta& meta, const std::vector<ChoiceResult>& choices, const Tokenizer& tok,
                   int prompt_tokens, int completion_tokens) {
  Json j = envelope(meta, false);
  Json arr = Json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    Json choice = {{"index", i}, {"logprobs", logprobs_or_null(meta, c.tokens, tok)}, {"finish_reason", c.finish_reason}};
    if (meta.endpoint == Endpoint::Chat) choice["message"] = {{"role", "assistant"}, {"content", c.text}};
    else choice["text"] = c.text;
    arr.push_back(std::move(choice));
  }
  j["choices"] = std::move(arr);
  j["usage"] = usage_json(prompt_tokens, completion_tokens);
  return j;
}

std::string sse_event(const Json& payload) {
  return "data: " + payload.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n\n";
}

}  // namespace lamina::server
