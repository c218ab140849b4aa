// gtest main for the server tests, plus `test_server --make-engine DIR`: ctest's setup step
// builds the test engine once before the tests that start servers on it.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>

#include "server_process.h"

int main(int argc, char** argv) {
  if (argc == 3 && std::strcmp(argv[1], "--make-engine") == 0) {
    try {
      lamina::test::make_test_engine(argv[2]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 1;
    }
    return 0;
  }
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
