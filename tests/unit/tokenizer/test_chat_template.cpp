// Chat templates: our Jinja subset against renderings by real Jinja2 (transformers' settings), the
// real LLaMA 3 templates against the format they define, and BOS appearing exactly once.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "test_util.h"
#include "tokenizer/chat_template.h"

namespace lamina {
namespace {

using OJson = nlohmann::ordered_json;

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(ChatTemplate, MatchesJinja2Renderings) {
  std::ifstream in(test::fixture_path("chat_templates.jsonl"));
  ASSERT_TRUE(in.good());
  std::string line;
  int rows = 0;
  while (std::getline(in, line)) {
    const OJson row = OJson::parse(line);  // ordered: tojson must keep the key order
    const ChatTemplate t(read_text(test::fixture_path("templates/" + row["template"].get<std::string>())));
    SCOPED_TRACE(row["template"].get<std::string>() + " " + row["context"].dump());
    if (row.contains("error")) {
      EXPECT_THROW(t.render(row["context"]), Error);
    } else {
      EXPECT_EQ(t.render(row["context"]), row["expected"].get<std::string>());
    }
    ++rows;
  }
  EXPECT_GE(rows, 40);
}

// The LLaMA 3 Instruct format, written out from its definition.
std::string llama3_format(const std::vector<ChatMessage>& messages, bool generation_prompt) {
  auto trim = [](const std::string& s) {
    const size_t b = s.find_first_not_of(" \t\n\r\f\v");
    if (b == std::string::npos) return std::string();
    return s.substr(b, s.find_last_not_of(" \t\n\r\f\v") - b + 1);
  };
  std::string out = "<|begin_of_text|>";
  for (const auto& m : messages)
    out += "<|start_header_id|>" + m.role + "<|end_header_id|>\n\n" + trim(m.content) + "<|eot_id|>";
  if (generation_prompt) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

const std::vector<std::vector<ChatMessage>> kConversations = {
    {{"user", "Hello!"}},
    {{"system", "  You are a helpful assistant.\n"}, {"user", "What is 2+2? "}, {"assistant", "4"}, {"user", "안녕 👋\n"}},
    {{"user", ""}},
};

TEST(ChatTemplate, Llama3TemplateProcessingVersion) {
  LAMINA_REQUIRE_LLAMA3(tok, "llama3_1");
  ASSERT_TRUE(tok->has_chat_template());
  for (const auto& conv : kConversations) {
    EXPECT_EQ(tok->render_chat(conv, true), llama3_format(conv, true));
    EXPECT_EQ(tok->render_chat(conv, false), llama3_format(conv, false));
  }
}

TEST(ChatTemplate, Llama3FirstReleaseAlwaysAddsTheAssistantHeader) {
  LAMINA_REQUIRE_LLAMA3(tok, "llama3");
  // This file's template ends with the assistant header unconditionally (HF renders it the same).
  for (const auto& conv : kConversations) {
    EXPECT_EQ(tok->render_chat(conv, true), llama3_format(conv, true));
    EXPECT_EQ(tok->render_chat(conv, false), llama3_format(conv, true));
  }
}

TEST(ChatTemplate, EncodeChatHasOneBos) {
  LAMINA_REQUIRE_LLAMA3(tok, "llama3_1");
  const auto& conv = kConversations[1];
  const auto ids = tok->encode_chat(conv);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], 128000);
  EXPECT_NE(ids[1], 128000);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), 128000), 1);
  EXPECT_EQ(ids, tok->encode(tok->render_chat(conv), false));
  EXPECT_EQ(tok->encode_chat({{"user", "Hello!"}}),
            (std::vector<int32_t>{128000, 128006, 882, 128007, 271, 9906, 0, 128009, 128006, 78191, 128007, 271}));
}

TEST(ChatTemplate, ExtraContextReachesTheTemplate) {
  const Json config = {{"bos_token", "<s>"},
                       {"chat_template", "{{ bos_token }}{{ greeting }}{% for m in messages %}[{{ m.role }}]{% endfor %}"}};
  const Tokenizer tok = Tokenizer::from_json(read_json_file(test::fixture_path("small/tokenizer.json")), config);
  OJson messages = OJson::array({{{"role", "user"}, {"content", "x"}}});
  EXPECT_EQ(tok.render_chat_json(messages, true, {{"greeting", "hi"}}), "<s>hi[user]");
}

}  // namespace
}  // namespace lamina
