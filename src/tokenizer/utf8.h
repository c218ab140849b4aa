// UTF-8 helpers shared by the encoder (input validation, code point iteration) and the decoders
// (lossy conversion exactly like Rust's String::from_utf8_lossy, which HF tokenizers uses).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace lamina::utf8 {

// Length of the well-formed sequence starting at s[i], or 0 if none starts there
// (Unicode Table 3-7: no overlongs, no surrogates, nothing above U+10FFFF).
size_t sequence_length(std::string_view s, size_t i);

// True when every byte of s belongs to a well-formed sequence.
bool is_valid(std::string_view s);

// Byte offset of the first ill-formed byte, or s.size() when valid.
size_t first_invalid(std::string_view s);

// Decodes the code point of a well-formed sequence at s[i] (caller checked sequence_length > 0).
char32_t decode_at(std::string_view s, size_t i, size_t len);

void append_code_point(std::string& out, char32_t cp);

// Replaces each maximal ill-formed subpart with U+FFFD, the policy of from_utf8_lossy.
std::string to_valid_lossy(std::string_view bytes);

// Size of a trailing sequence that is well-formed so far but incomplete (it could still be
// completed by more bytes); 0 when the bytes end on a boundary. A streaming decoder holds these back.
size_t incomplete_tail(std::string_view bytes);

}  // namespace lamina::utf8
