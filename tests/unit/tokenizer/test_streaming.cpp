// StreamingDetokenizer: token by token, never a broken UTF-8 sequence; the pieces add up to decode().
#include <gtest/gtest.h>

#include "test_util.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

namespace lamina {
namespace {

// A tokenizer whose vocabulary is exactly the 256 bytes: every multi-byte character is split
// across tokens, the hardest case for streaming. Needs no downloaded files.
Tokenizer byte_tokenizer() {
  Json vocab = Json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level::encode(std::string(1, static_cast<char>(b)))] = b;
  Json j = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", Json::array()}}},
            {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}}},
            {"decoder", {{"type", "ByteLevel"}}},
            {"added_tokens", Json::array({{{"id", 256}, {"content", "<eot>"}, {"special", true}}})}};
  return Tokenizer::from_json(j);
}

// Streams ids one at a time and checks each piece is valid UTF-8; returns the pieces.
std::vector<std::string> stream(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip = false) {
  StreamingDetokenizer s(tok, skip);
  std::vector<std::string> pieces;
  for (int32_t id : ids) {
    pieces.push_back(s.push(id));
    EXPECT_TRUE(utf8::is_valid(pieces.back())) << "broken UTF-8 after id " << id;
  }
  pieces.push_back(s.flush());
  return pieces;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += s;
  return out;
}

TEST(Streaming, KoreanByteByByte) {
  const Tokenizer tok = byte_tokenizer();
  const std::string text = "안녕하세요, 세계!";
  const auto ids = tok.encode(text);
  ASSERT_EQ(ids.size(), text.size());  // one token per byte
  const auto pieces = stream(tok, ids);
  EXPECT_EQ(join(pieces), text);
  // 안 is 3 bytes: nothing until its last byte arrives, then the whole character.
  EXPECT_EQ(pieces[0], "");
  EXPECT_EQ(pieces[1], "");
  EXPECT_EQ(pieces[2], "안");
}

TEST(Streaming, ZwjEmojiByteByByte) {
  const Tokenizer tok = byte_tokenizer();
  const std::string text = "👨‍👩‍👧‍👦 and 🧑🏽‍💻";
  const auto pieces = stream(tok, tok.encode(text));
  EXPECT_EQ(join(pieces), text);
  EXPECT_EQ(pieces[3], "👨");  // 4-byte code points come out whole, ZWJs as their own characters
  EXPECT_EQ(pieces[6], "\u200d");
}

TEST(Streaming, FlushEmitsHeldBackBytesAsReplacement) {
  const Tokenizer tok = byte_tokenizer();
  StreamingDetokenizer s(tok);
  EXPECT_EQ(s.push(0xF0), "");
  EXPECT_EQ(s.push(0x9F), "");
  EXPECT_EQ(s.flush(), "\xEF\xBF\xBD");
  EXPECT_EQ(s.flush(), "");
  // A byte that cannot continue the held sequence releases it as U+FFFD at once.
  EXPECT_EQ(s.push(0xE2), "");
  EXPECT_EQ(s.push('A'), "\xEF\xBF\xBD" "A");
}

TEST(Streaming, SkipsSpecialTokensWhenAsked) {
  const Tokenizer tok = byte_tokenizer();
  const auto ids = tok.encode("hi<eot>");
  EXPECT_EQ(join(stream(tok, ids, false)), "hi<eot>");
  EXPECT_EQ(join(stream(tok, ids, true)), "hi");
}

TEST(Streaming, Llama3TokensMatchDecode) {
  LAMINA_REQUIRE_LLAMA3(tok, "llama3");
  for (const std::string text : {"안녕하세요, 세계! 오늘 날씨가 정말 좋네요.", "👨‍👩‍👧‍👦 family, 🧑🏽‍💻 technologist, 🏳️‍🌈",
                                 "東京都渋谷区でラーメンを食べました😋"}) {
    const auto ids = tok->encode(text, false);
    EXPECT_EQ(join(stream(*tok, ids)), text);
  }
  // Every fixture line streams to exactly what decode() gives, including broken UTF-8.
  for (const Json& row : test::read_jsonl(test::fixture_path("llama3_decode.jsonl"))) {
    const auto ids = test::to_ids(row["ids"]);
    EXPECT_EQ(join(stream(*tok, ids)), tok->decode(ids)) << row["ids"].dump();
    EXPECT_EQ(join(stream(*tok, ids, true)), tok->decode(ids, true)) << row["ids"].dump();
  }
}

}  // namespace
}  // namespace lamina
