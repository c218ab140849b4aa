// Open-addressing hash tables keyed by byte strings, with keys (and values) stored in flat arenas:
// one probe usually touches one cache line, where std::unordered_map chases a node per lookup.
// Used for the BPE vocabulary (bytes → id) and the merged-word cache (bytes → ids).
#pragma once
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace lamina {

// 64-bit hash of short byte strings, 8 bytes per step; never returns 0 (0 marks an empty slot).
inline uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (s.size() * 0xff51afd7ed558ccdull);
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t v;
    std::memcpy(&v, s.data() + i, 8);
    h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
    h ^= h >> 29;
  }
  uint64_t v = 0;
  std::memcpy(&v, s.data() + i, s.size() - i);
  h = (h ^ v) * 0x94d049bb133111ebull;
  h ^= h >> 32;
  return h | 1;
}

// Byte string → int32 value. Insert-only; the first insert of a key wins.
class BytesToIdMap {
 public:
  void reserve(size_t n) {
    size_t cap = 16;
    while (cap < n * 2) cap <<= 1;  // load factor <= 0.5
    std::vector<Slot> old;
    old.swap(slots_);
    slots_.assign(cap, Slot{});
    for (const Slot& s : old)
      if (s.hash) place(s);
  }
  void insert(std::string_view key, int32_t value) {
    if ((size_ + 1) * 2 > slots_.size()) reserve(slots_.empty() ? 16 : slots_.size());
    const uint64_t h = hash_bytes(key);
    if (find_slot(key, h)->hash) return;
    place({h, static_cast<uint32_t>(arena_.size()), static_cast<uint32_t>(key.size()), value});
    arena_.append(key);
    ++size_;
  }
  const int32_t* find(std::string_view key) const {
    if (slots_.empty()) return nullptr;
    const Slot* s = find_slot(key, hash_bytes(key));
    return s->hash ? &s->value : nullptr;
  }
  size_t size() const { return size_; }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t offset = 0, length = 0;
    int32_t value = 0;
  };
  const Slot* find_slot(std::string_view key, uint64_t h) const {
    const size_t mask = slots_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.hash == 0) return &s;
      if (s.hash == h && s.length == key.size() && std::memcmp(arena_.data() + s.offset, key.data(), key.size()) == 0)
        return &s;
    }
  }
  void place(const Slot& slot) {
    const size_t mask = slots_.size() - 1;
    size_t i = slot.hash & mask;
    while (slots_[i].hash) i = (i + 1) & mask;
    slots_[i] = slot;
  }
  std::vector<Slot> slots_;
  std::string arena_;
  size_t size_ = 0;
};

// Byte string → list of ids, with a fixed number of slots; when it fills up it starts over empty
// (a bounded cache that never allocates per entry).
class WordCache {
 public:
  explicit WordCache(size_t capacity) {
    size_t cap = 16;
    while (cap < capacity * 2) cap <<= 1;
    slots_.resize(cap);
    capacity_ = capacity;
  }
  // Appends the cached ids of key to out; false on a miss.
  bool get(std::string_view key, uint64_t h, std::vector<int32_t>& out) const {
    const Slot& s = slots_[find(key, h)];
    if (!s.hash) return false;
    out.insert(out.end(), ids_.begin() + s.ids_offset, ids_.begin() + s.ids_offset + s.ids_length);
    return true;
  }
  void put(std::string_view key, uint64_t h, const int32_t* ids, size_t n) {
    if (size_ >= capacity_) clear();
    Slot& s = slots_[find(key, h)];
    if (s.hash) return;
    s = {h, static_cast<uint32_t>(keys_.size()), static_cast<uint32_t>(key.size()),
         static_cast<uint32_t>(ids_.size()), static_cast<uint32_t>(n)};
    keys_.append(key);
    ids_.insert(ids_.end(), ids, ids + n);
    ++size_;
  }

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_offset = 0, key_length = 0, ids_offset = 0, ids_length = 0;
  };
  size_t find(std::string_view key, uint64_t h) const {
    const size_t mask = slots_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.hash == 0) return i;
      if (s.hash == h && s.key_length == key.size() &&
          std::memcmp(keys_.data() + s.key_offset, key.data(), key.size()) == 0)
        return i;
    }
  }
  void clear() {
    std::fill(slots_.begin(), slots_.end(), Slot{});
    keys_.clear();
    ids_.clear();
    size_ = 0;
  }
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
  size_t size_ = 0, capacity_ = 0;
};

}  // namespace lamina
