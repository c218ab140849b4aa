#include "tokenizer/bpe.h"

#include <algorithm>
#include <functional>

#include "common/error.h"
#include "tokenizer/byte_level.h"

namespace lamina {

void MergeTable::build(const std::vector<std::pair<uint64_t, Merge>>& entries) {
  size_t cap = 16;
  while (cap < entries.size() * 2) cap <<= 1;  // load factor <= 0.5 keeps probes short
  keys_.assign(cap, kEmpty);
  values_.assign(cap, Merge{});
  mask_ = cap - 1;
  for (const auto& [key, merge] : entries) {
    size_t i = hash(key) & mask_;
    while (keys_[i] != kEmpty && keys_[i] != key) i = (i + 1) & mask_;
    if (keys_[i] == key) continue;  // a repeated merge keeps its first (lowest) rank, like HF
    keys_[i] = key;
    values_[i] = merge;
  }
}

namespace {

// Reads one merge, stored either as "left right" or as ["left", "right"].
std::pair<std::string, std::string> parse_merge(const Json& m, size_t index, const std::string& where) {
  if (m.is_string()) {
    const std::string s = m.get<std::string>();
    const size_t sp = s.find(' ');
    if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
      fail(where, ": merge #", index, " '", s, "' is not two tokens separated by one space");
    return {s.substr(0, sp), s.substr(sp + 1)};
  }
  if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string())
    return {m[0].get<std::string>(), m[1].get<std::string>()};
  fail(where, ": merge #", index, " is neither \"a b\" nor [\"a\", \"b\"]: ", m.dump());
}

void require_null_or(const Json& model, const char* key, const std::string& where, const char* what) {
  auto it = model.find(key);
  if (it != model.end() && !it->is_null()) fail(where, ": BPE option '", key, "' is not supported (", what, ")");
}

}  // namespace

std::shared_ptr<BpeModel> BpeModel::from_json(const Json& model, const std::string& where, VocabTables& tables) {
  auto bpe = std::make_shared<BpeModel>();
  require_null_or(model, "continuing_subword_prefix", where, "only byte-level BPE without a subword prefix");
  require_null_or(model, "end_of_word_suffix", where, "only byte-level BPE without a word suffix");
  if (auto it = model.find("dropout"); it != model.end() && !it->is_null() && it->get<double>() != 0.0)
    fail(where, ": BPE dropout is not supported (encoding must be deterministic)");
  if (json_get_or<bool>(model, "byte_fallback", false))
    fail(where, ": BPE byte_fallback is not supported (only byte-level BPE)");
  bpe->ignore_merges_ = json_get_or<bool>(model, "ignore_merges", false);
  bpe->fuse_unk_ = json_get_or<bool>(model, "fuse_unk", false);

  const auto vocab_it = model.find("vocab");
  if (vocab_it == model.end() || !vocab_it->is_object()) fail(where, ": model.vocab must be an object");
  // Merges are written as text, so text → id is needed here too; the runtime map is keyed by bytes.
  auto& text_to_id = tables.text_to_id;
  text_to_id.reserve(vocab_it->size());
  bpe->vocab_.reserve(vocab_it->size());
  bpe->byte_ids_.assign(256, -1);
  for (const auto& [text, id_json] : vocab_it->items()) {
    if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 || id_json.get<int64_t>() > INT32_MAX)
      fail(where, ": vocab entry '", text, "' has a bad id ", id_json.dump());
    const auto id = id_json.get<int32_t>();
    text_to_id.emplace(text, id);
    if (static_cast<size_t>(id) >= tables.texts.size()) {
      tables.texts.resize(id + 1);
      tables.bytes.resize(id + 1);
    }
    tables.texts[id] = text;
    bpe->num_ids_ = std::max(bpe->num_ids_, static_cast<size_t>(id) + 1);
    // Entries outside the byte-level alphabet can never be produced; they stay decodable by id only
    // (as their own UTF-8, like HF's ByteLevel decoder).
    if (auto bytes = byte_level::decode(text)) {
      if (bytes->size() == 1) bpe->byte_ids_[static_cast<uint8_t>((*bytes)[0])] = id;
      bpe->vocab_.insert(*bytes, id);
      tables.bytes[id] = std::move(*bytes);
    } else {
      tables.bytes[id] = text;
    }
  }

  if (auto it = model.find("unk_token"); it != model.end() && !it->is_null()) {
    auto unk = text_to_id.find(it->get<std::string>());
    if (unk == text_to_id.end()) fail(where, ": unk_token '", it->get<std::string>(), "' is not in the vocab");
    bpe->unk_id_ = unk->second;
  }

  bpe->num_entries_ = text_to_id.size();
  const auto merges_it = model.find("merges");
  if (merges_it == model.end() || !merges_it->is_array()) fail(where, ": model.merges must be an array");
  std::vector<std::pair<uint64_t, MergeTable::Merge>> entries;
  entries.reserve(merges_it->size());
  auto lookup = [&](const std::string& t, size_t index) {
    auto f = text_to_id.find(t);
    if (f == text_to_id.end()) fail(where, ": merge #", index, " uses '", t, "', which is not in the vocab");
    return f->second;
  };
  for (size_t i = 0; i < merges_it->size(); ++i) {
    const auto [left, right] = parse_merge((*merges_it)[i], i, where);
    const int32_t merged = lookup(left + right, i);
    entries.push_back({MergeTable::pack(lookup(left, i), lookup(right, i)), {static_cast<int32_t>(i), merged}});
  }
  bpe->merges_.build(entries);
  return bpe;
}

