#include "scheduler/capacity_scheduler.h"

#include <algorithm>

#include "common/error.h"

namespace lamina {

CapacityPolicy parse_capacity_policy(const std::string& s) {
  if (s == "guaranteed_no_evict" || s == "GUARANTEED_NO_EVICT") return CapacityPolicy::GuaranteedNoEvict;
  if (s == "max_utilization" || s == "MAX_UTILIZATION") return CapacityPolicy::MaxUtilization;
  fail("unknown capacity policy '", s, "': use guaranteed_no_evict or max_utilization");
}

const char* capacity_policy_name(CapacityPolicy p) {
  return p == CapacityPolicy::GuaranteedNoEvict ? "guaranteed_no_evict" : "max_utilization";
}

CapacityScheduler::CapacityScheduler(CapacityPolicy policy, const KVCacheOptions& kv, int num_slots)
    : policy_(policy), kv_(kv) {
  if (num_slots < 1) fail("the scheduler needs at least one engine slot (got ", num_slots, ")");
  for (int s = num_slots - 1; s >= 0; --s) free_slots_.push_back(s);  // hand out slot 0 first
}

int CapacityScheduler::admission_reserve(const Request& r) const {
  // No-evict reserves the request's whole future; max-utilization only what is known now.
  if (policy_ == CapacityPolicy::GuaranteedNoEvict) return r.num_prompt + r.spec.max_tokens;
  return int(r.tokens.size());
}

bool CapacityScheduler::try_admit(Request& r, uint64_t admitted_seq) {
  LAMINA_CHECK(!r.running() && r.slot < 0, "request ", r.id, " is already admitted");
  if (free_slots_.empty()) return false;
  const int reserve = admission_reserve(r);
  if (!kv_.can_allocate(r.tokens, reserve)) return false;
  r.num_computed = kv_.allocate(r.id, r.tokens, reserve);
  r.slot = free_slots_.back();
  free_slots_.pop_back();
  r.admitted_seq = admitted_seq;
  r.state = RequestState::Prefilling;
  return true;
}

void CapacityScheduler::preempt(Request& r) {
  release(r);
  r.num_computed = 0;
  r.state = RequestState::Queued;
  ++r.preemptions;
}

std::vector<Request*> CapacityScheduler::make_room_for_decode(std::vector<Request*>& running) {
  std::vector<Request*> preempted;
  for (size_t i = 0; i < running.size(); ++i) {
    Request& r = *running[i];
    if (r.pending() != 1) continue;  // prefill chunks fit in the blocks taken at admission
    while (!kv_.reserve(r.id, r.num_computed + 1)) {
      LAMINA_CHECK(policy_ == CapacityPolicy::MaxUtilization,
                   "a no-evict request ran out of its reserved KV blocks (request ", r.id, ")");
      Request* victim = running.back();  // the newest: running is in admission order
      running.pop_back();
      preempt(*victim);
      preempted.push_back(victim);
      if (victim == &r) break;
    }
    if (i >= running.size()) break;  // r itself was preempted
  }
  return preempted;
}

bool CapacityScheduler::reserve_ahead(const Request& r, int tokens) { return kv_.reserve(r.id, tokens); }

void CapacityScheduler::commit(const Request& r) { kv_.commit(r.id, r.tokens, r.num_computed); }

void CapacityScheduler::release(Request& r) {
  kv_.free(r.id);
  if (r.slot >= 0) free_slots_.push_back(r.slot);
  r.slot = -1;
}

}  // namespace lamina
