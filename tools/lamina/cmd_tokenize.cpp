// lamina tokenize / detokenize: line-oriented JSON filters over the tokenizer, for scripts and for
// checking ids against other implementations.
//   echo '"Hello world"' | lamina tokenize --tokenizer_dir ENGINE      → [9906,1917]
//   echo '[9906,1917]'   | lamina detokenize --tokenizer_dir ENGINE    → "Hello world"
#include <iostream>
#include <memory>
#include <string>

#include "commands.h"
#include "common/error.h"
#include "common/json.h"
#include "tokenizer/tokenizer.h"

namespace lamina::cli {

namespace {

struct TokenizeOptions {
  std::string dir;
  bool special = false;  // --add_special_tokens / --skip_special_tokens
};

// Reads stdin line by line, parses each as JSON and writes fn(json) as one output line.
template <typename Fn>
void filter_lines(Fn&& fn) {
  std::string line;
  for (size_t n = 1; std::getline(std::cin, line); ++n) {
    Json in;
    try {
      in = Json::parse(line);
    } catch (const nlohmann::json::parse_error& e) {
      fail("stdin line ", n, " is not valid JSON: ", e.what());
    }
    std::cout << fn(in, n) << '\n' << std::flush;  // flushed per line so it works as a co-process
  }
}

const char* kDirHelp =
    "Directory with tokenizer.json (+ tokenizer_config.json): a HF model dir, checkpoint dir or engine dir";

}  // namespace

void register_tokenize(CLI::App& app) {
  auto enc = std::make_shared<TokenizeOptions>();
  CLI::App* tok = app.add_subcommand("tokenize", "Text to token ids: one JSON string per stdin line in, "
                                                 "one JSON array of ids per line out");
  tok->add_option("--tokenizer_dir,--engine_dir,--checkpoint_dir", enc->dir, kDirHelp)->required();
  tok->add_flag("--add_special_tokens", enc->special, "Apply the tokenizer's post-processor (e.g. BOS)");
  tok->callback([enc] {
    const Tokenizer t = Tokenizer::load(enc->dir);
    filter_lines([&](const Json& in, size_t n) {
      if (!in.is_string()) fail("stdin line ", n, ": expected a JSON string, got ", in.dump());
      return Json(t.encode(in.get<std::string>(), enc->special)).dump();
    });
  });

  auto dec = std::make_shared<TokenizeOptions>();
  CLI::App* detok = app.add_subcommand("detokenize", "Token ids to text: one JSON array of ids per stdin line in, "
                                                     "one JSON string per line out");
  detok->add_option("--tokenizer_dir,--engine_dir,--checkpoint_dir", dec->dir, kDirHelp)->required();
  detok->add_flag("--skip_special_tokens", dec->special, "Leave special tokens out of the text");
  detok->callback([dec] {
    const Tokenizer t = Tokenizer::load(dec->dir);
    filter_lines([&](const Json& in, size_t n) {
      if (!in.is_array()) fail("stdin line ", n, ": expected a JSON array of ids, got ", in.dump());
      std::vector<int32_t> ids;
      for (const Json& id : in) {
        if (!id.is_number_integer()) fail("stdin line ", n, ": ids must be integers, got ", id.dump());
        ids.push_back(id.get<int32_t>());
      }
      return Json(t.decode(ids, dec->special)).dump();
    });
  });
}

}  // namespace lamina::cli
