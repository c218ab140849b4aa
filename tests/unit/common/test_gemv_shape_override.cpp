// LAMINA_GEMV_SHAPES (backends/cuda/gemv_shape_override.h): the shape an entry names for a matrix,
// none for other matrices, and a clear error for a malformed entry or a shape that is no candidate.
#include "backends/cuda/gemv_shape_override.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace lamina::cuda {
namespace {

const std::vector<std::string> kPlain = {"R1 U1", "R1 U2", "R2 U1", "R2 U2", "R4 U1", "R4 U2", "R8 U1"};
const std::vector<std::string> kGateUp = {"R2 U1", "R2 U2", "R4 U1", "R8 U1"};

TEST(GemvShapeOverride, NamesTheShapeOfItsMatrixOnly) {
  const char* spec = "gemv:4096x2048=R8U1+gate_up:7168x4096=R4U1+gemv:4096x7168=R2U2";
  EXPECT_EQ(gemv_shape_override(spec, "gemv:4096x2048", kPlain), 6);
  EXPECT_EQ(gemv_shape_override(spec, "gemv:4096x7168", kPlain), 3);
  EXPECT_EQ(gemv_shape_override(spec, "gate_up:7168x4096", kGateUp), 2);
  EXPECT_EQ(gemv_shape_override(spec, "gemv:4096x4096", kPlain), -1);
  EXPECT_EQ(gemv_shape_override(spec, "gemv:4096x20480", kPlain), -1);  // no prefix match
  EXPECT_EQ(gemv_shape_override(spec, "gate_up:4096x2048", kGateUp), -1);
  EXPECT_EQ(gemv_shape_override(nullptr, "gemv:4096x2048", kPlain), -1);
  EXPECT_EQ(gemv_shape_override("", "gemv:4096x2048", kPlain), -1);
}

void expect_error(const char* spec, const std::string& matrix, const std::vector<std::string>& candidates,
                  const std::string& mentions) {
  try {
    gemv_shape_override(spec, matrix, candidates);
    ADD_FAILURE() << "accepted '" << spec << "'";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("LAMINA_GEMV_SHAPES"), std::string::npos) << what;
    EXPECT_NE(what.find(mentions), std::string::npos) << what;
  }
}

TEST(GemvShapeOverride, MalformedEntriesAndUnknownShapesAreErrors) {
  expect_error("gemv:4096x2048=R3U1", "gemv:4096x2048", kPlain, "R1U1, R1U2");
  expect_error("gate_up:7168x4096=R1U1", "gate_up:7168x4096", kGateUp, "'R1U1'");
  expect_error("gemv4096x2048=R8U1", "gemv:4096x2048", kPlain, "gemv4096x2048=R8U1");
  expect_error("gemv:4096x2048", "gemv:4096x2048", kPlain, "<gemv|gate_up>");
  expect_error("down:4096x2048=R8U1", "gemv:4096x2048", kPlain, "down:");
  expect_error("gemv:x2048=R8U1", "gemv:4096x2048", kPlain, "gemv:x2048");
  expect_error("gemv:4096x=R8U1", "gemv:4096x2048", kPlain, "gemv:4096x=");
  expect_error("gemv:40a6x2048=R8U1", "gemv:4096x2048", kPlain, "40a6");
  // A malformed entry is reported even where it would not have matched.
  expect_error("gemv:4096x2048=R8U1+oops", "gemv:4096x4096", kPlain, "'oops'");
}

}  // namespace
}  // namespace lamina::cuda
