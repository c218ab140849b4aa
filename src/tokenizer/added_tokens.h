// Added tokens (special tokens such as <|begin_of_text|>, and any others in tokenizer.json's
// "added_tokens") are found in the raw text before pre-tokenization, as HF's AddedVocabulary does:
// leftmost-longest matches, non-normalized tokens first, then normalized ones in what is left.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace lamina {

struct AddedToken {
  int32_t id = -1;
  std::string content;
  bool special = false;
  bool single_word = false;
  bool lstrip = false;
  bool rstrip = false;
  bool normalized = false;
};

class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(const std::vector<AddedToken>& tokens);

  // A run of text: an added token (id >= 0) or plain text to pre-tokenize (id == -1).
  struct Segment {
    size_t begin, end;
    int32_t id;
  };
  void split(std::string_view text, std::vector<Segment>& out) const;

 private:
  // A byte trie over token contents; node 0 is the root.
  struct Trie {
    struct Node {
      std::vector<std::pair<uint8_t, int32_t>> children;  // sorted by byte
      int32_t token = -1;                                  // index into tokens_, or -1
    };
    std::vector<Node> nodes{Node{}};
    bool first_byte[256] = {};
    void insert(std::string_view s, int32_t token);
    // Longest token starting at text[pos]; returns its length (0: none) and sets token.
    size_t longest_at(std::string_view text, size_t pos, int32_t& token) const;
  };
  void split_with(const Trie& trie, std::string_view text, size_t base, std::vector<Segment>& out) const;

  std::vector<AddedToken> tokens_;
  Trie raw_;         // normalized == false: matched on the input as given
  Trie normalized_;  // normalized == true: matched in the remaining text (no normalizer is supported)
};

}  // namespace lamina
