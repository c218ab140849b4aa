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
  return chunks;
}

}  // namespace lamina
