#include "tokenizer/pre_tokenizer.h"

#include <oniguruma.h>

#include <cctype>
#include <mutex>

#include "common/error.h"
#include "tokenizer/utf8.h"

namespace lamina {

namespace {

// GPT-2's pattern, used by ByteLevel when use_regex is true.
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

void init_oniguruma() {
  static std::once_flag once;
  std::call_once(once, [] {
    OnigEncoding encodings[] = {ONIG_ENCODING_UTF8};
    onig_initialize(encodings, 1);
  });
}

// A literal Split pattern becomes a regex matching it verbatim.
std::string escape_literal(const std::string& s) {
  std::string out;
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x80 && !std::isalnum(u)) out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

OnigPattern::OnigPattern(const std::string& pattern) {
  init_oniguruma();
  OnigRegex reg = nullptr;
  OnigErrorInfo einfo;
  const auto* p = reinterpret_cast<const OnigUChar*>(pattern.data());
  const int rc = onig_new(&reg, p, p + pattern.size(), ONIG_OPTION_NONE, ONIG_ENCODING_UTF8,
                          ONIG_SYNTAX_DEFAULT, &einfo);
  if (rc != ONIG_NORMAL) {
    OnigUChar msg[ONIG_MAX_ERROR_MESSAGE_LEN];
    onig_error_code_to_str(msg, rc, &einfo);
    fail("pre-tokenizer regex does not compile: ", reinterpret_cast<char*>(msg), " (pattern: ", pattern, ")");
  }
  regex_ = std::shared_ptr<void>(reg, [](void* r) { onig_free(static_cast<OnigRegex>(r)); });
}

bool OnigPattern::search(std::string_view text, size_t from, size_t& start, size_t& end) const {
  // One region per thread: onig regexes are shareable, regions are not.
  struct RegionHolder {
    OnigRegion* r = onig_region_new();
    ~RegionHolder() { onig_region_free(r, 1); }
  };
  thread_local RegionHolder region;
  const auto* s = reinterpret_cast<const OnigUChar*>(text.data());
  const auto* e = s + text.size();
  const int pos = onig_search(static_cast<OnigRegex>(regex_.get()), s, e, s + from, e, region.r, ONIG_OPTION_NONE);
  if (pos == ONIG_MISMATCH) return false;
  if (pos < 0) fail("pre-tokenizer regex search failed (Oniguruma error ", pos, ")");
  start = static_cast<size_t>(region.r->beg[0]);
  end = static_cast<size_t>(region.r->end[0]);
  return true;
}

namespace {

// Calls fn(start, end) for each match, left to right. Mirrors the onig crate's FindMatches (HF's
// find_iter): an empty match right after the previous match is skipped by stepping one character.
template <typename Fn>
void for_each_match(const OnigPattern& pattern, std::string_view text, Fn&& fn) {
  size_t from = 0;
  bool have_last = false;
  size_t last_end = 0;
  while (from <= text.size()) {
    size_t start = 0, end = 0;
    if (!pattern.search(text, from, start, end)) return;
    if (start == end && have_last && last_end == end) {
      const size_t len = from < text.size() ? utf8::sequence_length(text, from) : 1;
      from += len == 0 ? 1 : len;
      continue;
    }
    from = end;
    have_last = true;
    last_end = end;
    fn(start, end);
  }
}

}  // namespace

PreTokenizer PreTokenizer::from_json(const Json& pre, const std::string& where) {
  PreTokenizer result;
  if (pre.is_null()) fail(where, ": a tokenizer without pre_tokenizer is not supported (byte-level BPE needs ByteLevel)");
  std::vector<Json> parts;
  const std::string type = json_get<std::string>(pre, "type", where + " pre_tokenizer");
  if (type == "Sequence") {
    for (const auto& p : json_get<std::vector<Json>>(pre, "pretokenizers", where + " pre_tokenizer")) parts.push_back(p);
  } else {
    parts.push_back(pre);
  }
  bool byte_level_seen = false;
  for (const auto& p : parts) {
    const std::string ctx = where + " pre_tokenizer";
    const std::string t = json_get<std::string>(p, "type", ctx);
    if (byte_level_seen) fail(where, ": pre-tokenizer '", t, "' after ByteLevel is not supported");
    if (t == "Split") {
      if (json_get_or<bool>(p, "invert", false)) fail(where, ": Split pre-tokenizer with invert=true is not supported");
      const Json& pattern = p.at("pattern");
      std::string regex;
      if (pattern.contains("Regex")) regex = pattern["Regex"].get<std::string>();
      else if (pattern.contains("String")) regex = escape_literal(pattern["String"].get<std::string>());
      else fail(where, ": Split pattern must be {\"Regex\": ...} or {\"String\": ...}, got ", pattern.dump());
      const std::string behavior = json_get<std::string>(p, "behavior", ctx);
      Step step;
      if (behavior == "Isolated") step.kind = Step::Kind::SplitIsolated;
      else if (behavior == "Removed") step.kind = Step::Kind::SplitRemoved;
      else fail(where, ": Split behavior '", behavior, "' is not supported (only Isolated and Removed)");
      step.pattern = std::make_shared<OnigPattern>(regex);
      result.steps_.push_back(step);
    } else if (t == "ByteLevel") {
      byte_level_seen = true;
      if (json_get_or<bool>(p, "add_prefix_space", false)) result.steps_.push_back({Step::Kind::PrefixSpace, nullptr});
      if (json_get_or<bool>(p, "use_regex", true))
        result.steps_.push_back({Step::Kind::SplitIsolated, std::make_shared<OnigPattern>(kGpt2Pattern)});
    } else {
      fail(where, ": pre-tokenizer type '", t, "' is not supported (supported: Sequence, Split, ByteLevel)");
    }
  }
  if (!byte_level_seen) fail(where, ": pre_tokenizer has no ByteLevel step; only byte-level BPE is supported");
  return result;
}

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& out,
                         std::deque<std::string>& arena) const {
  thread_local std::vector<std::string_view> current, next;
  current.assign(1, text);
  for (const Step& step : steps_) {
    next.clear();
    for (std::string_view piece : current) {
      if (step.kind == Step::Kind::PrefixSpace) {
        if (!piece.empty() && piece.front() != ' ') piece = arena.emplace_back(" " + std::string(piece));
        next.push_back(piece);
        continue;
      }
      // Matches and the gaps between them become pieces (Removed drops the matches); empty ones vanish.
      const bool keep_matches = step.kind == Step::Kind::SplitIsolated;
      size_t prev = 0;
      for_each_match(*step.pattern, piece, [&](size_t start, size_t end) {
        if (start > prev) next.push_back(piece.substr(prev, start - prev));
        if (keep_matches && end > start) next.push_back(piece.substr(start, end - start));
        prev = end;
      });
      if (prev < piece.size()) next.push_back(piece.substr(prev));
    }
    current.swap(next);
  }
  out.insert(out.end(), current.begin(), current.end());
}

}  // namespace lamina
