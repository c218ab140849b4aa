// The two sides of a multi-process engine (mpirun -n N, docs/tensor-parallel.md). Process 0, the
// leader, holds rank 0 and drives the step; process r, a follower, holds rank r only and does
// what the leader's commands (runtime/rank_command.h) say. Commands go by MPI_Bcast; replies come
// back to the leader by MPI_Gather, rank 0's own part included, so they arrive in rank order.
// The all-reduces inside a step go through the engine's communicator (NCCL or MPI), not here.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "model/llama_forward.h"
#include "ops/token_choice.h"
#include "runtime/mpi_session.h"
#include "runtime/rank_command.h"

namespace lamina {

// The leader's view of its followers.
class FollowerRanks {
 public:
  explicit FollowerRanks(MpiSession& mpi) : mpi_(mpi) {}
  ~FollowerRanks();  // shuts the followers down

  // Every follower runs LlamaForward::step(batch) on its rank.
  void step(const StepBatch& batch);
  // Every rank's part of the last step's output, in rank order; `mine` is rank 0's (this
  // process's), the others come from the followers.
  std::vector<std::vector<float>> logits(int rows, const std::vector<float>& mine);
  std::vector<std::vector<float>> logit_rows(const std::vector<int32_t>& rows, const std::vector<float>& mine);
  std::vector<std::vector<SliceArgmax>> slice_argmax(int rows, const std::vector<SliceArgmax>& mine);
  // The followers leave their loop (once; later calls do nothing).
  void shutdown();
  MpiSession& mpi() { return mpi_; }

 private:
  void send(const RankCommand& c);
  std::vector<std::vector<float>> gather_floats(const std::vector<float>& mine);
  MpiSession& mpi_;
  bool shut_down_ = false;
};

// A follower's loop: runs `forward` (this process's rank) as the leader's commands say until it
// shuts down. Any error ends the whole job (MpiSession::abort_after_error): the other ranks would
// otherwise wait for this one's all-reduces and replies forever.
void follow_leader(MpiSession& mpi, LlamaForward& forward);

}  // namespace lamina
