// RankWorkers: every rank runs at once (ranks that wait for one another finish), the same threads
// serve every run, and the error thrown first comes back.
#include "runtime/rank_workers.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

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

// LAMINA_RANK_SPIN_US: how long hand-offs poll before they sleep. 0 (sleep at once) and a long
// spin both run every rank at once; a value that is no number of microseconds is an error that
// names the variable, raised when the workers start.
TEST(RankWorkers, SpinSettingWorksAtZeroAndRejectsBadValues) {
  for (const char* spin : {"0", "5000"}) {
    ::setenv("LAMINA_RANK_SPIN_US", spin, 1);
    RankWorkers workers(3);
    for (int round = 0; round < 20; ++round) {
      std::atomic<size_t> arrived{0};
      workers.run([&](size_t) {
        arrived.fetch_add(1);
        while (arrived.load() < 3) std::this_thread::yield();
      });
      EXPECT_EQ(arrived.load(), 3u) << "LAMINA_RANK_SPIN_US=" << spin;
    }
  }
  for (const char* bad : {"abc", "-1", "12us", "2000000"}) {
    ::setenv("LAMINA_RANK_SPIN_US", bad, 1);
    try {
      RankWorkers workers(2);
      ADD_FAILURE() << "LAMINA_RANK_SPIN_US=" << bad << " was accepted";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("LAMINA_RANK_SPIN_US"), std::string::npos) << e.what();
    }
  }
  ::unsetenv("LAMINA_RANK_SPIN_US");
}

TEST(RankWorkers, RethrowsTheFirstErrorAndStaysUsable) {
  // A rank that fails because a peer failed first (its all-reduce gave up waiting) fails later:
  // the first error is the one that says what went wrong, whichever rank threw it.
  RankWorkers workers(3);
  for (size_t first : {2, 0, 1}) {
    // The others throw only once `first` is about to (however late its thread wakes), and 50 ms
    // later, which its throw and catch take a tiny part of.
    std::atomic<bool> first_throws{false};
    try {
      workers.run([&](size_t r) {
        if (r == first) {
          first_throws = true;
        } else {
          while (!first_throws) std::this_thread::yield();
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        throw std::runtime_error("rank " + std::to_string(r));
      });
      FAIL() << "no error came back";
    } catch (const std::runtime_error& e) {
      EXPECT_EQ(std::string(e.what()), "rank " + std::to_string(first));
    }
  }
  try {
    workers.run([](size_t r) {
      if (r == 1) throw std::runtime_error("rank 1 alone");
    });
    FAIL() << "no error came back";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "rank 1 alone");
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
