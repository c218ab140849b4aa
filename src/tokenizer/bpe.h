// Byte-level BPE model (HF tokenizers' "BPE" with a ByteLevel pre-tokenizer): a vocabulary keyed by
// raw bytes, a merge-rank hash map over id pairs, and a bounded cache for words seen before.
#pragma once
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "common/json.h"
#include "tokenizer/flat_map.h"

namespace lamina {

// Open-addressing hash map from an id pair to (rank, merged id): the hot lookup of BPE.
class MergeTable {
 public:
  struct Merge {
    int32_t rank = -1;
    int32_t id = -1;
  };
  void build(const std::vector<std::pair<uint64_t, Merge>>& entries);
  const Merge* find(int32_t left, int32_t right) const {
    if (mask_ == 0) return nullptr;
    const uint64_t key = pack(left, right);
    for (size_t i = hash(key) & mask_;; i = (i + 1) & mask_) {
      if (keys_[i] == key) return &values_[i];
      if (keys_[i] == kEmpty) return nullptr;
    }
  }
  static uint64_t pack(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
  }

 private:
  static constexpr uint64_t kEmpty = ~0ull;
  static size_t hash(uint64_t k) {  // splitmix64 finaliser
    k ^= k >> 30;
    k *= 0xbf58476d1ce4e5b9ull;
    k ^= k >> 27;
    k *= 0x94d049bb133111ebull;
    return static_cast<size_t>(k ^ (k >> 31));
  }
  std::vector<uint64_t> keys_;
  std::vector<Merge> values_;
  size_t mask_ = 0;
};

// The vocabulary as tokenizer.json writes it, by id (filled by BpeModel::from_json; added tokens
// are appended by the caller).
struct VocabTables {
  std::vector<std::string> texts;                       // id → token text ("Ġworld")
  std::vector<std::string> bytes;                       // id → the bytes it stands for
  std::unordered_map<std::string, int32_t> text_to_id;  // token text → id
};

class BpeModel {
 public:
  // Parses tokenizer.json's "model" object; unsupported options are a lamina::Error.
  static std::shared_ptr<BpeModel> from_json(const Json& model, const std::string& where, VocabTables& vocab);

  // Appends the ids of one pre-token (raw bytes) to out.
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> id_of_bytes(std::string_view bytes) const;
  size_t size() const { return num_ids_; }               // highest id + 1
  size_t vocab_entries() const { return num_entries_; }  // what HF calls the model's vocab size

 private:
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;

  BytesToIdMap vocab_;               // raw bytes → id
  std::vector<int32_t> byte_ids_;    // 256 entries; -1 where the byte is not in the vocab
  MergeTable merges_;
  size_t num_ids_ = 0;
  size_t num_entries_ = 0;
  bool ignore_merges_ = false;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;

  // Cache of merged words; sharded so concurrent encodes rarely contend on one lock.
  static constexpr size_t kShards = 16;
  static constexpr size_t kShardCapacity = 8192;
  static constexpr size_t kMaxCachedWord = 256;  // bytes; longer words are merged every time
  struct CacheShard {
    std::mutex mu;
    WordCache words{kShardCapacity};
  };
  mutable std::unique_ptr<CacheShard[]> cache_ = std::make_unique<CacheShard[]>(kShards);
};

}  // namespace lamina
