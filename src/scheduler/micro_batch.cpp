#include "scheduler/micro_batch.h"

#include <algorithm>

namespace lamina {

std::vector<ScheduledChunk> plan_micro_batch(const std::vector<Request*>& running, int max_num_tokens) {
  std::vector<ScheduledChunk> chunks;
  int budget = max_num_tokens;
  auto add = [&](Request* r, int count) {
    chunks.push_back({r, r->num_computed, count, r->num_computed + count == int(r->tokens.size())});
    budget -= count;
  };
  for (Request* r : running) {
    if (budget == 0) break;
    if (r->pending() == 1) add(r, 1);
  }
  for (Request* r : running) {
    if (budget == 0) break;
    if (r->pending() > 1) add(r, std::min(r->pending(), budget));
  }
  // Step order: prefill chunks first, then the decode tokens. The CUDA attention gives each run of
  // 64 consecutive step tokens of one sequence to its tiled prefill kernel and the other tokens to
  // the decode kernel, one token a block; decode tokens in front would shift every prompt off the
  // 64-token grid (a 64 x 128-token prefill step: 940 us of attention a layer against 194).
  std::stable_partition(chunks.begin(), chunks.end(), [](const ScheduledChunk& c) { return c.count > 1; });
  return chunks;
}

}  // namespace lamina
