#include "http_helpers.h"

#include <httplib.h>

#include <sstream>

namespace lamina::test {

namespace {
HttpReply to_reply(const httplib::Result& r) {
  HttpReply out;
  if (!r) {
    out.body = "no response: " + httplib::to_string(r.error());
    return out;
  }
  out.status = r->status;
  out.body = r->body;
  out.json = Json::parse(r->body, nullptr, false);
  return out;
}

httplib::Client client(int port) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_read_timeout(120);
  cli.set_connection_timeout(10);
  cli.set_tcp_nodelay(true);
  return cli;
}
}  // namespace

HttpReply http_get(int port, const std::string& path) { return to_reply(client(port).Get(path)); }

HttpReply http_post(int port, const std::string& path, const std::string& body, const std::string& content_type) {
  return to_reply(client(port).Post(path, body, content_type.c_str()));
}

StreamReply http_stream(int port, const std::string& path, const Json& body,
                        const std::function<bool(const Json&)>& on_event) {
  StreamReply out;
  Json b = body;
  b["stream"] = true;
  std::string pending;
  bool keep_going = true;
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.body = b.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    out.raw.append(data, n);
    pending.append(data, n);
    for (size_t end; keep_going && (end = pending.find("\n\n")) != std::string::npos; pending.erase(0, end + 2)) {
      const std::string ev = pending.substr(0, end);
      if (ev.rfind("data: ", 0) != 0) continue;  // SSE comment (keep-alive)
      const std::string payload = ev.substr(6);
      if (payload == "[DONE]") {
        out.done = true;
        continue;
      }
      Json j = Json::parse(payload, nullptr, false);
      if (j.contains("choices") && !j["choices"].empty() && j["choices"][0].value("index", -1) == 0) {
        const Json& c = j["choices"][0];
        if (c.contains("text") && c["text"].is_string()) out.text += c["text"].get<std::string>();
        if (c.contains("delta") && c["delta"].contains("content") && c["delta"]["content"].is_string())
          out.text += c["delta"]["content"].get<std::string>();
        if (c.contains("finish_reason") && c["finish_reason"].is_string())
          out.finish_reason = c["finish_reason"].get<std::string>();
      }
      out.events.push_back(j);
      if (on_event && !on_event(j)) keep_going = false;
    }
    return keep_going;
  };
  auto cli = client(port);
  const httplib::Result r = cli.send(req);
  if (r) out.status = r->status;
  if (r && r->status != 200 && out.raw.empty()) out.raw = r->body;
  if (!r && out.raw.empty()) out.raw = "no response: " + httplib::to_string(r.error());
  return out;
}

std::string choice_text(const Json& response, size_t i) {
  const Json& c = response.at("choices").at(i);
  if (c.contains("message")) return c["message"].value("content", "");
  return c.value("text", "");
}

double metric(const std::string& text, const std::string& name, const std::string& labels) {
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(name + "{", 0) != 0) continue;
    if (!labels.empty() && line.find(labels) == std::string::npos) continue;
    return std::stod(line.substr(line.rfind(' ') + 1));
  }
  return -1;
}

}  // namespace lamina::test
