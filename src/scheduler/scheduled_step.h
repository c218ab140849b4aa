// The one place where scheduled chunks become the engine's per-step arrays. Today the engine
// places KV by slot (Engine::step(ids, positions, slots, logit_rows)). When it takes the runtime's
// StepBatch {ids, positions, seq_rows, block_tables, logit_rows} instead, only this file changes:
// ScheduledStep holds a StepBatch in place of the four arrays, build_scheduled_step fills
// seq_rows and block_tables from kv.blocks(req->id), run_step passes it on, and
// kEngineSharesKVBlocks turns prefix reuse on.
#pragma once
#include <vector>

#include "runtime/engine.h"
#include "scheduler/kv_block_manager.h"
#include "scheduler/micro_batch.h"

namespace lamina {

// Engine-side prefix reuse needs block tables; with slots every sequence computes its own prefix.
inline constexpr bool kEngineSharesKVBlocks = false;

struct ScheduledStep {
  // Engine inputs.
  std::vector<int32_t> ids;         // [T] token ids
  std::vector<int32_t> positions;   // [T] position of each token in its sequence
  std::vector<int32_t> slots;       // [T] KV slot of each token's sequence
  std::vector<int32_t> logit_rows;  // [R] rows of the step whose logits are wanted
  // Scheduler side.
  std::vector<Request*> row_owner;  // [R] the request each logit row samples for
};

ScheduledStep build_scheduled_step(const std::vector<ScheduledChunk>& chunks, const KVBlockManager& kv);

// Runs the step. Each logit row's token is chosen by choices[r] where the logits are; rows listed
// in host_rows also bring their float32 logits back for host-side sampling.
ChosenTokens run_step(Engine& engine, const ScheduledStep& step, const std::vector<TokenChoice>& choices,
                      const std::vector<int32_t>& host_rows);

}  // namespace lamina
