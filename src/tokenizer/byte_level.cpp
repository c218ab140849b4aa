#include "tokenizer/byte_level.h"

#include <unordered_map>

#include "tokenizer/utf8.h"

namespace lamina::byte_level {

namespace {

// bytes_to_unicode() from GPT-2: printable Latin-1 bytes map to themselves, the other 68 bytes
// to U+0100.. in byte order.
struct Tables {
  std::array<char32_t, 256> to_char{};
  std::unordered_map<char32_t, uint8_t> to_byte;
  Tables() {
    auto printable = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      to_char[b] = printable(b) ? static_cast<char32_t>(b) : next++;
      to_byte[to_char[b]] = static_cast<uint8_t>(b);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

char32_t char_for_byte(uint8_t b) { return tables().to_char[b]; }

std::optional<std::string> decode(std::string_view text) {
  const auto& to_byte = tables().to_byte;
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    const size_t len = utf8::sequence_length(text, i);
    if (len == 0) return std::nullopt;
    auto it = to_byte.find(utf8::decode_at(text, i, len));
    if (it == to_byte.end()) return std::nullopt;
    out += static_cast<char>(it->second);
    i += len;
  }
  return out;
}

std::string encode(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) utf8::append_code_point(out, char_for_byte(static_cast<uint8_t>(c)));
  return out;
}

}  // namespace lamina::byte_level
