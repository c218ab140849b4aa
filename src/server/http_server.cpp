#include "server/http_server.h"

#include <httplib.h>

#include <sys/socket.h>

#include <csignal>
#include <thread>

#include "common/error.h"
#include "server/drain_gate.h"
#include "server/metrics.h"

namespace lamina::server {

namespace {

// httplib 0.11 listens with a backlog of 5: a burst of clients overflows the accept queue and
// some connections die. Linux lets listen() be called again on the bound socket to raise it.
class Listener : public httplib::Server {
 public:
  void raise_backlog(int backlog) {
    if (svr_sock_ != INVALID_SOCKET) ::listen(svr_sock_, backlog);
  }
};

}  // namespace

struct HttpServer::Impl {
  Impl(Executor& ex, Tokenizer tok, ServedModel m, HttpOptions o)
      : executor(ex), model(m), opts(std::move(o)), routes(ex, std::move(tok), std::move(m), counters, gate) {}

  void add_routes();
  Json models_json() const;

  Executor& executor;
  ServedModel model;
  HttpOptions opts;
  HttpCounters counters;
  DrainGate gate;
  CompletionRoutes routes;
  Listener svr;
};

Json HttpServer::Impl::models_json() const {
  const RequestLimits& lim = executor.limits();
  return {{"id", model.name},     {"object", "model"},           {"created", model.created},
          {"owned_by", "lamina"}, {"max_model_len", lim.max_seq_len}};
}

void HttpServer::Impl::add_routes() {
  // POST bodies are read through a content reader: httplib would otherwise cap bodies sent as
  // form data (curl -d without a Content-Type) at 8 KiB. Its payload limit still applies.
  auto post = [this](Endpoint endpoint) {
    return [this, endpoint](const httplib::Request& req, httplib::Response& res, const httplib::ContentReader& read) {
      std::string body;
      const bool complete = read([&](const char* data, size_t n) {
        body.append(data, n);
        return true;
      });
      if (!complete) {  // httplib sets 413 when the body is over the payload limit
        const bool too_large = res.status == 413;
        return send_error(res, too_large ? 413 : 400,
                          too_large ? "the request body is larger than " + std::to_string(opts.max_body_bytes) + " bytes"
                                    : "could not read the whole request body",
                          "invalid_request_error");
      }
      routes.handle(body, res, endpoint);
    };
  };
  svr.Post("/v1/completions", post(Endpoint::Completions));
  svr.Post("/v1/chat/completions", post(Endpoint::Chat));
  svr.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(Json({{"object", "list"}, {"data", Json::array({models_json()})}}).dump(), "application/json");
  });
  svr.Get(R"(/v1/models/(.+))", [this](const httplib::Request& req, httplib::Response& res) {
    if (req.matches[1] != model.name)
      return send_error(res, 404, "the model '" + std::string(req.matches[1]) + "' does not exist", "invalid_request_error",
                        "model", "model_not_found");
    res.set_content(models_json().dump(), "application/json");
  });
  svr.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    const bool draining = gate.closed();
    res.status = draining ? 503 : 200;
    res.set_content(draining ? R"({"status":"draining"})" : R"({"status":"ok"})", "application/json");
  });
  svr.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(render_metrics(executor.stats(), counters, model.name), "text/plain; version=0.0.4");
  });

  // Errors httplib makes itself (404 route, 413 body too large, 400 bad request line) get
  // OpenAI's error shape; responses that already carry a body are left alone.
  svr.set_error_handler(httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string msg = "HTTP " + std::to_string(res.status);
    if (res.status == 404) msg = "no route for " + req.method + " " + req.path;
    if (res.status == 413) msg = "the request body is too large";
    send_error(res, res.status, msg, "invalid_request_error");
    return httplib::Server::HandlerResponse::Handled;
  }));
  svr.set_exception_handler([](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "unknown error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(res, 500, "internal error: " + what, "server_error");
  });
}

HttpServer::HttpServer(Executor& executor, Tokenizer tokenizer, ServedModel model, HttpOptions opts)
    : impl_(std::make_unique<Impl>(executor, std::move(tokenizer), std::move(model), std::move(opts))) {
  std::signal(SIGPIPE, SIG_IGN);  // a client that left must be a failed write, not a dead server
  httplib::Server& svr = impl_->svr;
  const int threads = std::max(4, impl_->opts.threads);
  svr.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  svr.set_payload_max_length(impl_->opts.max_body_bytes);
  svr.set_keep_alive_max_count(1000);
  svr.set_tcp_nodelay(true);  // tokens go out as they come
  impl_->add_routes();
}

HttpServer::~HttpServer() = default;

int HttpServer::bind() {
  const HttpOptions& o = impl_->opts;
  const int port = o.port == 0 ? impl_->svr.bind_to_any_port(o.host) : (impl_->svr.bind_to_port(o.host, o.port) ? o.port : -1);
  if (port < 0)
    fail("cannot listen on ", o.host, ":", o.port, ": is the port in use or the address wrong? (try --port 0 for any free port)");
  impl_->svr.raise_backlog(1024);
  return port;
}

void HttpServer::run() { impl_->svr.listen_after_bind(); }

void HttpServer::shutdown() {
  Impl& s = *impl_;
  s.gate.close();
  const auto timeout = std::chrono::duration<double>(s.opts.drain_timeout_s);
  if (!s.gate.wait_idle(std::chrono::duration_cast<std::chrono::milliseconds>(timeout))) {
    std::fprintf(stderr, "[lamina] drain timeout (%.0f s): cancelling what is still running\n", s.opts.drain_timeout_s);
    s.executor.cancel_all();
    s.gate.wait_idle(std::chrono::seconds(10));
  }
  // stop() is a no-op until listening has begun: a signal right at start-up must still end run().
  for (int i = 0; i < 500 && !s.svr.is_running(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  s.svr.stop();
}

}  // namespace lamina::server