std::optional<int32_t> BpeModel::id_of_bytes(std::string_view bytes) const {
  const int32_t* id = vocab_.find(bytes);
  if (id == nullptr) return std::nullopt;
  return *id;
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  // ignore_merges: a pre-token that is itself a vocab entry is emitted whole.
  if (ignore_merges_ || word.size() == 1) {
    if (const int32_t* id = vocab_.find(word)) {
      out.push_back(*id);
      return;
    }
  }
  if (word.size() > kMaxCachedWord) {
    merge_word(word, out);
    return;
  }
  const uint64_t h = hash_bytes(word);
  CacheShard& shard = cache_[(h >> 59) % kShards];
  {
    std::lock_guard<std::mutex> lock(shard.mu);
    if (shard.words.get(word, h, out)) return;
  }
  const size_t start = out.size();
  merge_word(word, out);
  std::lock_guard<std::mutex> lock(shard.mu);
  shard.words.put(word, h, out.data() + start, out.size() - start);
}

// Applies merges lowest rank first (leftmost on ties) over a linked list of symbols, with a heap of
// candidate pairs; stale candidates are skipped when popped. Same order as HF's Word::merge_all.
void BpeModel::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id, prev, next;
    bool alive;
  };
  struct Candidate {
    int32_t rank, pos, new_id;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
  };
  thread_local std::vector<Symbol> symbols;
  symbols.clear();
  for (char c : word) {
    int32_t id = byte_ids_[static_cast<uint8_t>(c)];
    if (id < 0) {
      if (!unk_id_) continue;  // HF drops characters it cannot represent when there is no unk token
      if (fuse_unk_ && !symbols.empty() && symbols.back().id == *unk_id_) continue;
      id = *unk_id_;
    }
    const auto n = static_cast<int32_t>(symbols.size());
    symbols.push_back({id, n - 1, n + 1, true});
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  // A min-heap on (rank, pos) kept in a reused buffer.
  thread_local std::vector<Candidate> heap;
  heap.clear();
  auto push_pair = [&](int32_t pos) {
    const int32_t next = symbols[pos].next;
    if (next < 0) return;
    if (const auto* m = merges_.find(symbols[pos].id, symbols[next].id)) {
      heap.push_back({m->rank, pos, m->id});
      std::push_heap(heap.begin(), heap.end(), std::greater<>{});
    }
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(symbols.size()); ++i) push_pair(i);

  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>{});
    const Candidate top = heap.back();
    heap.pop_back();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    const auto* m = merges_.find(left.id, symbols[left.next].id);
    if (m == nullptr || m->id != top.new_id) continue;  // the pair changed since it was queued
    Symbol& right = symbols[left.next];
    right.alive = false;
    left.id = top.new_id;
    left.next = right.next;
    if (left.next >= 0) symbols[left.next].prev = top.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(top.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[i].next) out.push_back(symbols[i].id);
}

}  // namespace lamina
