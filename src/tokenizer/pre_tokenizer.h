// Pre-tokenization: splits text (already cut around added tokens) into the pieces that BPE encodes
// one by one. Supports HF's Split (regex or literal; Isolated or Removed) and ByteLevel, alone or in
// a Sequence with ByteLevel last. Regexes run on Oniguruma, the engine HF tokenizers itself uses.
#pragma once
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"

namespace lamina {

// A compiled Oniguruma regex (UTF-8, default syntax, as HF's onig wrapper compiles it).
class OnigPattern {
 public:
  explicit OnigPattern(const std::string& pattern);  // throws lamina::Error with onig's message
  // One search from `from` (earlier text stays visible to look-behind); false when nothing matches.
  bool search(std::string_view text, size_t from, size_t& start, size_t& end) const;

 private:
  std::shared_ptr<void> regex_;  // OnigRegex, freed with onig_free
};

class PreTokenizer {
 public:
  // `pre_tokenizer` is tokenizer.json's field (object or null).
  static PreTokenizer from_json(const Json& pre_tokenizer, const std::string& where);

  // Appends the pieces of text to out, in order. Pieces point into text, or into arena when a
  // step had to change the text (ByteLevel's add_prefix_space).
  void split(std::string_view text, std::vector<std::string_view>& out, std::deque<std::string>& arena) const;

 private:
  struct Step {
    enum class Kind { SplitIsolated, SplitRemoved, PrefixSpace } kind;
    std::shared_ptr<OnigPattern> pattern;  // for the Split kinds
  };
  std::vector<Step> steps_;
};

}  // namespace lamina
