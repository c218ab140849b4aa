#include "scheduler/scheduled_step.h"

#include "common/error.h"

namespace lamina {

ScheduledStep build_scheduled_step(const std::vector<ScheduledChunk>& chunks, const KVBlockManager& kv) {
  ScheduledStep s;
  StepBatch& b = s.batch;
  for (const ScheduledChunk& c : chunks) {
    const Request& r = *c.req;
    LAMINA_CHECK(r.slot >= 0, "request ", r.id, " is scheduled without a KV slot");
    const std::vector<int>& blocks = kv.blocks(r.id);
    LAMINA_CHECK(kv.blocks_for(c.begin + c.count) <= int(blocks.size()), "request ", r.id,
                 " is scheduled past its KV blocks");
    const auto row = int32_t(b.block_tables.size());
    b.block_tables.emplace_back(blocks.begin(), blocks.end());
    for (int i = c.begin; i < c.begin + c.count; ++i) {
      b.ids.push_back(r.tokens[size_t(i)]);
      b.positions.push_back(i);
      b.seq_rows.push_back(row);
    }
    if (c.samples) {
      b.logit_rows.push_back(int32_t(b.ids.size()) - 1);
      s.row_owner.push_back(c.req);
    }
  }
  return s;
}

ChosenTokens run_step(Engine& engine, const ScheduledStep& step, const std::vector<TokenChoice>& choices,
                      const std::vector<int32_t>& host_rows) {
  return engine.step_and_choose(step.batch, choices, host_rows);
}

}  // namespace lamina
