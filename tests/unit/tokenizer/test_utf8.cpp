// UTF-8 helpers: lossy conversion must replace exactly like Rust's String::from_utf8_lossy
// (one U+FFFD per maximal ill-formed subpart), and incomplete tails must be recognised.
#include <gtest/gtest.h>

#include "tokenizer/byte_level.h"
#include "tokenizer/utf8.h"

namespace lamina {
namespace {

const std::string kFffd = "\xEF\xBF\xBD";

TEST(Utf8, LossyMatchesMaximalSubpartPolicy) {
  EXPECT_EQ(utf8::to_valid_lossy("abc"), "abc");
  EXPECT_EQ(utf8::to_valid_lossy("\xE2\x82"), kFffd);                     // truncated 3-byte sequence
  EXPECT_EQ(utf8::to_valid_lossy("\xE2\x82" "A"), kFffd + "A");
  EXPECT_EQ(utf8::to_valid_lossy("\xF0\x80\x80"), kFffd + kFffd + kFffd);  // F0 80 is never valid
  EXPECT_EQ(utf8::to_valid_lossy("\xED\xA0\x80"), kFffd + kFffd + kFffd);  // a surrogate
  EXPECT_EQ(utf8::to_valid_lossy("\xC0\xAF"), kFffd + kFffd);              // overlong
  EXPECT_EQ(utf8::to_valid_lossy("\xF4\x90\x80\x80"), kFffd + kFffd + kFffd + kFffd);  // > U+10FFFF
  EXPECT_EQ(utf8::to_valid_lossy("\xF0\x9F\x98"), kFffd);
  EXPECT_EQ(utf8::to_valid_lossy("\x80\x80"), kFffd + kFffd);
  EXPECT_EQ(utf8::to_valid_lossy("\xF0\x9F\x98\x80"), "\xF0\x9F\x98\x80");
}

TEST(Utf8, IncompleteTail) {
  EXPECT_EQ(utf8::incomplete_tail(""), 0u);
  EXPECT_EQ(utf8::incomplete_tail("ab"), 0u);
  EXPECT_EQ(utf8::incomplete_tail("a\xEC"), 1u);
  EXPECT_EQ(utf8::incomplete_tail("a\xEC\x95"), 2u);
  EXPECT_EQ(utf8::incomplete_tail("a\xEC\x95\x88"), 0u);  // 안 complete
  EXPECT_EQ(utf8::incomplete_tail("\xF0\x9F\x98"), 3u);
  EXPECT_EQ(utf8::incomplete_tail("\xF0\x80"), 0u);      // can never complete: emit as U+FFFD
  EXPECT_EQ(utf8::incomplete_tail("\x80"), 0u);
}

TEST(Utf8, Validation) {
  EXPECT_TRUE(utf8::is_valid("héllo 안녕 😀"));
  EXPECT_FALSE(utf8::is_valid("a\xFF"));
  EXPECT_EQ(utf8::first_invalid("ab\xC3"), 2u);
}

TEST(ByteLevel, AlphabetRoundTrips) {
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  const std::string text = byte_level::encode(all);
  EXPECT_EQ(byte_level::decode(text), all);
  EXPECT_EQ(byte_level::encode(" "), "\xC4\xA0");  // Ġ
  EXPECT_EQ(byte_level::encode("\n"), "\xC4\x8A");  // Ċ
  EXPECT_EQ(byte_level::decode("<|eot_id|>"), "<|eot_id|>");
  EXPECT_FALSE(byte_level::decode("\xE2\x82\xAC").has_value());  // € is not in the alphabet
}

}  // namespace
}  // namespace lamina
