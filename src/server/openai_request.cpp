#include "server/openai_request.h"

#include <cmath>

#include "server/api_error.h"

namespace lamina::server {

namespace {

using OJson = nlohmann::ordered_json;

const OJson* field(const OJson& body, const char* key) {
  auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double get_number(const OJson& body, const char* key, double lo, double hi) {
  const OJson* v = field(body, key);
  if (!v->is_number()) bad_request(std::string("'") + key + "' must be a number", key);
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || x > hi)
    bad_request(std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                    " (got " + v->dump() + ")",
                key);
  return x;
}

int64_t get_integer(const OJson& body, const char* key, int64_t lo, int64_t hi) {
  const OJson* v = field(body, key);
  if (!v->is_number_integer())
    bad_request(std::string("'") + key + "' must be an integer (got " + v->dump() + ")", key);
  const int64_t x = v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX) ? INT64_MAX : v->get<int64_t>();
  if (x < lo || x > hi)
    bad_request(std::string("'") + key + "' must be between " + std::to_string(lo) + " and " + std::to_string(hi) +
                    " (got " + v->dump() + ")",
                key);
  return x;
}

bool get_bool(const OJson& body, const char* key) {
  const OJson* v = field(body, key);
  if (!v->is_boolean()) bad_request(std::string("'") + key + "' must be true or false", key);
  return v->get<bool>();
}

std::vector<int32_t> token_ids(const OJson& arr, const char* key) {
  std::vector<int32_t> ids;
  for (const auto& t : arr) {
    if (!t.is_number_integer() || t.get<int64_t>() < 0 || t.get<int64_t>() > INT32_MAX)
      bad_request(std::string("'") + key + "' token ids must be non-negative integers", key);
    ids.push_back(int32_t(t.get<int64_t>()));
  }
  return ids;
}

std::vector<PromptInput> parse_prompts(const OJson& body) {
  const OJson* p = field(body, "prompt");
  if (!p) bad_request("'prompt' is required", "prompt");
  std::vector<PromptInput> out;
  if (p->is_string()) {
    out.push_back({p->get<std::string>(), {}, false});
  } else if (p->is_array() && !p->empty() && (*p)[0].is_number()) {
    out.push_back({"", token_ids(*p, "prompt"), true});
  } else if (p->is_array() && !p->empty()) {
    for (const auto& e : *p) {
      if (e.is_string()) out.push_back({e.get<std::string>(), {}, false});
      else if (e.is_array() && !e.empty()) out.push_back({"", token_ids(e, "prompt"), true});
      else bad_request("'prompt' must be a string, a list of strings, or a list of token ids", "prompt");
    }
  } else {
    bad_request("'prompt' must be a string, a list of strings, or a list of token ids", "prompt");
  }
  if (out.size() > 64) bad_request("at most 64 prompts per request", "prompt");
  return out;
}

// Content as a string: a string, or a list of {"type": "text", "text": ...} parts joined.
std::string flatten_content(const OJson& content, size_t i) {
  const std::string param = "messages[" + std::to_string(i) + "].content";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) bad_request("'" + param + "' must be a string or a list of content parts", param);
  std::string text;
  for (const auto& part : content) {
    if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string())
      bad_request("'" + param + "': only {\"type\": \"text\", \"text\": ...} parts are supported", param);
    text += part["text"].get<std::string>();
  }
  return text;
}

OJson parse_messages(const OJson& body) {
  const OJson* m = field(body, "messages");
  if (!m) bad_request("'messages' is required", "messages");
  if (!m->is_array() || m->empty()) bad_request("'messages' must be a non-empty list of messages", "messages");
  OJson out = OJson::array();
  for (size_t i = 0; i < m->size(); ++i) {
    const OJson& msg = (*m)[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!msg.is_object()) bad_request("'" + where + "' must be an object", where);
    if (!msg.contains("role") || !msg["role"].is_string())
      bad_request("'" + where + ".role' must be a string", where + ".role");
    OJson copy = msg;
    const OJson* content = field(msg, "content");
    copy["content"] = content ? flatten_content(*content, i) : std::string();
    out.push_back(std::move(copy));
  }
  return out;
}

