#include <gtest/gtest.h>

#include <fstream>

#include "common/error.h"
#include "common/paths.h"
#include "test_support.h"

namespace lamina {

TEST(StagedDir, AppearsOnlyOnCommit) {
  test::ScratchDir s("staged");
  {
    StagedDir d(s / "out");
    std::ofstream(d.path() / "x") << "1";
    EXPECT_FALSE(fs::exists(s / "out"));
    d.commit();
  }
  EXPECT_TRUE(fs::exists(s / "out/x"));
}

TEST(StagedDir, RemovedWhenAbandoned) {
  test::ScratchDir s("staged");
  fs::path staging;
  try {
    StagedDir d(s / "out");
    staging = d.path();
    std::ofstream(d.path() / "x") << "1";
    fail("simulated failure half way");
  } catch (const Error&) {
  }
  EXPECT_FALSE(fs::exists(staging));
  EXPECT_FALSE(fs::exists(s / "out"));
}

TEST(StagedDir, StaleStagingOfADeadProcessIsRemoved) {
  test::ScratchDir s("staged");
  const fs::path stale = s / ".out.partial.2147483646";  // no such process
  fs::create_directories(stale);
  StagedDir d(s / "out");
  EXPECT_FALSE(fs::exists(stale));
  EXPECT_TRUE(fs::exists(d.path()));
}

}  // namespace lamina
