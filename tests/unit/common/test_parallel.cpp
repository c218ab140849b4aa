// parallel_for (common/parallel.h): every item is visited once, ranges are contiguous and
// disjoint, small loops stay on the calling thread, and a body's exception reaches the caller.
#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <thread>
#include <vector>

#include "common/parallel.h"

namespace lamina {
namespace {

TEST(ParallelFor, VisitsEveryItemOnce) {
  for (size_t n : {size_t(0), size_t(1), size_t(7), size_t(1000), size_t(123457)}) {
    std::vector<std::atomic<int>> seen(n);
    parallel_for(n, 10, [&](size_t b, size_t e) {
      ASSERT_LT(b, e);
      for (size_t i = b; i < e; ++i) ++seen[i];
    });
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(seen[i].load(), 1) << "n " << n << " item " << i;
  }
}

TEST(ParallelFor, SmallLoopsRunOnTheCallingThread) {
  const auto me = std::this_thread::get_id();
  int calls = 0;
  parallel_for(99, 100, [&](size_t b, size_t e) {
    EXPECT_EQ(std::this_thread::get_id(), me);
    EXPECT_EQ(b, 0u);
    EXPECT_EQ(e, 99u);
    ++calls;
  });
  EXPECT_EQ(calls, 1);
}

// The last range runs on a worker thread whenever there is more than one.
TEST(ParallelFor, RethrowsABodysException) {
  const size_t n = 1 << 20;
  EXPECT_THROW(parallel_for(n, 1, [&](size_t, size_t e) {
                 if (e == n) throw std::runtime_error("range failed");
               }),
               std::runtime_error);
}

}  // namespace
}  // namespace lamina
