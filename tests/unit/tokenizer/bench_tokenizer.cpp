// Encode throughput of lamina's tokenizer (a program that prints numbers, not a test).
//   bench_tokenizer TOKENIZER_DIR TEXT_FILE [REPEATS]
// Prints load time, then for the whole file as one encode() call and line by line: MB/s, tokens/s,
// the token count and an FNV-1a hash of the ids (scripts/tokenizer/bench_hf.js prints the same
// hash for HF tokenizers, so equal hashes mean equal ids). Last line: the figures as JSON.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

uint64_t fnv1a(const std::vector<int32_t>& ids, uint64_t h = 14695981039346656037ull) {
  for (int32_t id : ids) {
    h ^= static_cast<uint32_t>(id);
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s TOKENIZER_DIR TEXT_FILE [REPEATS]\n", argv[0]);
    return 2;
  }
  const int repeats = argc > 3 ? std::atoi(argv[3]) : 3;
  std::ifstream in(argv[2], std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  std::vector<std::string> lines;
  for (size_t pos = 0; pos < text.size();) {
    size_t nl = text.find('\n', pos);
    nl = nl == std::string::npos ? text.size() : nl + 1;  // keep the newline with its line
    lines.push_back(text.substr(pos, nl - pos));
    pos = nl;
  }
  const double mb = static_cast<double>(text.size()) / 1e6;

  try {
    auto t0 = Clock::now();
    const lamina::Tokenizer tok = lamina::Tokenizer::load(argv[1]);
    const double load_s = seconds_since(t0);
    std::printf("load: %.3f s\ntext: %.2f MB, %zu lines\n", load_s, mb, lines.size());

    // Best of `repeats` runs; the first run also fills the word cache, so report it separately.
    double whole_first = 0, whole_best = 1e30, lines_best = 1e30;
    size_t n_whole = 0, n_lines = 0;
    uint64_t h_whole = 0, h_lines = 0;
    for (int r = 0; r < repeats; ++r) {
      t0 = Clock::now();
      const auto ids = tok.encode(text, false);
      const double s = seconds_since(t0);
      if (r == 0) whole_first = s;
      whole_best = std::min(whole_best, s);
      n_whole = ids.size();
      h_whole = fnv1a(ids);
    }
    for (int r = 0; r < repeats; ++r) {
      t0 = Clock::now();
      uint64_t h = 14695981039346656037ull;
      size_t n = 0;
      for (const auto& line : lines) {
        const auto ids = tok.encode(line, false);
        h = fnv1a(ids, h);
        n += ids.size();
      }
      lines_best = std::min(lines_best, seconds_since(t0));
      n_lines = n;
      h_lines = h;
    }
    std::printf("whole text, first run: %.3f s  %.2f MB/s\n", whole_first, mb / whole_first);
    std::printf("whole text, best of %d: %.3f s  %.2f MB/s  %.2f M tokens/s  tokens=%zu  hash=%016llx\n", repeats,
                whole_best, mb / whole_best, n_whole / whole_best / 1e6, n_whole,
                static_cast<unsigned long long>(h_whole));
    std::printf("line by line, best of %d: %.3f s  %.2f MB/s  %.2f M tokens/s  tokens=%zu  hash=%016llx\n", repeats,
                lines_best, mb / lines_best, n_lines / lines_best / 1e6, n_lines,
                static_cast<unsigned long long>(h_lines));
    std::printf("{\"impl\": \"lamina\", \"load_s\": %.3f, \"mb\": %.3f, \"whole_first_mb_s\": %.2f, "
                "\"whole_mb_s\": %.2f, \"lines_mb_s\": %.2f, \"tokens\": %zu, \"hash\": \"%016llx\"}\n",
                load_s, mb, mb / whole_first, mb / whole_best, mb / lines_best, n_whole,
                static_cast<unsigned long long>(h_whole));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
