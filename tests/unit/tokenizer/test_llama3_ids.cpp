// The real LLaMA 3 tokenizer (both released tokenizer.json versions) against ids made by HF
// tokenizers: the corpus, 3,000 random strings, and HF's decode of random id sequences.
#include <gtest/gtest.h>

#include "test_util.h"

namespace lamina {
namespace {

using test::read_jsonl;
using test::to_ids;

// Compares every corpus line for one tokenizer version and add_special_tokens setting.
void check_corpus(const Tokenizer& tok, const std::string& key, bool add_special) {
  int mismatches = 0;
  for (const Json& row : read_jsonl(test::fixture_path("llama3_ids.jsonl"))) {
    const std::string text = row["text"];
    const auto got = tok.encode(text, add_special);
    if (got != to_ids(row[key]) && ++mismatches <= 5) ADD_FAILURE() << key << " differs from HF for " << Json(text).dump();
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(Llama3Ids, FirstReleaseMatchesHf) {
  LAMINA_REQUIRE_LLAMA3(tok, "llama3");
  check_corpus(*tok, "llama3", false);
  check_corpus(*tok, "llama3+special", true);  // this version's post-processor adds nothing
}

TEST(Llama3Ids, TemplateProcessingVersionMatchesHf) {
  LAMINA_REQUIRE_LLAMA3(tok, "llama3_1");
  check_corpus(*tok, "llama3_1", false);
  check_corpus(*tok, "llama3_1+special", true);  // BOS 128000 first
}

TEST(Llama3Ids, KnownValues) {
  LAMINA_REQUIRE_LLAMA3(tok, "llama3_1");
  EXPECT_EQ(tok->encode("Hello world", false), (std::vector<int32_t>{9906, 1917}));
  EXPECT_EQ(tok->encode("Hello world", true), (std::vector<int32_t>{128000, 9906, 1917}));
  // ignore_merges: a pre-token that is a vocab entry is emitted whole.
  EXPECT_EQ(tok->encode(" việc", false), (std::vector<int32_t>{100769}));
  EXPECT_EQ(tok->encode("", true), (std::vector<int32_t>{128000}));
  EXPECT_TRUE(tok->encode("", false).empty());
}

TEST(Llama3Ids, DecodeRoundTripsExactly) {
  LAMINA_REQUIRE_LLAMA3(tok, "llama3_1");
  for (const Json& row : read_jsonl(test::fixture_path("llama3_ids.jsonl"))) {
    const std::string text = row["text"];
    EXPECT_EQ(tok->decode(to_ids(row["llama3_1"])), text);
    // skip_special_tokens drops BOS and special-token text that was in the input.
    std::string no_special;
    for (int32_t id : to_ids(row["llama3_1+special"]))
      if (!tok->is_special(id)) no_special += tok->token_bytes(id);
    EXPECT_EQ(tok->decode(to_ids(row["llama3_1+special"]), true), no_special);
  }
}

TEST(Llama3Ids, FuzzStringsMatchHf) {
  LAMINA_REQUIRE_LLAMA3(tok, "llama3");
  LAMINA_REQUIRE_LLAMA3(tok31, "llama3_1");
  int mismatches = 0;
  for (const Json& row : read_jsonl(test::fixture_path("llama3_fuzz.jsonl"))) {
    const std::string text = row["text"];
    const auto want = to_ids(row["ids"]);
    if (tok->encode(text, false) != want && ++mismatches <= 5) ADD_FAILURE() << "differs from HF: " << Json(text).dump();
    std::vector<int32_t> with_bos{128000};
    with_bos.insert(with_bos.end(), want.begin(), want.end());
    EXPECT_EQ(tok31->encode(text, true), with_bos);
    EXPECT_EQ(tok->decode(want), text);
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(Llama3Ids, DecodeMatchesHfOnBrokenUtf8AndSpecials) {
  LAMINA_REQUIRE_LLAMA3(tok, "llama3");
  for (const Json& row : read_jsonl(test::fixture_path("llama3_decode.jsonl"))) {
    const auto ids = to_ids(row["ids"]);
    EXPECT_EQ(tok->decode(ids, false), row["text"].get<std::string>()) << row["ids"].dump();
    EXPECT_EQ(tok->decode(ids, true), row["text_skip"].get<std::string>()) << row["ids"].dump();
  }
}

TEST(Llama3Ids, VocabularyAndSpecialTokens) {
  LAMINA_REQUIRE_LLAMA3(tok, "llama3_1");
  EXPECT_EQ(tok->vocab_size(), 128256u);
  EXPECT_EQ(tok->token_to_id("<|begin_of_text|>"), 128000);
  EXPECT_EQ(tok->token_to_id("<|eot_id|>"), 128009);
  EXPECT_EQ(tok->token_to_id("Ġworld"), 1917);
  EXPECT_EQ(tok->token_to_id("no such token"), std::nullopt);
  EXPECT_EQ(tok->id_to_token(1917), "Ġworld");
  EXPECT_EQ(tok->id_to_token(128009), "<|eot_id|>");
  EXPECT_TRUE(tok->is_special(128000));
  EXPECT_TRUE(tok->is_special(128255));
  EXPECT_FALSE(tok->is_special(1917));
  EXPECT_FALSE(tok->is_special(-1));
  EXPECT_EQ(tok->bos_token_id(), 128000);
  // This file's tokenizer_config names <|eot_id|> as eos; the first release names <|end_of_text|>.
  EXPECT_EQ(tok->eos_token_ids(), (std::vector<int32_t>{128009}));
  LAMINA_REQUIRE_LLAMA3(first, "llama3");
  EXPECT_EQ(first->eos_token_ids(), (std::vector<int32_t>{128001}));
  EXPECT_THROW(tok->id_to_token(128256), Error);
  EXPECT_THROW(tok->decode({5, 999999}), Error);
}

TEST(Llama3Ids, CopiesShareState) {
  LAMINA_REQUIRE_LLAMA3(tok, "llama3");
  Tokenizer copy = *tok;
  Tokenizer moved = std::move(copy);
  EXPECT_EQ(moved.encode("copy me"), tok->encode("copy me"));
}

}  // namespace
}  // namespace lamina
