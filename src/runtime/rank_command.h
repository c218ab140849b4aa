// What the leader process of an mpirun job asks of its followers (docs/tensor-parallel.md): run
// a step, send back a part of the last step's output, or stop. Each command travels as one packed
// int32 array (MPI_Bcast); every call mirrors one LlamaForward call the in-process engine makes
// on each rank, so the two paths stay the same computation.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "model/llama_forward.h"

namespace lamina {

enum class RankCall : int32_t {
  Shutdown = 0,     // leave the follower loop
  Step = 1,         // LlamaForward::step(batch)
  Logits = 2,       // reply logits_f32(rows): [rows, vocab_per_rank] float32
  LogitRows = 3,    // reply logit_rows_f32(row_list): [row_list.size(), vocab_per_rank] float32
  SliceArgmax = 4,  // reply slice_argmax(rows): [rows] SliceArgmax
};

struct RankCommand {
  RankCall call = RankCall::Shutdown;
  int32_t rows = 0;               // Logits, SliceArgmax
  std::vector<int32_t> row_list;  // LogitRows
  StepBatch batch;                // Step
};

std::vector<int32_t> pack_rank_command(const RankCommand& c);
// The inverse; a truncated or malformed array is an Error (never a read past its end).
RankCommand unpack_rank_command(const int32_t* data, size_t n);

}  // namespace lamina
