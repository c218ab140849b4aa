// KVBlockManager bookkeeping: allocation and free, growth, prefix reuse with reference counts and
// eviction of idle cached blocks.
#include <gtest/gtest.h>

#include <numeric>

#include "common/error.h"
#include "scheduler/kv_block_manager.h"

namespace lamina {
namespace {

std::vector<int32_t> iota_tokens(int n, int32_t start = 0) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  std::iota(t.begin(), t.end(), start);
  return t;
}

TEST(KVBlockManager, AllocateAndFreeReturnBlocks) {
  KVBlockManager kv({/*num_blocks=*/10, /*tokens_per_block=*/4, /*enable_reuse=*/false});
  EXPECT_EQ(kv.num_free_blocks(), 10);
  EXPECT_EQ(kv.blocks_for(1), 1);
  EXPECT_EQ(kv.blocks_for(4), 1);
  EXPECT_EQ(kv.blocks_for(5), 2);

  EXPECT_EQ(kv.allocate(1, iota_tokens(6), 9), 0);  // 9 tokens → 3 blocks, nothing reused
  EXPECT_EQ(kv.blocks(1).size(), 3u);
  EXPECT_EQ(kv.num_used_blocks(), 3);
  for (int b : kv.blocks(1)) EXPECT_EQ(kv.ref_count(b), 1);

  EXPECT_TRUE(kv.reserve(1, 12));  // still 3 blocks
  EXPECT_EQ(kv.num_used_blocks(), 3);
  EXPECT_TRUE(kv.reserve(1, 13));
  EXPECT_EQ(kv.num_used_blocks(), 4);

  kv.free(1);
  EXPECT_EQ(kv.num_free_blocks(), 10);
  EXPECT_FALSE(kv.has(1));
  kv.free(1);  // unknown: no-op
  EXPECT_EQ(kv.num_free_blocks(), 10);
}

TEST(KVBlockManager, RefusesWhatDoesNotFit) {
  KVBlockManager kv({4, 8, false});
  EXPECT_TRUE(kv.can_allocate(iota_tokens(10), 32));
  EXPECT_FALSE(kv.can_allocate(iota_tokens(10), 33));
  EXPECT_THROW(kv.allocate(1, iota_tokens(10), 33), Error);
  EXPECT_EQ(kv.num_free_blocks(), 4);

  kv.allocate(1, iota_tokens(10), 24);  // 3 blocks
  EXPECT_FALSE(kv.reserve(1, 33));      // would need 5 in all
  EXPECT_EQ(kv.blocks(1).size(), 3u);   // unchanged by the failed reserve
  EXPECT_TRUE(kv.reserve(1, 32));
  EXPECT_EQ(kv.num_free_blocks(), 0);
  EXPECT_FALSE(kv.can_allocate(iota_tokens(1), 1));
}

TEST(KVBlockManager, RejectsBadOptions) {
  EXPECT_THROW(KVBlockManager({0, 4, false}), Error);
  EXPECT_THROW(KVBlockManager({4, 0, false}), Error);
}

TEST(KVBlockManager, ReuseIsOffByDefault) {
  KVBlockManager kv({10, 4, false});
  const auto t = iota_tokens(9);
  kv.allocate(1, t, 9);
  kv.commit(1, t, 9);
  EXPECT_EQ(kv.cached_prefix_tokens(t), 0);
  EXPECT_EQ(kv.allocate(2, t, 9), 0);
  EXPECT_EQ(kv.num_used_blocks(), 6);
}

TEST(KVBlockManager, PrefixReuseSharesFullBlocksWithRefCounts) {
  KVBlockManager kv({10, 4, true});
  std::vector<int32_t> a = iota_tokens(10);  // blocks [0..3] [4..7] and a partial [8, 9]
  kv.allocate(1, a, 10);
  EXPECT_EQ(kv.cached_prefix_tokens(a), 0);  // nothing is computed yet
  kv.commit(1, a, 10);
  EXPECT_EQ(kv.num_cached_blocks(), 2);  // only full blocks are published

  // Same first 8 tokens, different tail: shares two blocks.
  std::vector<int32_t> b = iota_tokens(8);
  b.insert(b.end(), {100, 101, 102});
  EXPECT_EQ(kv.cached_prefix_tokens(b), 8);
  EXPECT_EQ(kv.blocks_needed(b, 11), 1);  // only the tail block is fresh
  EXPECT_EQ(kv.allocate(2, b, 11), 8);
  const auto& b1 = kv.blocks(1);
  const auto& b2 = kv.blocks(2);
  EXPECT_EQ(b1[0], b2[0]);
  EXPECT_EQ(b1[1], b2[1]);
  EXPECT_NE(b1[2], b2[2]);
  EXPECT_EQ(kv.ref_count(b1[0]), 2);
  EXPECT_EQ(kv.ref_count(b1[1]), 2);
  EXPECT_EQ(kv.ref_count(b1[2]), 1);
  EXPECT_EQ(kv.num_used_blocks(), 4);

  const int shared = b1[0];
  kv.free(1);
  EXPECT_EQ(kv.ref_count(shared), 1);
  EXPECT_EQ(kv.num_used_blocks(), 3);
  kv.free(2);
  EXPECT_EQ(kv.ref_count(shared), 0);
  EXPECT_EQ(kv.num_free_blocks(), 10);
  // Idle but still cached: a third sequence takes the same blocks back from the free list.
  EXPECT_EQ(kv.num_cached_blocks(), 2);
  EXPECT_EQ(kv.blocks_needed(a, 12), 3);
  EXPECT_EQ(kv.allocate(3, a, 12), 8);
  EXPECT_EQ(kv.blocks(3)[0], shared);
  EXPECT_EQ(kv.ref_count(shared), 1);
}

TEST(KVBlockManager, LastTokenIsNeverInASharedBlock) {
  KVBlockManager kv({10, 4, true});
  const auto t = iota_tokens(8);  // exactly two full blocks
  kv.allocate(1, t, 9);
  kv.commit(1, t, 8);
  EXPECT_EQ(kv.num_cached_blocks(), 2);
  // The same 8-token prompt reuses only the first block: token 7 must be computed for logits.
  EXPECT_EQ(kv.cached_prefix_tokens(t), 4);
  auto longer = t;
  longer.push_back(99);
  EXPECT_EQ(kv.cached_prefix_tokens(longer), 8);
}

TEST(KVBlockManager, HashChainsOnThePrefix) {
  KVBlockManager kv({10, 4, true});
  std::vector<int32_t> a = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  kv.allocate(1, a, 9);
  kv.commit(1, a, 9);
  // Block [5..8] again, but after a different first block: no match at all.
  std::vector<int32_t> b = {0, 0, 0, 0, 5, 6, 7, 8, 9};
  EXPECT_EQ(kv.cached_prefix_tokens(b), 0);
  // Same first block: one match.
  std::vector<int32_t> c = {1, 2, 3, 4, 0, 0, 0, 0, 9};
  EXPECT_EQ(kv.cached_prefix_tokens(c), 4);
}

TEST(KVBlockManager, GeneratedTokensArePublishedAsTheyFillBlocks) {
  KVBlockManager kv({10, 4, true});
  std::vector<int32_t> t = {1, 2, 3};
  kv.allocate(1, t, 3);
  kv.commit(1, t, 3);
  EXPECT_EQ(kv.num_cached_blocks(), 0);
  t.push_back(4);  // a generated token completes the first block
  t.push_back(5);
  ASSERT_TRUE(kv.reserve(1, 5));
  kv.commit(1, t, 4);
  EXPECT_EQ(kv.num_cached_blocks(), 1);
  EXPECT_EQ(kv.cached_prefix_tokens(t), 4);
}

TEST(KVBlockManager, IdleCachedBlocksAreEvictedLeastRecentlyFreedFirst) {
  KVBlockManager kv({4, 2, true});
  const std::vector<int32_t> a = {1, 2, 3, 4, 5};  // two full blocks + a partial one
  kv.allocate(1, a, 5);
  kv.commit(1, a, 5);
  kv.free(1);
  EXPECT_EQ(kv.num_cached_blocks(), 2);
  EXPECT_EQ(kv.num_free_blocks(), 4);
  // An unrelated sequence needing 3 blocks takes the never-used block, then the freed tail, then
  // the deepest cached block: the first block of `a` survives.
  kv.allocate(2, {9, 9, 9, 9, 9}, 6);
  EXPECT_EQ(kv.num_cached_blocks(), 1);
  EXPECT_EQ(kv.cached_prefix_tokens(a), 2);
  kv.free(2);
  // Under full pressure every cached block goes.
  kv.allocate(3, {7, 7, 7}, 8);
  EXPECT_EQ(kv.num_cached_blocks(), 0);
  EXPECT_EQ(kv.num_free_blocks(), 0);
}

TEST(KVBlockManager, SharedIdleBlocksCountAgainstTheFreeList) {
  KVBlockManager kv({3, 2, true});
  const std::vector<int32_t> a = {1, 2, 3, 4, 5};
  kv.allocate(1, a, 6);  // 3 blocks: all of them
  kv.commit(1, a, 5);
  kv.free(1);
  // `a` again: 2 cached idle blocks + 1 fresh = 3 from the free list.
  EXPECT_EQ(kv.blocks_needed(a, 6), 3);
  EXPECT_TRUE(kv.can_allocate(a, 6));
  EXPECT_FALSE(kv.can_allocate(a, 7));
  EXPECT_EQ(kv.allocate(2, a, 6), 4);
  EXPECT_EQ(kv.num_free_blocks(), 0);
}

TEST(KVBlockManager, DuplicateComputedBlocksStayPrivate) {
  KVBlockManager kv({6, 2, true});
  const std::vector<int32_t> a = {1, 2, 3};
  kv.allocate(1, a, 3);
  kv.allocate(2, a, 3);  // both admitted before either computed: no sharing
  kv.commit(1, a, 3);
  kv.commit(2, a, 3);
  EXPECT_EQ(kv.num_cached_blocks(), 1);
  EXPECT_NE(kv.blocks(1)[0], kv.blocks(2)[0]);
  kv.free(2);
  kv.free(1);
  EXPECT_EQ(kv.num_free_blocks(), 6);
  EXPECT_EQ(kv.cached_prefix_tokens(a), 2);
}

TEST(KVBlockHash, DependsOnParentAndTokens) {
  const int32_t t[] = {1, 2, 3, 4};
  const int32_t u[] = {1, 2, 3, 5};
  EXPECT_EQ(kv_block_hash(0, t, 4), kv_block_hash(0, t, 4));
  EXPECT_NE(kv_block_hash(0, t, 4), kv_block_hash(0, u, 4));
  EXPECT_NE(kv_block_hash(0, t, 4), kv_block_hash(7, t, 4));
  EXPECT_NE(kv_block_hash(0, t, 4), 0u);
}

}  // namespace
}  // namespace lamina
