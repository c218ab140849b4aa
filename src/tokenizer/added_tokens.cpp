#include "tokenizer/added_tokens.h"

#include <algorithm>

#include "tokenizer/pre_tokenizer.h"

namespace lamina {

namespace {

// Unicode properties Rust's char methods use for lstrip/rstrip (is_whitespace) and single_word
// (is_alphanumeric), answered by Oniguruma so no table of our own can drift.
const OnigPattern& leading_space() {
  static const OnigPattern p(R"(\A\p{White_Space}+)");
  return p;
}
const OnigPattern& trailing_space() {
  static const OnigPattern p(R"(\p{White_Space}+\z)");
  return p;
}
const OnigPattern& word_char_at_start() {
  static const OnigPattern p(R"(\A[\p{Alphabetic}\p{N}])");
  return p;
}
const OnigPattern& word_char_at_end() {
  static const OnigPattern p(R"([\p{Alphabetic}\p{N}]\z)");
  return p;
}

bool matches(const OnigPattern& p, std::string_view s, size_t& start, size_t& end) {
  return !s.empty() && p.search(s, 0, start, end);
}

}  // namespace

void AddedTokenMatcher::Trie::insert(std::string_view s, int32_t token) {
  int32_t node = 0;
  for (char c : s) {
    const auto b = static_cast<uint8_t>(c);
    auto& kids = nodes[node].children;
    auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(b, INT32_MIN));
    if (it != kids.end() && it->first == b) {
      node = it->second;
    } else {
      const auto child = static_cast<int32_t>(nodes.size());
      kids.insert(it, {b, child});
      nodes.emplace_back();
      node = child;
    }
  }
  if (nodes[node].token < 0) nodes[node].token = token;  // first definition wins on duplicates
  first_byte[static_cast<uint8_t>(s[0])] = true;
}

size_t AddedTokenMatcher::Trie::longest_at(std::string_view text, size_t pos, int32_t& token) const {
  if (!first_byte[static_cast<uint8_t>(text[pos])]) return 0;
  size_t best = 0;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto b = static_cast<uint8_t>(text[i]);
    const auto& kids = nodes[node].children;
    auto it = std::lower_bound(kids.begin(), kids.end(), std::make_pair(b, INT32_MIN));
    if (it == kids.end() || it->first != b) break;
    node = it->second;
    if (nodes[node].token >= 0) {
      best = i + 1 - pos;
      token = nodes[node].token;
    }
  }
  return best;
}

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& tokens) : tokens_(tokens) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (tokens_[i].content.empty()) continue;
    (tokens_[i].normalized ? normalized_ : raw_).insert(tokens_[i].content, static_cast<int32_t>(i));
  }
}

void AddedTokenMatcher::split(std::string_view text, std::vector<Segment>& out) const {
  thread_local std::vector<Segment> first;
  first.clear();
  split_with(raw_, text, 0, first);
  if (normalized_.nodes.size() == 1) {
    out.insert(out.end(), first.begin(), first.end());
    return;
  }
  for (const Segment& s : first) {
    if (s.id >= 0) out.push_back(s);
    else split_with(normalized_, text.substr(s.begin, s.end - s.begin), s.begin, out);
  }
}

// HF's AddedVocabulary::find_matches: non-overlapping leftmost-longest matches, with the
// single_word / lstrip / rstrip options of each token.
void AddedTokenMatcher::split_with(const Trie& trie, std::string_view text, size_t base,
                                   std::vector<Segment>& out) const {
  size_t emitted = 0;  // end of what has been emitted so far
  size_t pos = 0;
  while (pos < text.size()) {
    int32_t index = -1;
    const size_t len = trie.nodes.size() > 1 ? trie.longest_at(text, pos, index) : 0;
    if (len == 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = tokens_[index];
    size_t start = pos, stop = pos + len;
    pos = stop;  // the search resumes after the match, whatever stripping does below
    size_t s = 0, e = 0;
    if (tok.single_word) {
      const bool word_before = matches(word_char_at_end(), text.substr(0, start), s, e);
      const bool word_after = matches(word_char_at_start(), text.substr(stop), s, e);
      if (word_before || word_after) continue;
    }
    if (tok.lstrip && matches(trailing_space(), text.substr(0, start), s, e)) start = std::max(s, emitted);
    if (tok.rstrip && matches(leading_space(), text.substr(stop), s, e)) stop += e;
    if (emitted < start) out.push_back({base + emitted, base + start, -1});
    out.push_back({base + start, base + stop, tok.id});
    emitted = stop;
  }
  if (emitted < text.size()) out.push_back({base + emitted, base + text.size(), -1});
}

}  // namespace lamina
