#include "tokenizer/utf8.h"

namespace lamina::utf8 {

namespace {

// Number of bytes a sequence with this lead byte needs (0: not a lead byte).
size_t expected_length(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Allowed range of the byte after the lead (Table 3-7 narrows it for E0, ED, F0, F4).
bool second_byte_ok(uint8_t lead, uint8_t b) {
  switch (lead) {
    case 0xE0: return b >= 0xA0 && b <= 0xBF;
    case 0xED: return b >= 0x80 && b <= 0x9F;
    case 0xF0: return b >= 0x90 && b <= 0xBF;
    case 0xF4: return b >= 0x80 && b <= 0x8F;
    default: return b >= 0x80 && b <= 0xBF;
  }
}

// How many bytes from s[i] form a valid (possibly incomplete) prefix of a sequence;
// `complete` tells whether that prefix is a whole sequence.
size_t valid_prefix(std::string_view s, size_t i, bool& complete) {
  const auto lead = static_cast<uint8_t>(s[i]);
  const size_t need = expected_length(lead);
  complete = false;
  if (need == 0) return 0;
  if (need == 1) {
    complete = true;
    return 1;
  }
  size_t n = 1;
  while (n < need && i + n < s.size()) {
    const auto b = static_cast<uint8_t>(s[i + n]);
    const bool ok = n == 1 ? second_byte_ok(lead, b) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return n;
    ++n;
  }
  complete = n == need;
  return n;
}

}  // namespace

size_t sequence_length(std::string_view s, size_t i) {
  bool complete = false;
  const size_t n = valid_prefix(s, i, complete);
  return complete ? n : 0;
}

bool is_valid(std::string_view s) { return first_invalid(s) == s.size(); }

size_t first_invalid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = sequence_length(s, i);
    if (n == 0) return i;
    i += n;
  }
  return s.size();
}

char32_t decode_at(std::string_view s, size_t i, size_t len) {
  const auto b0 = static_cast<uint8_t>(s[i]);
  if (len == 1) return b0;
  char32_t cp = b0 & (0xFF >> (len + 1));
  for (size_t k = 1; k < len; ++k) cp = (cp << 6) | (static_cast<uint8_t>(s[i + k]) & 0x3F);
  return cp;
}

void append_code_point(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::string to_valid_lossy(std::string_view bytes) {
  static constexpr std::string_view kReplacement = "\xEF\xBF\xBD";
  std::string out;
  out.reserve(bytes.size());
  size_t i = 0;
  while (i < bytes.size()) {
    bool complete = false;
    const size_t n = valid_prefix(bytes, i, complete);
    if (complete) {
      out.append(bytes.substr(i, n));
      i += n;
    } else {
      // A maximal ill-formed subpart (at least one byte) becomes one U+FFFD.
      out.append(kReplacement);
      i += n == 0 ? 1 : n;
    }
  }
  return out;
}

size_t incomplete_tail(std::string_view bytes) {
  // A sequence is at most 4 bytes, so only the last 3 bytes can start an incomplete one.
  const size_t n = bytes.size();
  for (size_t back = 1; back <= 3 && back <= n; ++back) {
    const size_t i = n - back;
    const auto b = static_cast<uint8_t>(bytes[i]);
    if (b >= 0x80 && b <= 0xBF) continue;  // continuation byte: look further back
    bool complete = false;
    const size_t len = valid_prefix(bytes, i, complete);
    return (!complete && len == back) ? back : 0;
  }
  return 0;
}

}  // namespace lamina::utf8
