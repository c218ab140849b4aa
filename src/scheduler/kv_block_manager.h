// KV cache capacity in blocks of tokens_per_block tokens: a fixed pool, a block list per
// sequence, a free list, and (with reuse on) prefix sharing of full blocks.
//
// Prefix reuse: a full block is identified by hash(previous block's hash, its tokens), so equal
// hashes mean equal prefixes. Once a sequence's block is full of computed tokens it is published
// in the cache; a later sequence with the same prefix takes it with ref_count + 1 instead of a
// fresh block. A block whose ref_count drops to 0 goes on the free list but keeps its content until
// the free list hands it out again (least recently freed first), so it can still be reused.
// Shared blocks are never written: a match stops before the last token, which is always computed.
#pragma once
#include <cstddef>
#include <cstdint>
#include <list>
#include <unordered_map>
#include <vector>

namespace lamina {

struct KVCacheOptions {
  int num_blocks = 0;
  int tokens_per_block = 32;
  bool enable_reuse = false;
};

class KVBlockManager {
 public:
  using SeqId = uint64_t;
  explicit KVBlockManager(const KVCacheOptions& opts);

  int tokens_per_block() const { return tpb_; }
  int num_blocks() const { return int(blocks_.size()); }
  int num_free_blocks() const { return int(free_.size()); }  // includes cached blocks nobody holds
  int num_used_blocks() const { return num_blocks() - num_free_blocks(); }
  int blocks_for(int tokens) const { return (tokens + tpb_ - 1) / tpb_; }
  bool reuse_enabled() const { return reuse_; }

  // Leading tokens of `tokens` whose KV sits in cached full blocks (0 without reuse). At most
  // tokens.size() - 1: the last token is always computed, to produce logits.
  int cached_prefix_tokens(const std::vector<int32_t>& tokens) const;
  // Free-list blocks a new sequence would take to hold `reserve` tokens of `tokens`
  // (fresh blocks + cached blocks that nobody holds right now).
  int blocks_needed(const std::vector<int32_t>& tokens, int reserve) const;
  bool can_allocate(const std::vector<int32_t>& tokens, int reserve) const {
    return blocks_needed(tokens, reserve) <= num_free_blocks();
  }

  // Starts a sequence holding room for `reserve` tokens (reserve >= 1), sharing the cached prefix.
  // Returns how many leading tokens are already computed. Throws if can_allocate is false.
  int allocate(SeqId seq, const std::vector<int32_t>& tokens, int reserve);
  // Grows seq to hold `tokens` tokens. Returns false, changing nothing, if blocks ran out.
  bool reserve(SeqId seq, int tokens);
  // seq's first num_computed tokens now have KV: publish its newly full blocks for reuse.
  void commit(SeqId seq, const std::vector<int32_t>& tokens, int num_computed);
  // Drops seq: each block's ref_count - 1; blocks reaching 0 go on the free list.
  void free(SeqId seq);

  bool has(SeqId seq) const { return seqs_.count(seq) != 0; }
  const std::vector<int>& blocks(SeqId seq) const;  // block ids in sequence order
  int ref_count(int block) const { return blocks_.at(size_t(block)).ref_count; }
  int num_cached_blocks() const { return int(cache_.size()); }  // published, reusable

 private:
  struct Block {
    int ref_count = 0;
    bool cached = false;  // published under `hash`
    uint64_t hash = 0, parent_hash = 0;
    std::vector<int32_t> tokens;  // content of a published block (guards against hash collisions)
    std::list<int>::iterator free_pos;
  };
  struct Sequence {
    std::vector<int> blocks;
    int num_published = 0;   // leading blocks already published (or taken from the cache)
    uint64_t last_hash = 0;  // hash of block num_published - 1 (0 before the first)
  };

  // Cached blocks matching the leading full blocks of `tokens` (at most tokens.size() - 1 tokens).
  std::vector<int> match_prefix(const std::vector<int32_t>& tokens) const;
  int find_cached(uint64_t hash, uint64_t parent, const int32_t* tokens) const;
  int take_free_block();  // evicts its cached content, if any
  void take_from_free_list(int block);

  int tpb_;
  bool reuse_;
  std::vector<Block> blocks_;
  std::list<int> free_;  // front = freed longest ago = handed out first
  std::unordered_map<uint64_t, int> cache_;  // hash → block
  std::unordered_map<SeqId, Sequence> seqs_;
};

uint64_t kv_block_hash(uint64_t parent_hash, const int32_t* tokens, int n);

}  // namespace lamina
