// Shared helpers for the tokenizer tests: fixture paths, JSONL reading, the fetched LLaMA 3 files.
#pragma once
#include <cstdint>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/json.h"
#include "tokenizer/tokenizer.h"

namespace lamina::test {

inline std::string fixture_path(const std::string& name) {
  return std::string(LAMINA_SOURCE_DIR) + "/tests/fixtures/tokenizer/" + name;
}

inline std::vector<Json> read_jsonl(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in.good()) << "missing fixture " << path;
  std::vector<Json> rows;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) rows.push_back(Json::parse(line));
  }
  return rows;
}

// The fetched LLaMA 3 tokenizer (version "llama3" or "llama3_1"), or "" when it is not there.
// Looks in $LAMINA_LLAMA3_TOKENIZER_DIR, else <build>/third_party/llama3-tokenizer, else
// <build>/third_party (where a fetch into that folder puts them).
inline std::string llama3_dir(const std::string& version) {
  const char* env = std::getenv("LAMINA_LLAMA3_TOKENIZER_DIR");
  const std::string fallback = std::filesystem::path(LAMINA_LLAMA3_TOKENIZER_DEFAULT_DIR).parent_path().string();
  for (const std::string& base : {env && *env ? std::string(env) : std::string(LAMINA_LLAMA3_TOKENIZER_DEFAULT_DIR), fallback}) {
    const std::string dir = base + "/" + version;
    if (std::filesystem::exists(dir + "/tokenizer.json")) return dir;
    if (env && *env) break;  // an explicit directory is not second-guessed
  }
  return "";
}

// Loads a LLaMA 3 tokenizer once per process (loading takes most of a second).
inline const Tokenizer* llama3(const std::string& version) {
  static std::map<std::string, std::unique_ptr<Tokenizer>> cache;
  auto& slot = cache[version];
  if (!slot) {
    const std::string dir = llama3_dir(version);
    if (dir.empty()) return nullptr;
    slot = std::make_unique<Tokenizer>(Tokenizer::load(dir));
  }
  return slot.get();
}

#define LAMINA_REQUIRE_LLAMA3(var, version)                                                          \
  const ::lamina::Tokenizer* var = ::lamina::test::llama3(version);                                 \
  if (!var)                                                                                          \
  GTEST_SKIP() << "LLaMA 3 tokenizer '" << version << "' not fetched: run "                        \
               << "scripts/tokenizer/fetch_llama3_tokenizer.sh <build>/third_party/llama3-tokenizer " \
               << "or set LAMINA_LLAMA3_TOKENIZER_DIR"

inline std::vector<int32_t> to_ids(const Json& j) { return j.get<std::vector<int32_t>>(); }

}  // namespace lamina::test
