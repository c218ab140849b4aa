// The OpenAI-compatible HTTP server (cpp-httplib): routes, limits, and a draining shutdown.
//   POST /v1/completions, /v1/chat/completions   (completion_routes.h)
//   GET  /v1/models, /v1/models/{name}, /health, /metrics
// HTTP threads never touch the engine: they talk to the Executor's scheduler thread.
#pragma once
#include <memory>
#include <string>

#include "scheduler/executor.h"
#include "server/completion_routes.h"
#include "tokenizer/tokenizer.h"

namespace lamina::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                         // 0: any free port (bind() returns it)
  int threads = 128;                       // connections served at once (keep-alive holds one each;
                                           // lamina serve sizes it from the batch and queue)
  size_t max_body_bytes = size_t(8) << 20;
  double drain_timeout_s = 60;             // a shutdown cancels what is still running after this
};

class HttpServer {
 public:
  HttpServer(Executor& executor, Tokenizer tokenizer, ServedModel model, HttpOptions opts);
  ~HttpServer();

  int bind();  // binds host:port and returns the port; throws lamina::Error if it cannot
  void run();  // serves until shutdown() has drained (blocks the calling thread)
  // Any thread: new completions get 503 and /health says draining; in-flight requests finish
  // (cancelled after drain_timeout_s); then run() returns.
  void shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lamina::server
