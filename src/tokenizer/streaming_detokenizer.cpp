// Streaming detokenization: tokens carry raw bytes, and a UTF-8 character (a Hangul syllable, an
// emoji) is often split across tokens. Bytes are released only up to the last complete character.
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace lamina {

StreamingDetokenizer::StreamingDetokenizer(const Tokenizer& tok, bool skip_special_tokens)
    : tok_(tok), skip_special_(skip_special_tokens) {}

std::string StreamingDetokenizer::push(int32_t id) {
  const std::string& bytes = tok_.token_bytes(id);  // validates id
  if (skip_special_ && tok_.is_special(id)) return {};
  pending_ += bytes;
  // Hold back a trailing sequence that more bytes could still complete; everything before it is
  // final (ill-formed bytes there can never become valid, so they are emitted as U+FFFD now).
  const size_t keep = utf8::incomplete_tail(pending_);
  std::string out = utf8::to_valid_lossy(std::string_view(pending_).substr(0, pending_.size() - keep));
  pending_.erase(0, pending_.size() - keep);
  return out;
}

std::string StreamingDetokenizer::flush() {
  std::string out = utf8::to_valid_lossy(pending_);
  pending_.clear();
  return out;
}

}  // namespace lamina