std::vector<std::string> parse_stop(const OJson& body) {
  const OJson* s = field(body, "stop");
  std::vector<std::string> out;
  if (!s) return out;
  if (s->is_string()) {
    out.push_back(s->get<std::string>());
  } else if (s->is_array()) {
    for (const auto& e : *s) {
      if (!e.is_string()) bad_request("'stop' must be a string or a list of strings", "stop");
      out.push_back(e.get<std::string>());
    }
  } else {
    bad_request("'stop' must be a string or a list of strings", "stop");
  }
  if (out.size() > 16) bad_request("'stop' takes at most 16 strings", "stop");
  for (const auto& w : out)
    if (w.empty()) bad_request("'stop' strings must not be empty", "stop");
  return out;
}

}  // namespace

CompletionParams parse_completion_params(const std::string& body, Endpoint endpoint) {
  OJson j;
  try {
    j = OJson::parse(body);
  } catch (const nlohmann::json::exception& e) {
    bad_request(std::string("the request body is not valid JSON: ") + e.what());
  }
  if (!j.is_object()) bad_request("the request body must be a JSON object");

  CompletionParams p;
  p.endpoint = endpoint;
  if (const OJson* m = field(j, "model")) {
    if (!m->is_string()) bad_request("'model' must be a string", "model");
    p.model = m->get<std::string>();
  }
  if (endpoint == Endpoint::Completions) p.prompts = parse_prompts(j);
  else p.messages = parse_messages(j);

  if (field(j, "n")) p.n = int(get_integer(j, "n", 1, 128));
  const char* max_key = field(j, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
  if (field(j, max_key)) p.max_tokens = int(get_integer(j, max_key, 1, INT32_MAX));
  if (field(j, "temperature")) p.temperature = float(get_number(j, "temperature", 0, 2));
  if (field(j, "top_p")) p.top_p = float(get_number(j, "top_p", 0, 1));
  if (field(j, "top_k")) p.top_k = int(get_integer(j, "top_k", -1, INT32_MAX));
  if (p.top_k < 0) p.top_k = 0;  // vLLM spells "no limit" -1
  if (field(j, "presence_penalty")) p.presence_penalty = float(get_number(j, "presence_penalty", -2, 2));
  if (field(j, "frequency_penalty")) p.frequency_penalty = float(get_number(j, "frequency_penalty", -2, 2));
  if (field(j, "repetition_penalty")) p.repetition_penalty = float(get_number(j, "repetition_penalty", 0.01, 100));
  if (field(j, "seed")) p.seed = uint64_t(get_integer(j, "seed", INT64_MIN, INT64_MAX));
  p.stop = parse_stop(j);
  if (field(j, "stream")) p.stream = get_bool(j, "stream");
  if (const OJson* so = field(j, "stream_options")) {
    if (!so->is_object()) bad_request("'stream_options' must be an object", "stream_options");
    if (field(*so, "include_usage")) p.include_usage = get_bool(*so, "include_usage");
  }
  if (field(j, "ignore_eos")) p.ignore_eos = get_bool(j, "ignore_eos");

  if (endpoint == Endpoint::Completions) {
    if (field(j, "logprobs")) p.logprobs = int(get_integer(j, "logprobs", 0, 20));
    if (field(j, "echo") && get_bool(j, "echo")) bad_request("'echo' is not supported", "echo");
  } else {
    const bool want = field(j, "logprobs") && get_bool(j, "logprobs");
    const int top = field(j, "top_logprobs") ? int(get_integer(j, "top_logprobs", 0, 20)) : 0;
    if (field(j, "top_logprobs") && !want) bad_request("'top_logprobs' needs 'logprobs': true", "top_logprobs");
    if (want) p.logprobs = top;
  }
  return p;
}

SamplingParams sampling_for_choice(const CompletionParams& p, int choice, uint64_t random_seed) {
  SamplingParams s;
  s.temperature = p.temperature;
  // temperature 0 or top_p 0 keep only the most likely token: greedy.
  s.top_k = p.temperature == 0.0f || p.top_p == 0.0f ? 1 : p.top_k;
  s.top_p = p.top_p >= 1.0f ? 0.0f : p.top_p;  // the sampler spells "off" 0
  s.presence_penalty = p.presence_penalty;
  s.frequency_penalty = p.frequency_penalty;
  s.repetition_penalty = p.repetition_penalty;
  s.seed = p.seed ? *p.seed + uint64_t(choice) : random_seed;
  return s;
}

}  // namespace lamina::server
