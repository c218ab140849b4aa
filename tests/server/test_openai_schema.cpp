// The OpenAI request parser and the stop-string matcher, without a server.
#include <gtest/gtest.h>

#include "server/api_error.h"
#include "server/openai_request.h"
#include "server/stop_matcher.h"

namespace lamina::server {
namespace {

ApiError parse_error(const std::string& body, Endpoint ep = Endpoint::Completions) {
  try {
    parse_completion_params(body, ep);
  } catch (const ApiError& e) {
    return e;
  }
  ADD_FAILURE() << "accepted: " << body;
  return ApiError(0, "", "");
}

TEST(OpenAIRequest, ParsesCompletionFields) {
  const auto p = parse_completion_params(
      R"({"model": "m", "prompt": "hi", "max_tokens": 7, "temperature": 0.5, "top_p": 0.9, "n": 2, "seed": 3,
          "stop": ["a", "b"], "logprobs": 2, "stream": true, "stream_options": {"include_usage": true},
          "presence_penalty": 0.1, "frequency_penalty": -0.2})",
      Endpoint::Completions);
  EXPECT_EQ(p.model, "m");
  ASSERT_EQ(p.prompts.size(), 1u);
  EXPECT_EQ(p.prompts[0].text, "hi");
  EXPECT_EQ(*p.max_tokens, 7);
  EXPECT_EQ(p.n, 2);
  EXPECT_EQ(p.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(p.logprobs, 2);
  EXPECT_TRUE(p.stream && p.include_usage);
  const SamplingParams s0 = sampling_for_choice(p, 0, 99), s1 = sampling_for_choice(p, 1, 99);
  EXPECT_EQ(s0.seed, 3u);
  EXPECT_EQ(s1.seed, 4u);  // choice i: seed + i
  EXPECT_FLOAT_EQ(s0.temperature, 0.5f);
  EXPECT_FLOAT_EQ(s0.top_p, 0.9f);
  EXPECT_EQ(s0.top_k, 0);
}

TEST(OpenAIRequest, PromptSpellings) {
  EXPECT_TRUE(parse_completion_params(R"({"prompt": [1, 2, 3]})", Endpoint::Completions).prompts[0].is_ids);
  EXPECT_EQ(parse_completion_params(R"({"prompt": ["a", "b"]})", Endpoint::Completions).prompts.size(), 2u);
  EXPECT_EQ(parse_completion_params(R"({"prompt": [[1], [2, 3]]})", Endpoint::Completions).prompts.size(), 2u);
  EXPECT_EQ(parse_completion_params(R"({"prompt": "x", "stop": "s"})", Endpoint::Completions).stop.size(), 1u);
}

TEST(OpenAIRequest, TemperatureZeroIsGreedy) {
  const auto p = parse_completion_params(R"({"prompt": "x", "temperature": 0})", Endpoint::Completions);
  EXPECT_EQ(sampling_for_choice(p, 0, 1).top_k, 1);
  const auto q = parse_completion_params(R"({"prompt": "x"})", Endpoint::Completions);
  EXPECT_EQ(sampling_for_choice(q, 0, 1).top_k, 0);  // OpenAI's default is sampling at temperature 1
  EXPECT_EQ(sampling_for_choice(q, 0, 1).seed, 1u);  // no seed: the random one
}

TEST(OpenAIRequest, ChatMessagesAndLogprobs) {
  const auto p = parse_completion_params(
      R"({"messages": [{"role": "system", "content": "be brief"},
                       {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}],
          "logprobs": true, "top_logprobs": 3, "max_completion_tokens": 5})",
      Endpoint::Chat);
  ASSERT_EQ(p.messages.size(), 2u);
  EXPECT_EQ(p.messages[1]["content"], "ab");
  EXPECT_EQ(p.logprobs, 3);
  EXPECT_EQ(*p.max_tokens, 5);
}

TEST(OpenAIRequest, ErrorsNameTheField) {
  EXPECT_EQ(parse_error("{").status(), 400);
  EXPECT_EQ(parse_error("[]").to_json()["error"]["type"], "invalid_request_error");
  EXPECT_EQ(parse_error(R"({})").to_json()["error"]["param"], "prompt");
  EXPECT_EQ(parse_error(R"({"prompt": 5})").to_json()["error"]["param"], "prompt");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "n": 0})").to_json()["error"]["param"], "n");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "temperature": 3})").to_json()["error"]["param"], "temperature");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "max_tokens": "ten"})").to_json()["error"]["param"], "max_tokens");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "max_tokens": 0})").to_json()["error"]["param"], "max_tokens");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "stop": [1]})").to_json()["error"]["param"], "stop");
  EXPECT_EQ(parse_error(R"({"prompt": "x", "stream": "yes"})").to_json()["error"]["param"], "stream");
  EXPECT_EQ(parse_error(R"({"prompt": [-1]})").to_json()["error"]["param"], "prompt");
  EXPECT_EQ(parse_error(R"({"messages": []})", Endpoint::Chat).to_json()["error"]["param"], "messages");
  EXPECT_EQ(parse_error(R"({"messages": [{"role": 1}]})", Endpoint::Chat).to_json()["error"]["param"],
            "messages[0].role");
  EXPECT_EQ(parse_error(R"({"messages": [{"role": "user"}], "top_logprobs": 2})", Endpoint::Chat)
                .to_json()["error"]["param"],
            "top_logprobs");
  const Json e = parse_error(R"({"prompt": "x", "n": 0})").to_json();
  EXPECT_TRUE(e["error"].contains("message") && e["error"].contains("code"));
}

TEST(StopMatcher, CutsBeforeTheStopAndHoldsBackPartialMatches) {
  StopMatcher m({"END", "xyz"});
  EXPECT_EQ(m.push("hello E"), "hello ");  // "E" may start "END"
  EXPECT_EQ(m.push("N"), "");
  EXPECT_EQ(m.push("X more"), "ENX more");
  EXPECT_FALSE(m.stopped());
  EXPECT_EQ(m.push(" and xy"), " and ");
  EXPECT_EQ(m.push("z tail"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.push("after"), "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, FlushReturnsHeldText) {
  StopMatcher m({"stop here"});
  EXPECT_EQ(m.push("we stop"), "we ");
  EXPECT_EQ(m.flush(), "stop");
  StopMatcher none({});
  EXPECT_EQ(none.push("abc"), "abc");
}

TEST(StopMatcher, EarliestStopWins) {
  StopMatcher m({"b", "abc"});
  EXPECT_EQ(m.push("xxabc"), "xx");  // "abc" starts before "b"
}

}  // namespace
}  // namespace lamina::server
