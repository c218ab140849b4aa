// Loading failures are lamina::Errors that say what is wrong and where.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "test_util.h"

namespace lamina {
namespace {

namespace fs = std::filesystem;

// The error message of f(), or "" when it did not throw a lamina::Error.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

class TokenizerErrors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("lamina_tok_err_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  void write(const std::string& name, const std::string& content) { std::ofstream(dir_ / name) << content; }
  Json minimal() const {
    Json vocab = Json::object();
    vocab["a"] = 0;
    vocab["b"] = 1;
    vocab["ab"] = 2;
    return {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"a b"}}}},
            {"pre_tokenizer", {{"type", "ByteLevel"}, {"use_regex", true}}},
            {"decoder", {{"type", "ByteLevel"}}}};
  }
  fs::path dir_;
};

TEST_F(TokenizerErrors, MissingDirectoryAndFile) {
  EXPECT_NE(error_of([&] { Tokenizer::load((dir_ / "nope").string()); }).find("does not exist"), std::string::npos);
  EXPECT_NE(error_of([&] { Tokenizer::load(dir_.string()); }).find("no tokenizer.json"), std::string::npos);
}

TEST_F(TokenizerErrors, MalformedJson) {
  write("tokenizer.json", "{\"model\": {");
  const std::string msg = error_of([&] { Tokenizer::load(dir_.string()); });
  EXPECT_NE(msg.find("not valid JSON"), std::string::npos) << msg;
  EXPECT_NE(msg.find("tokenizer.json"), std::string::npos) << msg;
}

TEST_F(TokenizerErrors, MalformedConfigJson) {
  write("tokenizer.json", minimal().dump());
  write("tokenizer_config.json", "not json");
  EXPECT_NE(error_of([&] { Tokenizer::load(dir_.string()); }).find("tokenizer_config.json"), std::string::npos);
}

TEST_F(TokenizerErrors, MinimalLoadsAndMerges) {
  write("tokenizer.json", minimal().dump());
  const Tokenizer tok = Tokenizer::load(dir_.string());
  EXPECT_EQ(tok.encode("ab"), (std::vector<int32_t>{2}));
  EXPECT_EQ(tok.encode("abc"), (std::vector<int32_t>{2}));  // 'c' is not in the vocab: dropped, as HF does
  EXPECT_EQ(tok.decode({2, 0}), "aba");
}

TEST_F(TokenizerErrors, UnsupportedStructuresAreNamed) {
  auto expect_error = [&](Json j, const std::string& needle) {
    const std::string msg = error_of([&] { Tokenizer::from_json(j); });
    EXPECT_NE(msg.find(needle), std::string::npos) << "message: " << msg;
  };
  Json j = minimal();
  j["model"]["type"] = "WordPiece";
  expect_error(j, "model type 'WordPiece' is not supported");
  j = minimal();
  j["model"]["type"] = "Unigram";
  expect_error(j, "Unigram");
  j = minimal();
  j["normalizer"] = {{"type", "NFC"}};
  expect_error(j, "normalizer 'NFC'");
  j = minimal();
  j["pre_tokenizer"] = {{"type", "Metaspace"}};
  expect_error(j, "pre-tokenizer type 'Metaspace'");
  j = minimal();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "\\s+"}}}, {"behavior", "Isolated"}};
  expect_error(j, "no ByteLevel");
  j = minimal();
  j["pre_tokenizer"] = {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}};
  expect_error(j, "regex does not compile");
  j = minimal();
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", "x"}}}, {"behavior", "Contiguous"}},
                                           {{"type", "ByteLevel"}}}}};
  expect_error(j, "Split behavior 'Contiguous'");
  j = minimal();
  j["decoder"] = {{"type", "WordPiece"}};
  expect_error(j, "decoder type 'WordPiece'");
  j = minimal();
  j["post_processor"] = {{"type", "BertProcessing"}};
  expect_error(j, "post_processor type 'BertProcessing'");
  j = minimal();
  j["model"]["continuing_subword_prefix"] = "##";
  expect_error(j, "continuing_subword_prefix");
  j = minimal();
  j["model"]["byte_fallback"] = true;
  expect_error(j, "byte_fallback");
  j = minimal();
  j["model"]["merges"] = {"a c"};
  expect_error(j, "uses 'ac', which is not in the vocab");
  j = minimal();
  j["model"]["merges"] = {"abc"};
  expect_error(j, "not two tokens");
  j = minimal();
  j.erase("model");
  expect_error(j, "'model' is missing");
}

TEST_F(TokenizerErrors, MergesAsPairsWork) {
  Json j = minimal();
  j["model"]["merges"] = Json::array({Json::array({"a", "b"})});
  EXPECT_EQ(Tokenizer::from_json(j).encode("ab"), (std::vector<int32_t>{2}));
}

TEST_F(TokenizerErrors, InvalidUtf8InputAndUnknownIds) {
  const Tokenizer tok = Tokenizer::from_json(minimal());
  EXPECT_NE(error_of([&] { tok.encode("a\xFF"); }).find("not valid UTF-8"), std::string::npos);
  EXPECT_NE(error_of([&] { tok.decode({7}); }).find("outside the vocabulary"), std::string::npos);
  EXPECT_NE(error_of([&] { tok.id_to_token(-1); }).find("outside the vocabulary"), std::string::npos);
}

TEST_F(TokenizerErrors, BadChatTemplateIsReportedAtRender) {
  Json config = {{"chat_template", "{% macro m() %}x{% endmacro %}"}, {"eos_token", "b"}};
  const Tokenizer tok = Tokenizer::from_json(minimal(), config);
  EXPECT_FALSE(tok.has_chat_template());
  EXPECT_EQ(tok.eos_token_ids(), (std::vector<int32_t>{1}));
  const std::string msg = error_of([&] { tok.render_chat({{"user", "hi"}}); });
  EXPECT_NE(msg.find("macro"), std::string::npos) << msg;
  config["eos_token"] = "zzz";
  EXPECT_NE(error_of([&] { Tokenizer::from_json(minimal(), config); }).find("eos_token 'zzz'"), std::string::npos);
}

}  // namespace
}  // namespace lamina
