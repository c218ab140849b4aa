// The commands the leader of an mpirun job broadcasts: packing and unpacking give back the same
// command, and a damaged array is an error, never a read past its end.
#include <gtest/gtest.h>

#include "common/error.h"
#include "runtime/rank_command.h"

namespace lamina {
namespace {

RankCommand step_command() {
  RankCommand c;
  c.call = RankCall::Step;
  c.batch.ids = {128000, 17, 42, 9};
  c.batch.positions = {0, 1, 2, 7};
  c.batch.seq_rows = {0, 0, 0, 1};
  c.batch.block_tables = {{3, 5}, {}, {0}};
  c.batch.logit_rows = {2, 3};
  return c;
}

void expect_same(const RankCommand& a, const RankCommand& b) {
  EXPECT_EQ(a.call, b.call);
  EXPECT_EQ(a.rows, b.rows);
  EXPECT_EQ(a.row_list, b.row_list);
  EXPECT_EQ(a.batch.ids, b.batch.ids);
  EXPECT_EQ(a.batch.positions, b.batch.positions);
  EXPECT_EQ(a.batch.seq_rows, b.batch.seq_rows);
  EXPECT_EQ(a.batch.block_tables, b.batch.block_tables);
  EXPECT_EQ(a.batch.logit_rows, b.batch.logit_rows);
}

TEST(RankCommand, EveryCallRoundTrips) {
  RankCommand logits;
  logits.call = RankCall::Logits;
  logits.rows = 7;
  RankCommand rows;
  rows.call = RankCall::LogitRows;
  rows.row_list = {4, 0, 2};
  RankCommand argmax;
  argmax.call = RankCall::SliceArgmax;
  argmax.rows = 256;
  for (const RankCommand& c : {step_command(), logits, rows, argmax, RankCommand{}}) {
    const std::vector<int32_t> packed = pack_rank_command(c);
    expect_same(unpack_rank_command(packed.data(), packed.size()), c);
  }
}

TEST(RankCommand, TruncatedOrDamagedArraysAreErrors) {
  const std::vector<int32_t> packed = pack_rank_command(step_command());
  for (size_t n = 0; n < packed.size(); ++n)
    EXPECT_THROW(unpack_rank_command(packed.data(), n), Error) << "truncated to " << n << " values";
  std::vector<int32_t> longer = packed;
  longer.push_back(0);
  EXPECT_THROW(unpack_rank_command(longer.data(), longer.size()), Error);
  std::vector<int32_t> bad_magic = packed;
  bad_magic[0] ^= 1;
  EXPECT_THROW(unpack_rank_command(bad_magic.data(), bad_magic.size()), Error);
  std::vector<int32_t> bad_call = packed;
  bad_call[1] = 99;
  EXPECT_THROW(unpack_rank_command(bad_call.data(), bad_call.size()), Error);
  std::vector<int32_t> bad_length = packed;
  bad_length[3] = 1 << 30;  // row_list claims more values than the array holds
  EXPECT_THROW(unpack_rank_command(bad_length.data(), bad_length.size()), Error);
  bad_length[3] = -1;
  EXPECT_THROW(unpack_rank_command(bad_length.data(), bad_length.size()), Error);
}

}  // namespace
}  // namespace lamina
