#include "io/tokenizer_files.h"

#include "common/error.h"

namespace lamina {

void copy_tokenizer_files(const std::filesystem::path& from, const std::filesystem::path& to) {
  namespace fs = std::filesystem;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"}) {
    std::error_code ec;
    if (fs::exists(from / f)) fs::copy_file(from / f, to / f, fs::copy_options::overwrite_existing, ec);
    if (ec) fail("cannot copy '", (from / f).string(), "' to '", to.string(), "': ", ec.message());
  }
}

}  // namespace lamina
