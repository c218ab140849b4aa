// Capacity and micro-batch scheduling on hand-made requests (no engine): no-evict admission,
// max-utilization preemption of the newest request, slots, and the per-step token budget.
#include <gtest/gtest.h>

#include <memory>

#include "scheduler/capacity_scheduler.h"
#include "scheduler/micro_batch.h"

namespace lamina {
namespace {

std::unique_ptr<Request> make_request(RequestId id, int prompt_len, int max_tokens) {
  auto r = std::make_unique<Request>();
  r->id = id;
  r->spec.max_tokens = max_tokens;
  r->tokens.assign(size_t(prompt_len), 7);
  r->num_prompt = prompt_len;
  return r;
}

TEST(CapacityScheduler, ParsesPolicyNames) {
  EXPECT_EQ(parse_capacity_policy("guaranteed_no_evict"), CapacityPolicy::GuaranteedNoEvict);
  EXPECT_EQ(parse_capacity_policy("MAX_UTILIZATION"), CapacityPolicy::MaxUtilization);
  EXPECT_THROW(parse_capacity_policy("fastest"), Error);
}

TEST(CapacityScheduler, NoEvictAdmitsOnlyWhenPromptPlusMaxTokensFit) {
  // 10 blocks of 4 tokens; each request needs ceil((10 + 10) / 4) = 5 blocks.
  CapacityScheduler cap(CapacityPolicy::GuaranteedNoEvict, {10, 4, false}, 8);
  auto a = make_request(1, 10, 10), b = make_request(2, 10, 10), c = make_request(3, 10, 10);
  EXPECT_TRUE(cap.try_admit(*a, 1));
  EXPECT_TRUE(cap.try_admit(*b, 2));
  EXPECT_FALSE(cap.try_admit(*c, 3));  // the pool is fully reserved
  EXPECT_EQ(c->state, RequestState::Queued);
  EXPECT_EQ(cap.kv().num_used_blocks(), 10);
  EXPECT_EQ(a->state, RequestState::Prefilling);
  EXPECT_GE(a->slot, 0);
  EXPECT_NE(a->slot, b->slot);

  cap.release(*a);
  EXPECT_EQ(a->slot, -1);
  EXPECT_EQ(cap.kv().num_used_blocks(), 5);
  EXPECT_TRUE(cap.try_admit(*c, 3));
}

TEST(CapacityScheduler, SlotsBoundRunningRequests) {
  CapacityScheduler cap(CapacityPolicy::GuaranteedNoEvict, {100, 4, false}, 2);
  auto a = make_request(1, 4, 4), b = make_request(2, 4, 4), c = make_request(3, 4, 4);
  EXPECT_TRUE(cap.try_admit(*a, 1));
  EXPECT_TRUE(cap.try_admit(*b, 2));
  EXPECT_FALSE(cap.try_admit(*c, 3));
  EXPECT_EQ(cap.num_free_slots(), 0);
  cap.release(*b);
  EXPECT_TRUE(cap.try_admit(*c, 3));
  EXPECT_EQ(c->slot, 1);  // b's slot, reused
}

TEST(CapacityScheduler, NoEvictNeverPreempts) {
  CapacityScheduler cap(CapacityPolicy::GuaranteedNoEvict, {10, 4, false}, 8);
  auto a = make_request(1, 4, 8);
  ASSERT_TRUE(cap.try_admit(*a, 1));
  std::vector<Request*> running = {a.get()};
  // Decode all the way to prompt + max_tokens: the blocks were reserved at admission.
  for (int t = 0; t < 8; ++t) {
    a->num_computed = int(a->tokens.size());
    a->tokens.push_back(1);
    EXPECT_TRUE(cap.make_room_for_decode(running).empty());
  }
  EXPECT_EQ(cap.kv().num_used_blocks(), 3);
}

TEST(CapacityScheduler, MaxUtilizationAdmitsOnPromptAndPreemptsTheNewest) {
  // 4 blocks of 4 tokens. Three requests with 4-token prompts fit one block each.
  CapacityScheduler cap(CapacityPolicy::MaxUtilization, {4, 4, false}, 8);
  auto a = make_request(1, 4, 100), b = make_request(2, 4, 100), c = make_request(3, 4, 100);
  ASSERT_TRUE(cap.try_admit(*a, 1));
  ASSERT_TRUE(cap.try_admit(*b, 2));
  ASSERT_TRUE(cap.try_admit(*c, 3));
  EXPECT_EQ(cap.kv().num_used_blocks(), 3);
  std::vector<Request*> running = {a.get(), b.get(), c.get()};
  // All three prefilled and sampled one token each: each now needs a second block.
  for (Request* r : running) {
    r->num_computed = 4;
    r->tokens.push_back(1);
  }
  const std::vector<Request*> preempted = cap.make_room_for_decode(running);
  // a takes the last free block; b then finds none and c (the newest) is preempted for it.
  ASSERT_EQ(preempted.size(), 1u);
  EXPECT_EQ(preempted[0], c.get());
  EXPECT_EQ(c->state, RequestState::Queued);
  EXPECT_EQ(c->num_computed, 0);
  EXPECT_EQ(c->slot, -1);
  EXPECT_EQ(c->preemptions, 1);
  EXPECT_EQ(c->tokens.size(), 5u);  // keeps prompt + generated: it will recompute them
  ASSERT_EQ(running.size(), 2u);
  EXPECT_EQ(cap.kv().num_used_blocks(), 4);
  EXPECT_EQ(cap.kv().blocks(1).size(), 2u);
  EXPECT_EQ(cap.kv().blocks(2).size(), 2u);
}

TEST(CapacityScheduler, MaxUtilizationPreemptsTheRequesterWhenItIsTheNewest) {
  CapacityScheduler cap(CapacityPolicy::MaxUtilization, {2, 4, false}, 8);
  auto a = make_request(1, 4, 100), b = make_request(2, 4, 100);
  ASSERT_TRUE(cap.try_admit(*a, 1));
  ASSERT_TRUE(cap.try_admit(*b, 2));
  std::vector<Request*> running = {a.get(), b.get()};
  b->num_computed = 4;  // only b is decoding and needs a block
  b->tokens.push_back(1);
  const auto preempted = cap.make_room_for_decode(running);
  ASSERT_EQ(preempted.size(), 1u);
  EXPECT_EQ(preempted[0], b.get());
  ASSERT_EQ(running.size(), 1u);
  EXPECT_EQ(running[0], a.get());
}

// Decodes are served first from the budget; in the step, prefill chunks come first (their runs of
// tokens start where the step starts, so the attention's 64-token tiles stay within one prompt).
TEST(MicroBatch, DecodesFirstThenPrefillChunksWithinTheBudget) {
  auto d1 = make_request(1, 5, 10), p1 = make_request(2, 30, 10), d2 = make_request(3, 5, 10),
       p2 = make_request(4, 30, 10);
  d1->num_computed = 4;  // one token pending: decoding
  d2->num_computed = 4;
  p1->num_computed = 10;  // mid-prefill
  std::vector<Request*> running = {d1.get(), p1.get(), d2.get(), p2.get()};

  const auto chunks = plan_micro_batch(running, 16);
  ASSERT_EQ(chunks.size(), 3u);
  EXPECT_EQ(chunks[0].req, p1.get());  // the older prefill takes the rest: 14 of its 20
  EXPECT_EQ(chunks[0].begin, 10);
  EXPECT_EQ(chunks[0].count, 14);
  EXPECT_FALSE(chunks[0].samples);
  EXPECT_EQ(chunks[1].req, d1.get());
  EXPECT_EQ(chunks[1].count, 1);
  EXPECT_TRUE(chunks[1].samples);
  EXPECT_EQ(chunks[2].req, d2.get());

  const auto big = plan_micro_batch(running, 100);
  ASSERT_EQ(big.size(), 4u);
  EXPECT_EQ(big[0].req, p1.get());
  EXPECT_TRUE(big[0].samples);  // p1's last 20 tokens end its prompt
  EXPECT_EQ(big[1].req, p2.get());
  EXPECT_EQ(big[1].count, 30);
  EXPECT_EQ(big[2].req, d1.get());
  EXPECT_EQ(big[3].req, d2.get());

  // Chunks of a multiple of 64 tokens go first, so the ones after them stay on the 64-token grid.
  auto a = make_request(5, 100, 10), b = make_request(6, 128, 10);
  std::vector<Request*> prompts = {a.get(), b.get(), d1.get()};
  const auto aligned = plan_micro_batch(prompts, 1000);
  ASSERT_EQ(aligned.size(), 3u);
  EXPECT_EQ(aligned[0].req, b.get());
  EXPECT_EQ(aligned[1].req, a.get());
  EXPECT_EQ(aligned[2].req, d1.get());

  const auto tiny = plan_micro_batch(running, 1);
  ASSERT_EQ(tiny.size(), 1u);
  EXPECT_EQ(tiny[0].req, d1.get());
}

}  // namespace
}  // namespace lamina
