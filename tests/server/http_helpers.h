// Small HTTP helpers over httplib::Client for the server tests: JSON posts and SSE streams.
#pragma once
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lamina::test {

using Json = nlohmann::json;

struct HttpReply {
  int status = 0;  // 0: no response (connection failed)
  std::string body;
  Json json;       // parsed body (discarded when not JSON)
};

HttpReply http_get(int port, const std::string& path);
HttpReply http_post(int port, const std::string& path, const std::string& body,
                    const std::string& content_type = "application/json");
inline HttpReply http_post(int port, const std::string& path, const Json& body) {
  return http_post(port, path, body.dump());
}

struct StreamReply {
  int status = 0;
  std::vector<Json> events;  // every `data:` payload except [DONE], in order
  bool done = false;         // saw data: [DONE]
  std::string raw;           // everything received
  std::string text;          // concatenated text/delta content of choice 0
  std::string finish_reason; // choice 0's
};

// Posts with stream: true and collects the SSE events. on_event may return false to hang up
// (the client closes the connection mid-stream).
StreamReply http_stream(int port, const std::string& path, const Json& body,
                        const std::function<bool(const Json&)>& on_event = nullptr);

// The text of choice `i` in a non-streamed completions or chat response.
std::string choice_text(const Json& response, size_t i = 0);

// Reads one sample value from /metrics text, e.g. metric(text, "lamina_num_requests_running").
double metric(const std::string& metrics_text, const std::string& name, const std::string& labels = "");

}  // namespace lamina::test
