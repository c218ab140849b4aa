// GPT-2's byte-level alphabet: each of the 256 byte values is shown as one printable code point
// ("Ġ" for a space), so BPE vocabularies can be stored as text. We work on raw bytes inside and
// translate only at the edges (loading the vocab, id_to_token).
#pragma once
#include <cstdint>
#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace lamina::byte_level {

// The code point that stands for byte b.
char32_t char_for_byte(uint8_t b);

// Byte-level text → raw bytes; nullopt if a character is outside the 256-character alphabet
// (such vocab entries can never be produced by the byte-level pre-tokenizer).
std::optional<std::string> decode(std::string_view text);

// Raw bytes → byte-level text (what HF shows as the token string).
std::string encode(std::string_view bytes);

}  // namespace lamina::byte_level
