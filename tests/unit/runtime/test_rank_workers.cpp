// RankWorkers: every rank runs at once (ranks that wait for one another finish), the same threads
// serve every run, and the lowest failing rank's error comes back.
#include "runtime/rank_workers.h"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <stdexcept>
#include <string>

namespace lamina {
namespace {

TEST(RankWorkers, RanksRunAtOnceOnTheSameThreadsEveryRun) {
  const size_t ranks = 4;
  RankWorkers workers(ranks);
  std::vector<std::thread::id> first(ranks);
  for (int round = 0; round < 50; ++round) {
    std::atomic<size_t> arrived{0};
    std::vector<std::thread::id> ids(ranks);
    workers.run([&](size_t r) {
      // A spin barrier: finishes only if all ranks run at the same time.
      arrived.fetch_add(1);
      while (arrived.load() < ranks) std::this_thread::yield();
      ids[r] = std::this_thread::get_id();
    });
    EXPECT_EQ(ids[0], std::this_thread::get_id());
    EXPECT_EQ(std::set<std::thread::id>(ids.begin(), ids.end()).size(), ranks);
    if (round == 0) first = ids;
    for (size_t r = 1; r < ranks; ++r) EXPECT_EQ(ids[r], first[r]);
  }
}

TEST(RankWorkers, RethrowsTheLowestFailingRanksErrorAndStaysUsable) {
  RankWorkers workers(3);
  try {
    workers.run([](size_t r) {
      if (r >= 1) throw std::runtime_error("rank " + std::to_string(r));
    });
    FAIL() << "no error came back";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "rank 1");
  }
  std::atomic<int> calls{0};
  workers.run([&](size_t) { calls.fetch_add(1); });
  EXPECT_EQ(calls.load(), 3);
}

TEST(RankWorkers, OneRankRunsOnTheCaller) {
  RankWorkers workers(1);
  std::thread::id id;
  workers.run([&](size_t r) {
    EXPECT_EQ(r, 0u);
    id = std::this_thread::get_id();
  });
  EXPECT_EQ(id, std::this_thread::get_id());
}

}  // namespace
}  // namespace lamina
