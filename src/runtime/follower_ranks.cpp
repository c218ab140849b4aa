#include "runtime/follower_ranks.h"

#include "common/error.h"

namespace lamina {

namespace {

// A command is its length, then its packed values: two broadcasts, as the followers cannot know
// the length in advance.
void broadcast_command(MpiSession& mpi, const RankCommand& c) {
  std::vector<int32_t> packed = pack_rank_command(c);
  int64_t n = int64_t(packed.size());
  mpi.broadcast(&n, sizeof(n));
  mpi.broadcast(packed.data(), packed.size() * sizeof(int32_t));
}

RankCommand receive_command(MpiSession& mpi) {
  int64_t n = 0;
  mpi.broadcast(&n, sizeof(n));
  if (n < 0 || n > (int64_t(1) << 31)) fail("a tensor-parallel step command of ", n, " values is malformed");
  std::vector<int32_t> packed(static_cast<size_t>(n));
  mpi.broadcast(packed.data(), packed.size() * sizeof(int32_t));
  return unpack_rank_command(packed.data(), packed.size());
}

}  // namespace

FollowerRanks::~FollowerRanks() {
  try {
    shutdown();
  } catch (const std::exception& e) {
    mpi_.abort_after_error(std::string("stopping the followers failed: ") + e.what());
  }
}

void FollowerRanks::send(const RankCommand& c) {
  LAMINA_CHECK(!shut_down_, "the engine's follower processes were shut down");
  broadcast_command(mpi_, c);
}

void FollowerRanks::step(const StepBatch& batch) {
  RankCommand c;
  c.call = RankCall::Step;
  c.batch = batch;
  send(c);
}

std::vector<std::vector<float>> FollowerRanks::gather_floats(const std::vector<float>& mine) {
  const size_t n = mine.size(), world = size_t(mpi_.world_size());
  std::vector<float> all(n * world);
  mpi_.gather_floats(mine.data(), n, all.data());
  std::vector<std::vector<float>> parts(world);
  for (size_t r = 0; r < world; ++r) parts[r].assign(all.begin() + long(r * n), all.begin() + long((r + 1) * n));
  return parts;
}

std::vector<std::vector<float>> FollowerRanks::logits(int rows, const std::vector<float>& mine) {
  RankCommand c;
  c.call = RankCall::Logits;
  c.rows = rows;
  send(c);
  return gather_floats(mine);
}

std::vector<std::vector<float>> FollowerRanks::logit_rows(const std::vector<int32_t>& rows,
                                                          const std::vector<float>& mine) {
  RankCommand c;
  c.call = RankCall::LogitRows;
  c.row_list = rows;
  send(c);
  return gather_floats(mine);
}

std::vector<std::vector<SliceArgmax>> FollowerRanks::slice_argmax(int rows, const std::vector<SliceArgmax>& mine) {
  RankCommand c;
  c.call = RankCall::SliceArgmax;
  c.rows = rows;
  send(c);
  const size_t world = size_t(mpi_.world_size());
  std::vector<SliceArgmax> all(mine.size() * world);
  mpi_.gather_bytes(mine.data(), mine.size() * sizeof(SliceArgmax), all.data());
  std::vector<std::vector<SliceArgmax>> parts(world);
  for (size_t r = 0; r < world; ++r)
    parts[r].assign(all.begin() + long(r * mine.size()), all.begin() + long((r + 1) * mine.size()));
  return parts;
}

void FollowerRanks::shutdown() {
  if (shut_down_) return;
  broadcast_command(mpi_, RankCommand{});  // RankCall::Shutdown
  shut_down_ = true;
}

void follow_leader(MpiSession& mpi, LlamaForward& forward) {
  try {
    for (;;) {
      const RankCommand c = receive_command(mpi);
      switch (c.call) {
        case RankCall::Shutdown:
          return;
        case RankCall::Step:
          forward.step(c.batch);
          break;
        case RankCall::Logits: {
          const std::vector<float> part = forward.logits_f32(c.rows);
          mpi.gather_floats(part.data(), part.size(), nullptr);
          break;
        }
        case RankCall::LogitRows: {
          const std::vector<float> part = forward.logit_rows_f32(c.row_list);
          mpi.gather_floats(part.data(), part.size(), nullptr);
          break;
        }
        case RankCall::SliceArgmax: {
          const std::vector<SliceArgmax> part = forward.slice_argmax(c.rows);
          mpi.gather_bytes(part.data(), part.size() * sizeof(SliceArgmax), nullptr);
          break;
        }
      }
    }
  } catch (const std::exception& e) {
    mpi.abort_after_error(e.what());
  }
}

}  // namespace lamina
