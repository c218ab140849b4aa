// A live `lamina serve` under abuse: limits answered with OpenAI errors (400, 404, 413, 429),
// malformed bodies, clients hanging up mid-stream, a bounded load run, SIGTERM while a stream is
// running, and `lamina bench_serving` against it. Every loop is bounded in count and time.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <future>
#include <random>
#include <thread>

#include "http_helpers.h"
#include "server_process.h"
#include "test_support.h"

namespace lamina::test {
namespace {

using Clock = std::chrono::steady_clock;

void expect_error_shape(const HttpReply& r, int status, const std::string& what) {
  EXPECT_EQ(r.status, status) << what << ": " << r.body;
  ASSERT_TRUE(r.json.is_object() && r.json.contains("error")) << what << ": " << r.body;
  const Json& e = r.json["error"];
  for (const char* k : {"message", "type", "param", "code"}) EXPECT_TRUE(e.contains(k)) << what << " lacks " << k;
  EXPECT_TRUE(e["message"].is_string() && !e["message"].get<std::string>().empty());
}

// Polls /metrics until pred holds (bounded); returns the last metrics text.
std::string wait_for_metrics(int port, const std::function<bool(const std::string&)>& pred, double seconds = 10) {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  std::string text;
  do {
    text = http_get(port, "/metrics").body;
    if (pred(text)) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (Clock::now() < deadline);
  return text;
}

// 127.0.0.1:port as a socket address (port 0: any free port, for bind).
sockaddr_in loopback(int port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(uint16_t(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return addr;
}

bool idle(const std::string& m) {
  return metric(m, "lamina_num_requests_running") == 0 && metric(m, "lamina_num_requests_waiting") == 0 &&
         metric(m, "lamina_kv_cache_blocks_used") == 0;
}

class ServerRobustness : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new ServerProcess(); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static int port() { return server_->port(); }
  static ServerProcess* server_;
};
ServerProcess* ServerRobustness::server_ = nullptr;

TEST_F(ServerRobustness, LimitsAnswerOpenAIErrors) {
  const HttpReply too_long = http_post(port(), "/v1/completions", Json{{"prompt", std::vector<int>(200, 7)}});
  expect_error_shape(too_long, 400, "prompt over max_input_len");
  EXPECT_EQ(too_long.json["error"]["type"], "invalid_request_error");
  EXPECT_EQ(too_long.json["error"]["param"], "prompt");
  EXPECT_EQ(too_long.json["error"]["code"], "context_length_exceeded");

  const HttpReply over_seq =
      http_post(port(), "/v1/completions", Json{{"prompt", std::vector<int>(100, 7)}, {"max_tokens", 200}});
  expect_error_shape(over_seq, 400, "prompt + max_tokens over max_seq_len");
  EXPECT_EQ(over_seq.json["error"]["param"], "max_tokens");

  std::string essay;
  for (int i = 0; i < 200; ++i) essay += "many words ";
  const HttpReply chat = http_post(port(), "/v1/chat/completions",
                                   Json{{"messages", Json::array({{{"role", "user"}, {"content", essay}}})}});
  expect_error_shape(chat, 400, "chat over the context");
  EXPECT_EQ(chat.json["error"]["param"], "messages");

  expect_error_shape(http_post(port(), "/v1/completions", Json{{"prompt", Json::array({999999})}}), 400, "bad id");
  const HttpReply model = http_post(port(), "/v1/completions", Json{{"prompt", "x"}, {"model", "gpt-4"}});
  expect_error_shape(model, 404, "unknown model");
  EXPECT_EQ(model.json["error"]["code"], "model_not_found");
  expect_error_shape(http_post(port(), "/v1/nothing", Json::object()), 404, "unknown route");
  expect_error_shape(http_get(port(), "/v1/completions"), 404, "GET on a POST route");
  expect_error_shape(http_post(port(), "/v1/completions", std::string(9 << 20, ' ')), 413, "9 MiB body");
  // curl -d sends form data: a body past httplib's 8 KiB form limit is still read as JSON.
  const HttpReply form = http_post(port(), "/v1/completions", Json{{"prompt", std::string(20000, 'a')}}.dump(),
                                   "application/x-www-form-urlencoded");
  expect_error_shape(form, 400, "20 KB prompt sent as form data");
  EXPECT_EQ(form.json["error"]["code"], "context_length_exceeded");
  EXPECT_EQ(http_get(port(), "/health").status, 200);
}

TEST_F(ServerRobustness, MalformedBodiesNeverHurtTheServer) {
  std::vector<std::string> bodies = {
      "", "{", "}", "[]", "null", "123", "\"text\"", "{\"prompt\": }", "{\"prompt\": 5}", "{\"prompt\": [[]]}",
      "{\"prompt\": []}", "{\"prompt\": [-1]}", "{\"prompt\": [1.5]}", "{\"prompt\": {}}", "{\"prompt\": [\"a\", 1]}",
      "{\"prompt\": \"x\", \"max_tokens\": \"ten\"}", "{\"prompt\": \"x\", \"max_tokens\": 1e400}",
      "{\"prompt\": \"x\", \"max_tokens\": 99999999999999999999}", "{\"prompt\": \"x\", \"n\": 1.5}",
      "{\"prompt\": \"x\", \"n\": -3}", "{\"prompt\": \"x\", \"stop\": [1]}", "{\"prompt\": \"x\", \"stop\": {}}",
      "{\"prompt\": \"x\", \"stop\": [\"\"]}", "{\"prompt\": \"x\", \"temperature\": \"hot\"}",
      "{\"prompt\": \"x\", \"top_p\": 7}", "{\"prompt\": \"x\", \"seed\": \"s\"}", "{\"prompt\": \"x\", \"logprobs\": 99}",
      "{\"prompt\": \"x\", \"stream_options\": 3}", "{\"prompt\": \"\xff\xfe\"}", "{\"prompt\": \"x\", \"echo\": true}",
      "{\"messages\": \"hi\"}", "{\"messages\": [1]}", "{\"messages\": [{\"role\": 1}]}",
      "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}",
      "{\"messages\": [{\"role\": \"user\", \"content\": 5}]}", std::string(100000, '['), std::string(5000, '{'),
      "{\"prompt\": \"x\"" + std::string(1000, ',') + "}", std::string("\x00\x01\x02", 3)};
  const std::string valid = R"({"messages": [{"role": "user", "content": "Hi there"}], "max_tokens": 2})";
  for (size_t n = 0; n < valid.size(); n += 3) bodies.push_back(valid.substr(0, n));  // truncations
  std::mt19937 rng(1);
  for (int i = 0; i < 50; ++i) {  // random bytes
    std::string b(rng() % 200, ' ');
    for (char& c : b) c = char(rng() & 0xff);
    bodies.push_back(b);
  }
  const auto start = Clock::now();
  for (const char* path : {"/v1/completions", "/v1/chat/completions"})
    for (const std::string& b : bodies) {
      const HttpReply r = http_post(port(), path, b);
      ASSERT_NE(r.status, 0) << "no answer to: " << b.substr(0, 80);
      EXPECT_LT(r.status, 500) << b.substr(0, 80) << " → " << r.body;
      if (r.status >= 400) expect_error_shape(r, r.status, b.substr(0, 80));
    }
  EXPECT_LT(std::chrono::duration<double>(Clock::now() - start).count(), 120);
  EXPECT_EQ(http_get(port(), "/health").status, 200);
  const HttpReply ok = http_post(port(), "/v1/completions", Json{{"prompt", "Hello"}, {"max_tokens", 3}});
  EXPECT_EQ(ok.status, 200);
  EXPECT_TRUE(idle(wait_for_metrics(port(), idle)));
}

TEST_F(ServerRobustness, ClientLeavingMidStreamCancelsAndFreesKV) {
  const std::string before = http_get(port(), "/metrics").body;
  const double gen_before = metric(before, "lamina_generation_tokens_total");
  const double left_before = metric(before, "lamina_client_disconnects_total");
  int chunks = 0;
  const StreamReply s = http_stream(
      port(), "/v1/completions",
      {{"prompt", "In the beginning"}, {"max_tokens", 200}, {"temperature", 0}, {"ignore_eos", true}},
      [&](const Json&) { return ++chunks < 3; });  // hang up after the third chunk
  EXPECT_FALSE(s.done);
  EXPECT_EQ(chunks, 3);
  const std::string after = wait_for_metrics(port(), [&](const std::string& m) {
    return idle(m) && metric(m, "lamina_client_disconnects_total") > left_before;
  });
  EXPECT_TRUE(idle(after)) << after;
  EXPECT_EQ(metric(after, "lamina_client_disconnects_total"), left_before + 1);
  EXPECT_GE(metric(after, "lamina_request_finished_total", "reason=\"cancelled\""), 1);
  EXPECT_LT(metric(after, "lamina_generation_tokens_total") - gen_before, 200) << "it ran to the end";
}

TEST_F(ServerRobustness, BoundedLoadRunLosesNothing) {
  constexpr int kRequests = 200, kConcurrency = 32;
  const double gen_before = metric(http_get(port(), "/metrics").body, "lamina_generation_tokens_total");
  std::atomic<int> next{0}, ok{0};
  std::atomic<long> tokens{0}, expected{0};
  std::vector<std::string> failures(kRequests);
  const auto start = Clock::now();
  std::vector<std::thread> clients;
  for (int c = 0; c < kConcurrency; ++c)
    clients.emplace_back([&] {
      for (int i; (i = next++) < kRequests;) {
        const int max_tokens = 4 + i % 13;
        expected += max_tokens;
        const Json body = {{"prompt", "Request number " + std::to_string(i)}, {"max_tokens", max_tokens},
                           {"temperature", i % 3 == 0 ? 0.0 : 0.8}, {"seed", i}, {"ignore_eos", true},
                           {"stream_options", {{"include_usage", true}}}};
        int got = -1;
        if (i % 2) {
          const StreamReply s = http_stream(port(), "/v1/completions", body);
          if (s.status == 200 && s.done && !s.events.empty()) got = s.events.back()["usage"]["completion_tokens"];
          else failures[size_t(i)] = "stream: HTTP " + std::to_string(s.status) + " " + s.raw.substr(0, 200);
        } else {
          const HttpReply r = http_post(port(), "/v1/completions", body);
          if (r.status == 200) got = r.json["usage"]["completion_tokens"];
          else failures[size_t(i)] = "HTTP " + std::to_string(r.status) + " " + r.body.substr(0, 200);
        }
        if (got == max_tokens) ++ok;
        else if (failures[size_t(i)].empty()) failures[size_t(i)] = "got " + std::to_string(got) + " tokens";
        if (got > 0) tokens += got;
      }
    });
  for (auto& t : clients) t.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (int i = 0; i < kRequests; ++i) EXPECT_TRUE(failures[size_t(i)].empty()) << "request " << i << ": " << failures[size_t(i)];
  EXPECT_EQ(ok, kRequests);
  EXPECT_EQ(tokens, expected);
  EXPECT_LT(seconds, 300);
  const std::string m = wait_for_metrics(port(), idle);
  EXPECT_TRUE(idle(m));
  EXPECT_EQ(metric(m, "lamina_generation_tokens_total") - gen_before, double(expected));
  std::printf("[load] %d requests, %d concurrent, %ld tokens in %.1f s\n", kRequests, kConcurrency, long(tokens), seconds);
}

TEST_F(ServerRobustness, BenchServingReportsThroughput) {
  ScratchDir scratch("bench_serving");
  const auto json = scratch / "bench.json";
  const CommandResult r = run_lamina("bench_serving --server " + server_->base_url() +
                                     " --concurrency 4 --num_requests 8 --isl 16 --osl 8 --json " + json.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("output tok/s"), std::string::npos) << r.output;
  // The server's engine steps of the run, from its /metrics before and after.
  const size_t steps_at = r.output.find("server steps: ");
  ASSERT_NE(steps_at, std::string::npos) << r.output;
  EXPECT_GT(std::atoi(r.output.c_str() + steps_at + 14), 0) << r.output;
  EXPECT_NE(r.output.find("wall time by phase: schedule", steps_at), std::string::npos) << r.output;
  std::ifstream in(json);
  const Json j = Json::parse(in, nullptr, false);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_EQ(j["output_tokens"], 64);
  EXPECT_GT(j["output_token_throughput"].get<double>(), 0);
  EXPECT_GT(j["ttft_ms"]["p50"].get<double>(), 0);
  EXPECT_GE(j["itl_ms"]["p99"].get<double>(), j["itl_ms"]["p50"].get<double>());
}

TEST(ServerQueue, AFullQueueAnswers429AndServesTheRest) {
  ServerProcess server({"--max_batch_size", "1", "--max_queue", "1"});
  const Json body = {{"prompt", "In the beginning"}, {"max_tokens", 120}, {"temperature", 0}, {"ignore_eos", true}};
  std::vector<std::future<HttpReply>> replies;
  for (int i = 0; i < 8; ++i)
    replies.push_back(std::async(std::launch::async, [&] { return http_post(server.port(), "/v1/completions", body); }));
  int busy = 0, ok = 0;
  for (auto& f : replies) {
    const HttpReply r = f.get();
    if (r.status == 429) {
      ++busy;
      expect_error_shape(r, 429, "queue full");
      EXPECT_EQ(r.json["error"]["code"], "rate_limit_exceeded");
    } else {
      EXPECT_EQ(r.status, 200) << r.body;
      if (r.status == 200) {
        EXPECT_EQ(r.json["usage"]["completion_tokens"], 120);
      }
      ++ok;
    }
  }
  EXPECT_GE(busy, 1);
  EXPECT_GE(ok, 1);
  EXPECT_EQ(busy + ok, 8);
  EXPECT_EQ(http_get(server.port(), "/health").status, 200);
  EXPECT_TRUE(idle(wait_for_metrics(server.port(), idle)));
}

// The connection pool is sized from the batch and the queue (max_batch_size 8 + max_queue 256 +
// 16 here): 200 clients that connect and send nothing (each holds a connection until the read
// times out, 5 s) leave room for /health. With the earlier fixed pool of 128 connections it waited
// for those timeouts.
TEST(ServerConnections, IdleConnectionsDoNotStarveHealth) {
  ServerProcess server;
  EXPECT_NE(server.output().find("280 connections at once"), std::string::npos) << server.output();
  std::vector<int> idle_fds;
  for (int i = 0; i < 200; ++i) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_in addr = loopback(server.port());
    ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << "connection " << i;
    idle_fds.push_back(fd);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));  // the server has taken them all
  const auto start = Clock::now();
  const HttpReply r = http_get(server.port(), "/health");
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  for (int fd : idle_fds) ::close(fd);
  EXPECT_EQ(r.status, 200);
  EXPECT_LT(seconds, 2.0) << "/health waited for a connection";
}

// bench_serving against an address where nothing listens names it and says what to do, once.
TEST(BenchServing, NamesAServerThatIsNotThere) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);  // a port that was free a moment ago
  ASSERT_GE(fd, 0);
  sockaddr_in addr = loopback(0);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const int port = ntohs(addr.sin_port);
  ::close(fd);
  const CommandResult r = run_lamina("bench_serving --server http://127.0.0.1:" + std::to_string(port) +
                                     " --concurrency 2 --num_requests 4 --isl 4 --osl 2");
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("cannot reach http://127.0.0.1:" + std::to_string(port)), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("lamina serve"), std::string::npos) << r.output;
}

