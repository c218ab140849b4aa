#include "scheduler/kv_block_manager.h"

#include <algorithm>

#include "common/error.h"

namespace lamina {

uint64_t kv_block_hash(uint64_t parent_hash, const int32_t* tokens, int n) {
  // FNV-1a over (parent, tokens), then a splitmix64 finaliser to spread the bits.
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xff;
      h *= 1099511628211ull;
    }
  };
  mix(parent_hash);
  for (int i = 0; i < n; ++i) mix(uint64_t(uint32_t(tokens[i])));
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  return (h ^ (h >> 31)) | 1;  // never 0, which stands for "no parent"
}

KVBlockManager::KVBlockManager(const KVCacheOptions& opts)
    : tpb_(opts.tokens_per_block), reuse_(opts.enable_reuse), blocks_(size_t(std::max(0, opts.num_blocks))) {
  if (opts.tokens_per_block < 1) fail("tokens_per_block must be at least 1 (got ", opts.tokens_per_block, ")");
  if (opts.num_blocks < 1) fail("the KV cache needs at least one block (got ", opts.num_blocks, ")");
  for (int b = 0; b < opts.num_blocks; ++b) blocks_[size_t(b)].free_pos = free_.insert(free_.end(), b);
}

const std::vector<int>& KVBlockManager::blocks(SeqId seq) const {
  auto it = seqs_.find(seq);
  LAMINA_CHECK(it != seqs_.end(), "unknown KV sequence ", seq);
  return it->second.blocks;
}

int KVBlockManager::find_cached(uint64_t hash, uint64_t parent, const int32_t* tokens) const {
  auto it = cache_.find(hash);
  if (it == cache_.end()) return -1;
  const Block& b = blocks_[size_t(it->second)];
  if (b.parent_hash != parent || !std::equal(b.tokens.begin(), b.tokens.end(), tokens)) return -1;
  return it->second;
}

std::vector<int> KVBlockManager::match_prefix(const std::vector<int32_t>& tokens) const {
  std::vector<int> hit;
  if (!reuse_ || tokens.empty()) return hit;
  const int full = (int(tokens.size()) - 1) / tpb_;  // keep the last token out of shared blocks
  uint64_t parent = 0;
  for (int i = 0; i < full; ++i) {
    const int32_t* t = tokens.data() + size_t(i) * size_t(tpb_);
    const uint64_t h = kv_block_hash(parent, t, tpb_);
    const int b = find_cached(h, parent, t);
    if (b < 0) break;
    hit.push_back(b);
    parent = h;
  }
  return hit;
}

int KVBlockManager::cached_prefix_tokens(const std::vector<int32_t>& tokens) const {
  return int(match_prefix(tokens).size()) * tpb_;
}

int KVBlockManager::blocks_needed(const std::vector<int32_t>& tokens, int reserve) const {
  const std::vector<int> hit = match_prefix(tokens);
  int from_free = std::max(0, blocks_for(std::max(reserve, 1)) - int(hit.size()));
  for (int b : hit)
    if (blocks_[size_t(b)].ref_count == 0) ++from_free;  // cached but idle: it sits on the free list
  return from_free;
}

void KVBlockManager::take_from_free_list(int block) {
  Block& b = blocks_[size_t(block)];
  LAMINA_CHECK(b.ref_count == 0, "block ", block, " is not free");
  free_.erase(b.free_pos);
  b.free_pos = free_.end();
}

int KVBlockManager::take_free_block() {
  LAMINA_CHECK(!free_.empty(), "no free KV block");
  const int id = free_.front();
  take_from_free_list(id);
  Block& b = blocks_[size_t(id)];
  if (b.cached) {  // evict its old content from the prefix cache
    cache_.erase(b.hash);
    b.cached = false;
    b.tokens.clear();
  }
  b.ref_count = 1;
  return id;
}

int KVBlockManager::allocate(SeqId seq, const std::vector<int32_t>& tokens, int reserve) {
  LAMINA_CHECK(!has(seq), "KV sequence ", seq, " is already allocated");
  LAMINA_CHECK(reserve >= 1, "a sequence must reserve at least one token");
  if (!can_allocate(tokens, reserve))
    fail("not enough free KV blocks: need ", blocks_needed(tokens, reserve), ", ", num_free_blocks(), " free");
  Sequence s;
  for (int b : match_prefix(tokens)) {
    if (blocks_[size_t(b)].ref_count == 0) take_from_free_list(b);
    ++blocks_[size_t(b)].ref_count;
    s.blocks.push_back(b);
    s.last_hash = blocks_[size_t(b)].hash;
  }
  s.num_published = int(s.blocks.size());
  const int reused = s.num_published * tpb_;
  while (int(s.blocks.size()) < blocks_for(reserve)) s.blocks.push_back(take_free_block());
  seqs_.emplace(seq, std::move(s));
  return reused;
}

bool KVBlockManager::reserve(SeqId seq, int tokens) {
  auto it = seqs_.find(seq);
  LAMINA_CHECK(it != seqs_.end(), "unknown KV sequence ", seq);
  const int more = blocks_for(tokens) - int(it->second.blocks.size());
  if (more <= 0) return true;
  if (more > num_free_blocks()) return false;
  for (int i = 0; i < more; ++i) it->second.blocks.push_back(take_free_block());
  return true;
}

void KVBlockManager::commit(SeqId seq, const std::vector<int32_t>& tokens, int num_computed) {
  if (!reuse_) return;
  auto it = seqs_.find(seq);
  LAMINA_CHECK(it != seqs_.end(), "unknown KV sequence ", seq);
  Sequence& s = it->second;
  const int full = std::min(num_computed / tpb_, int(s.blocks.size()));
  for (; s.num_published < full; ++s.num_published) {
    const int32_t* t = tokens.data() + size_t(s.num_published) * size_t(tpb_);
    const uint64_t h = kv_block_hash(s.last_hash, t, tpb_);
    Block& b = blocks_[size_t(s.blocks[size_t(s.num_published)])];
    // An equal block may already be published (two sequences computed the same prefix at
    // once): keep that one; ours stays private and is simply freed later.
    if (!b.cached && !cache_.count(h)) {
      b.cached = true;
      b.hash = h;
      b.parent_hash = s.last_hash;
      b.tokens.assign(t, t + tpb_);
      cache_.emplace(h, s.blocks[size_t(s.num_published)]);
    }
    s.last_hash = h;
  }
}

void KVBlockManager::free(SeqId seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) return;
  // Tail blocks first: the free list hands out (and so evicts) the deepest prefix blocks first.
  const std::vector<int>& bl = it->second.blocks;
  for (auto b = bl.rbegin(); b != bl.rend(); ++b) {
    Block& blk = blocks_[size_t(*b)];
    LAMINA_CHECK(blk.ref_count > 0, "block ", *b, " freed twice");
    if (--blk.ref_count == 0) {
      if (!blk.cached) blk.tokens.clear();
      blk.free_pos = free_.insert(free_.end(), *b);
    }
  }
  seqs_.erase(it);
}

}  // namespace lamina
