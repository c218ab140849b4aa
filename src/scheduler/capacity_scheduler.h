// The capacity scheduler: which requests hold KV memory. It admits queued requests while their
// blocks (and an engine slot) are free and, under MaxUtilization, preempts the newest running
// request when an older one needs a block that is not there. It never looks at the per-step token
// budget: that is the micro-batch scheduler's job (micro_batch.h), as in TensorRT-LLM.
#pragma once
#include <string>
#include <vector>

#include "scheduler/kv_block_manager.h"
#include "scheduler/request.h"

namespace lamina {

enum class CapacityPolicy {
  GuaranteedNoEvict,  // admit only when blocks for prompt + max_tokens are free; never preempt
  MaxUtilization,     // admit when the prompt's blocks are free; preempt (recompute) on shortage
};
CapacityPolicy parse_capacity_policy(const std::string& s);  // "guaranteed_no_evict" | "max_utilization"
const char* capacity_policy_name(CapacityPolicy p);

class CapacityScheduler {
 public:
  // num_slots: sequences the engine holds at once (each slot has max_seq_len KV rows).
  CapacityScheduler(CapacityPolicy policy, const KVCacheOptions& kv, int num_slots);

  // Gives r its KV blocks and a slot if the policy allows it now; sets r.num_computed to the
  // reused prefix and r.state to Prefilling. False (nothing changed) if it does not fit.
  bool try_admit(Request& r, uint64_t admitted_seq);

  // Before a step: every decoding request in `running` (oldest first) gets the block for its next
  // token. When none is free (MaxUtilization only), the newest running request is preempted:
  // its KV is freed, it goes back to Queued with num_computed = 0 and will recompute
  // prompt + generated tokens. Preempted requests leave `running` and are returned, newest first.
  std::vector<Request*> make_room_for_decode(std::vector<Request*>& running);

  // Blocks for r's first `tokens` tokens, taken before the step that needs them is planned the
  // usual way (the overlapped next step, scheduler.h); false, with r's blocks as they were, when
  // the pool has none to spare. Under GuaranteedNoEvict admission reserved them already.
  bool reserve_ahead(const Request& r, int tokens);
  void commit(const Request& r);  // r.num_computed tokens have KV: publish full blocks for reuse
  void release(Request& r);       // frees r's blocks and slot at once

  CapacityPolicy policy() const { return policy_; }
  const KVBlockManager& kv() const { return kv_; }
  int num_free_slots() const { return int(free_slots_.size()); }

 private:
  int admission_reserve(const Request& r) const;  // tokens whose blocks admission takes
  void preempt(Request& r);

  CapacityPolicy policy_;
  KVBlockManager kv_;
  std::vector<int> free_slots_;
};

}  // namespace lamina
