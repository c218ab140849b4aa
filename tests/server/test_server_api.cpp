// The OpenAI API of a live `lamina serve` on 127.0.0.1: completions and chat, streamed and not,
// stop strings, logprobs, n + seed, usage, models/health/metrics, and concurrent requests giving
// exactly what each gives alone (greedy).
#include <gtest/gtest.h>

#include <future>
#include <memory>

#include "http_helpers.h"
#include "server_process.h"

namespace lamina::test {
namespace {

class ServerApi : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { server_ = new ServerProcess({"--served_model_name", "tiny"}); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  static int port() { return server_->port(); }

  static Json completion(const std::string& prompt, int max_tokens, Json extra = Json::object()) {
    Json body = {{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}};
    body.update(extra);
    const HttpReply r = http_post(port(), "/v1/completions", body);
    EXPECT_EQ(r.status, 200) << r.body;
    return r.json;
  }

  static ServerProcess* server_;
};
ServerProcess* ServerApi::server_ = nullptr;

const std::vector<std::string> kPrompts = {
    "In the beginning",       "It is a truth universally", "The quick brown fox", "Hello world",
    "And the earth was",      "What is the capital of",    "0123456789",          "Elizabeth said",
    "He went out to the",     "A single man in",           "The server streams",  "Darkness was upon"};

TEST_F(ServerApi, HealthModelsAndMetrics) {
  EXPECT_EQ(http_get(port(), "/health").status, 200);
  const HttpReply models = http_get(port(), "/v1/models");
  ASSERT_EQ(models.status, 200);
  EXPECT_EQ(models.json["object"], "list");
  EXPECT_EQ(models.json["data"][0]["id"], "tiny");
  EXPECT_EQ(http_get(port(), "/v1/models/tiny").status, 200);
  EXPECT_EQ(http_get(port(), "/v1/models/other").status, 404);
  const HttpReply m = http_get(port(), "/metrics");
  ASSERT_EQ(m.status, 200);
  for (const char* name : {"lamina_num_requests_waiting", "lamina_num_requests_running", "lamina_kv_cache_blocks_used",
                           "lamina_kv_cache_blocks_total", "lamina_generation_tokens_total",
                           "lamina_time_to_first_token_seconds_count", "lamina_inter_token_latency_seconds_count"})
    EXPECT_GE(metric(m.body, name), 0) << name;
  EXPECT_NE(m.body.find("# TYPE lamina_time_to_first_token_seconds histogram"), std::string::npos);
  EXPECT_GT(metric(m.body, "lamina_kv_cache_blocks_total"), 0);
}

TEST_F(ServerApi, CompletionStreamedEqualsWhole) {
  const Json whole = completion("In the beginning", 24, {{"ignore_eos", true}});
  EXPECT_EQ(whole["object"], "text_completion");
  EXPECT_EQ(whole["model"], "tiny");
  EXPECT_EQ(whole["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(whole["usage"]["completion_tokens"], 24);
  EXPECT_GT(whole["usage"]["prompt_tokens"].get<int>(), 0);
  EXPECT_EQ(whole["usage"]["total_tokens"].get<int>(),
            whole["usage"]["prompt_tokens"].get<int>() + whole["usage"]["completion_tokens"].get<int>());

  const StreamReply s = http_stream(port(), "/v1/completions",
                                    {{"prompt", "In the beginning"}, {"max_tokens", 24}, {"temperature", 0},
                                     {"ignore_eos", true}, {"stream_options", {{"include_usage", true}}}});
  ASSERT_EQ(s.status, 200);
  EXPECT_TRUE(s.done);
  EXPECT_EQ(s.text, choice_text(whole));  // never a broken UTF-8 character: the same bytes as the whole text
  EXPECT_EQ(s.finish_reason, "length");
  ASSERT_FALSE(s.events.empty());
  const Json& usage = s.events.back();
  EXPECT_TRUE(usage["choices"].empty());
  EXPECT_EQ(usage["usage"]["completion_tokens"], 24);
  EXPECT_EQ(s.raw.find("data: ", 0), 0u);
}

TEST_F(ServerApi, ChatUsesTheTemplateStreamedAndWhole) {
  const Json messages = Json::array({{{"role", "system"}, {"content", "Answer briefly."}},
                                     {{"role", "user"}, {"content", "Who is Elizabeth?"}}});
  const HttpReply whole = http_post(port(), "/v1/chat/completions",
                                    Json{{"messages", messages}, {"max_tokens", 20}, {"temperature", 0}});
  ASSERT_EQ(whole.status, 200) << whole.body;
  EXPECT_EQ(whole.json["object"], "chat.completion");
  EXPECT_EQ(whole.json["choices"][0]["message"]["role"], "assistant");
  const std::string reason = whole.json["choices"][0]["finish_reason"];
  EXPECT_TRUE(reason == "stop" || reason == "length") << reason;
  // The template wraps the two messages in header tokens: many more tokens than the words.
  EXPECT_GT(whole.json["usage"]["prompt_tokens"].get<int>(), 12);

  const StreamReply s = http_stream(port(), "/v1/chat/completions",
                                    {{"messages", messages}, {"max_tokens", 20}, {"temperature", 0}});
  ASSERT_EQ(s.status, 200);
  EXPECT_TRUE(s.done);
  ASSERT_FALSE(s.events.empty());
  EXPECT_EQ(s.events[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(s.events[0]["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(s.text, choice_text(whole.json));
  EXPECT_EQ(s.finish_reason, reason);
}

TEST_F(ServerApi, StopStringsCutTheTextStreamedAndWhole) {
  const std::string full = choice_text(completion("The quick brown fox", 40, {{"ignore_eos", true}}));
  // A two-letter ASCII stop from the middle of the output.
  size_t at = 4;
  while (at + 1 < full.size() && !(std::isalpha((unsigned char)full[at]) && std::isalpha((unsigned char)full[at + 1])))
    ++at;
  ASSERT_LT(at + 1, full.size()) << "no ASCII letters in: " << full;
  const std::string stop = full.substr(at, 2);
  const std::string expected = full.substr(0, full.find(stop));

  const Json cut = completion("The quick brown fox", 40, {{"ignore_eos", true}, {"stop", Json::array({stop, "\x01\x02"})}});
  EXPECT_EQ(choice_text(cut), expected);
  EXPECT_EQ(cut["choices"][0]["finish_reason"], "stop");
  const StreamReply s = http_stream(port(), "/v1/completions",
                                    {{"prompt", "The quick brown fox"}, {"max_tokens", 40}, {"temperature", 0},
                                     {"ignore_eos", true}, {"stop", stop}});
  EXPECT_EQ(s.text, expected);
  EXPECT_EQ(s.finish_reason, "stop");
  EXPECT_TRUE(s.done);
}

TEST_F(ServerApi, LogprobsForCompletionsAndChat) {
  const Json c = completion("Hello world", 5, {{"ignore_eos", true}, {"logprobs", 3}});
  const Json& lp = c["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 5u);
  ASSERT_EQ(lp["token_logprobs"].size(), 5u);
  ASSERT_EQ(lp["top_logprobs"].size(), 5u);
  ASSERT_EQ(lp["text_offset"].size(), 5u);
  for (size_t i = 0; i < 5; ++i) {
    EXPECT_LE(lp["token_logprobs"][i].get<double>(), 0.0);
    EXPECT_GE(lp["top_logprobs"][i].size(), 1u);  // token texts may coincide (partial UTF-8)
    EXPECT_LE(lp["top_logprobs"][i].size(), 3u);
  }

  const HttpReply chat = http_post(port(), "/v1/chat/completions",
                                   Json{{"messages", Json::array({{{"role", "user"}, {"content", "Hi"}}})},
                                        {"max_tokens", 4}, {"temperature", 0}, {"ignore_eos", true},
                                        {"logprobs", true}, {"top_logprobs", 2}});
  ASSERT_EQ(chat.status, 200) << chat.body;
  const Json& content = chat.json["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), 4u);
  for (const Json& t : content) {
    ASSERT_EQ(t["top_logprobs"].size(), 2u);
    EXPECT_DOUBLE_EQ(t["logprob"].get<double>(), t["top_logprobs"][0]["logprob"].get<double>());  // greedy
    EXPECT_TRUE(t["bytes"].is_array());
  }
  EXPECT_TRUE(completion("Hello world", 2)["choices"][0]["logprobs"].is_null());
}

TEST_F(ServerApi, ChoicesWithASeedAreReproducible) {
  const Json extra = {{"n", 3}, {"temperature", 1.0}, {"seed", 42}, {"ignore_eos", true}};
  const Json a = completion("And the earth was", 12, extra);
  const Json b = completion("And the earth was", 12, extra);
  ASSERT_EQ(a["choices"].size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(a["choices"][i]["index"], i);
    EXPECT_EQ(choice_text(a, i), choice_text(b, i));
  }
  EXPECT_EQ(a["usage"]["completion_tokens"], 36);
  // Several prompts × n choices, in prompt order.
  const Json multi = completion("", 3, {{"prompt", Json::array({"Hello world", "0123456789"})}, {"n", 2}, {"ignore_eos", true}});
  ASSERT_EQ(multi["choices"].size(), 4u);
  EXPECT_EQ(choice_text(multi, 0), choice_text(multi, 1));  // greedy
  EXPECT_EQ(choice_text(multi, 0), choice_text(completion("Hello world", 3, {{"ignore_eos", true}})));
}

TEST_F(ServerApi, TokenIdPromptsWork) {
  const Json ids = completion("", 6, {{"prompt", Json::array({1, 2, 3, 4})}, {"ignore_eos", true}});
  EXPECT_EQ(ids["usage"]["prompt_tokens"], 4);
  EXPECT_EQ(ids["usage"]["completion_tokens"], 6);
}

TEST_F(ServerApi, ConcurrentRequestsEqualTheSameRequestsAlone) {
  auto body = [](size_t i) {
    return Json{{"prompt", kPrompts[i]}, {"max_tokens", 8 + int(i % 4) * 6}, {"temperature", 0}};
  };
  std::vector<std::string> alone;
  for (size_t i = 0; i < kPrompts.size(); ++i) alone.push_back(choice_text(http_post(port(), "/v1/completions", body(i)).json));

  // All at once, half of them streamed.
  std::vector<std::future<std::string>> futures;
  for (size_t i = 0; i < kPrompts.size(); ++i)
    futures.push_back(std::async(std::launch::async, [&, i] {
      if (i % 2) return http_stream(port(), "/v1/completions", body(i)).text;
      const HttpReply r = http_post(port(), "/v1/completions", body(i));
      return r.status == 200 ? choice_text(r.json) : "HTTP " + std::to_string(r.status);
    }));
  for (size_t i = 0; i < kPrompts.size(); ++i) EXPECT_EQ(futures[i].get(), alone[i]) << "prompt " << i;
  // The executor publishes its stats before it hands out a step's outputs: no waiting needed.
  const HttpReply m = http_get(port(), "/metrics");
  EXPECT_EQ(metric(m.body, "lamina_kv_cache_blocks_used"), 0);
  EXPECT_EQ(metric(m.body, "lamina_num_requests_running"), 0);
  // The steps that ran are timed by phase; the engine's forward is the bulk of them.
  const double engine = metric(m.body, "lamina_step_seconds_total", "phase=\"engine\"");
  EXPECT_GT(engine, 0.0);
  EXPECT_GE(metric(m.body, "lamina_step_seconds_total", "phase=\"schedule\""), 0.0);
  EXPECT_GE(metric(m.body, "lamina_step_seconds_total", "phase=\"output\""), 0.0);
}

// --enable_kv_cache_reuse on the paged KV cache: a request sharing a long prefix with an earlier
// one reuses its cached blocks (the metrics count them) and answers exactly what a server without
// reuse answers (greedy).
TEST(ServerKVReuse, SharedPrefixIsReusedWithTheSameOutput) {
  std::string prefix;
  for (int i = 0; i < 4; ++i) prefix += "It is a truth universally acknowledged. ";
  const std::vector<std::string> prompts = {prefix + "In the beginning", prefix + "The quick brown fox"};
  auto run = [&](const std::vector<std::string>& flags) {
    ServerProcess server(flags);
    std::vector<std::string> texts;
    for (const auto& p : prompts) {
      const HttpReply r = http_post(server.port(), "/v1/completions",
                                    Json{{"prompt", p}, {"max_tokens", 12}, {"temperature", 0}, {"ignore_eos", true}});
      EXPECT_EQ(r.status, 200) << r.body;
      texts.push_back(r.json["choices"][0]["text"].get<std::string>());
    }
    const HttpReply m = http_get(server.port(), "/metrics");
    return std::pair{texts, metric(m.body, "lamina_kv_cache_reused_tokens_total")};
  };
  const auto [plain, plain_reused] = run({"--tokens_per_block", "16"});
  const auto [reused, reused_tokens] = run({"--tokens_per_block", "16", "--enable_kv_cache_reuse"});
  EXPECT_EQ(reused, plain);
  EXPECT_EQ(plain_reused, 0);
  EXPECT_GE(reused_tokens, 16);  // at least one whole block of the shared prefix
}

}  // namespace
}  // namespace lamina::test
