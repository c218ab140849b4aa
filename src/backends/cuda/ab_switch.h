// The CUDA backend's A/B switches (LAMINA_FUSED_ROPE, LAMINA_ARGMAX_SPLIT, ...): a path is on unless
// the environment sets its variable to "0". Callers that read it on a hot path keep the answer.
// And its tuning choices (LAMINA_ATTN_MMA_WARPS, ...): one of a few numbers.
#pragma once
#include <cstdlib>
#include <initializer_list>
#include <string>

#include "common/error.h"

namespace lamina::cuda {

inline bool ab_switch_on(const char* name) {
  const char* v = std::getenv(name);
  return !(v && std::string(v) == "0");
}

// The number the environment sets `name` to, one of `allowed`; `unset` where it is unset or empty.
// Anything else stops with a message that lists the allowed values.
inline int env_choice(const char* name, std::initializer_list<int> allowed, int unset) {
  const char* e = std::getenv(name);
  if (e == nullptr || *e == 0) return unset;
  std::string listed;
  for (int a : allowed) {
    if (std::to_string(a) == e) return a;
    listed += (listed.empty() ? "" : ", ") + std::to_string(a);
  }
  fail(name, " must be one of ", listed, ", not '", e, "'");
}

}  // namespace lamina::cuda
