// env_choice (backends/cuda/ab_switch.h): a tuning variable's number, one of the allowed ones;
// its default when unset or empty; anything else a clear error naming the variable and the values.
#include "backends/cuda/ab_switch.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <string>

namespace lamina::cuda {
namespace {

constexpr const char* kName = "LAMINA_TEST_ENV_CHOICE";

TEST(EnvChoice, AllowedValuesAndTheDefault) {
  unsetenv(kName);
  EXPECT_EQ(env_choice(kName, {2, 3, 4}, 3), 3);
  setenv(kName, "", 1);
  EXPECT_EQ(env_choice(kName, {2, 3, 4}, 3), 3);
  setenv(kName, "4", 1);
  EXPECT_EQ(env_choice(kName, {2, 3, 4}, 3), 4);
  setenv(kName, "1", 1);
  EXPECT_EQ(env_choice(kName, {1, 2, 4}, 0), 1);
  unsetenv(kName);
}

TEST(EnvChoice, OtherValuesNameTheVariableAndTheChoices) {
  for (const char* bad : {"5", "04", "two", " 2"}) {
    setenv(kName, bad, 1);
    try {
      env_choice(kName, {2, 4}, 2);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const Error& e) {
      const std::string what = e.what();
      EXPECT_NE(what.find(kName), std::string::npos) << what;
      EXPECT_NE(what.find("2, 4"), std::string::npos) << what;
      EXPECT_NE(what.find(std::string("'") + bad + "'"), std::string::npos) << what;
    }
  }
  unsetenv(kName);
}

}  // namespace
}  // namespace lamina::cuda