TEST(ServerShutdown, SigtermDrainsTheRunningStreamAndExitsZero) {
  ServerProcess server;
  std::promise<void> first_chunk;
  std::atomic<bool> signalled{false};
  auto stream = std::async(std::launch::async, [&] {
    return http_stream(server.port(), "/v1/completions",
                       {{"prompt", "In the beginning"}, {"max_tokens", 150}, {"temperature", 0}, {"ignore_eos", true},
                        {"stream_options", {{"include_usage", true}}}},
                       [&](const Json&) {
                         if (!signalled.exchange(true)) first_chunk.set_value();
                         return true;
                       });
  });
  ASSERT_EQ(first_chunk.get_future().wait_for(std::chrono::seconds(60)), std::future_status::ready);
  ::kill(server.pid(), SIGTERM);
  // New work is refused while the stream drains (503), or the listener is already gone (no answer).
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const HttpReply late = http_post(server.port(), "/v1/completions", Json{{"prompt", "late"}, {"max_tokens", 2}});
  EXPECT_TRUE(late.status == 503 || late.status == 0) << late.status << " " << late.body;
  const StreamReply s = stream.get();
  EXPECT_TRUE(s.done) << s.raw.substr(0, 500);
  ASSERT_FALSE(s.events.empty());
  EXPECT_EQ(s.events.back()["usage"]["completion_tokens"], 150);
  EXPECT_EQ(server.signal_and_wait(0, 60), 0) << server.output();
  EXPECT_NE(server.output().find("drained"), std::string::npos) << server.output();
}

}  // namespace
}  // namespace lamina::test
