// A small byte-level BPE trained by HF tokenizers on our corpus (committed: it is our own data),
// with the LLaMA 3 pre-tokenizer but merges stored as [a, b] pairs, a BOS + EOS template, characters
// missing from the vocab, and added tokens with lstrip / rstrip / single_word / normalized.
#include <gtest/gtest.h>

#include <thread>

#include "test_util.h"

namespace lamina {
namespace {

TEST(SmallTokenizer, MatchesHf) {
  const Tokenizer tok = Tokenizer::load(test::fixture_path("small"));
  int mismatches = 0;
  for (const Json& row : test::read_jsonl(test::fixture_path("small_ids.jsonl"))) {
    const std::string text = row["text"];
    if (tok.encode(text, false) != test::to_ids(row["ids"]) && ++mismatches <= 5)
      ADD_FAILURE() << "differs from HF: " << Json(text).dump();
    EXPECT_EQ(tok.encode(text, true), test::to_ids(row["ids_special"])) << Json(text).dump();
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(SmallTokenizer, TemplateAddsBosAndEos) {
  const Tokenizer tok = Tokenizer::load(test::fixture_path("small"));
  const auto ids = tok.encode("hello", true);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), tok.token_to_id("<s>"));
  EXPECT_EQ(ids.back(), tok.token_to_id("</s>"));
  EXPECT_EQ(tok.token_to_id("<s>"), 2833);
  EXPECT_FALSE(tok.has_chat_template());
  EXPECT_THROW(tok.render_chat({{"user", "hi"}}), Error);
}

// Copies share one word cache; concurrent encodes must give the same ids as a single thread.
TEST(SmallTokenizer, ConcurrentEncodesAgree) {
  const Tokenizer tok = Tokenizer::load(test::fixture_path("small"));
  const auto rows = test::read_jsonl(test::fixture_path("small_ids.jsonl"));
  std::vector<int> mismatches(4, 0);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      const Tokenizer copy = tok;
      for (int pass = 0; pass < 3; ++pass)
        for (const Json& row : rows)
          mismatches[t] += copy.encode(row["text"].get<std::string>(), false) != test::to_ids(row["ids"]);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches, std::vector<int>(4, 0));
}

// HF ignores the ids written in added_tokens: HF's trainer saved this file with ids 0..4 (clashing
// with the vocab), and HF loaded it with 2833..2837, the ids after the 2,833 vocab entries.
TEST(SmallTokenizer, AddedTokenIdsAreAssignedLikeHf) {
  Json j = read_json_file(test::fixture_path("small/tokenizer.json"));
  for (size_t i = 0; i < j["added_tokens"].size(); ++i) j["added_tokens"][i]["id"] = i;
  const Tokenizer tok = Tokenizer::from_json(j);
  EXPECT_EQ(tok.token_to_id("<pad>"), 2835);
  EXPECT_EQ(tok.token_to_id("[word]"), 2836);
  EXPECT_EQ(tok.encode("a <pad> b", false), (std::vector<int32_t>{62, 2835, 63}));
  EXPECT_EQ(tok.vocab_size(), 2838u);
}

}  // namespace
}  // namespace lamina
