// The one place where scheduled chunks become the engine's per-step arrays: a StepBatch
// {ids, positions, seq_rows, block_tables, logit_rows}. Chunk i of the step is sequence row i; its
// block table is the request's block list in the KVBlockManager (kv.blocks(req->id)), so the
// engine reads and writes exactly the blocks the scheduler accounts for, and blocks shared by
// prefix reuse are the same physical KV for every request that holds them.
#pragma once
#include <vector>

#include "runtime/engine.h"
#include "scheduler/kv_block_manager.h"
#include "scheduler/micro_batch.h"

namespace lamina {

// The engine reads KV through the scheduler's block tables, so cached prefix blocks can be shared
// (--enable_kv_cache_reuse).
inline constexpr bool kEngineSharesKVBlocks = true;

struct ScheduledStep {
  StepBatch batch;                  // engine inputs: [T] tokens, one block table per chunk, [R] logit rows
  std::vector<Request*> row_owner;  // [R] the request each logit row samples for
};

ScheduledStep build_scheduled_step(const std::vector<ScheduledChunk>& chunks, const KVBlockManager& kv);

// Runs the step. Each logit row's token is chosen by choices[r] where the logits are; rows listed
// in host_rows also bring their float32 logits back for host-side sampling.
ChosenTokens run_step(Engine& engine, const ScheduledStep& step, const std::vector<TokenChoice>& choices,
                      const std::vector<int32_t>& host_rows);

}  // namespace lamina
