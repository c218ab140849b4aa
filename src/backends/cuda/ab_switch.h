// The CUDA backend's A/B switches (LAMINA_FUSED_ROPE, LAMINA_ARGMAX_SPLIT, ...): a path is on unless
// the environment sets its variable to "0". Callers that read it on a hot path keep the answer.
#pragma once
#include <cstdlib>
#include <string>

namespace lamina::cuda {

inline bool ab_switch_on(const char* name) {
  const char* v = std::getenv(name);
  return !(v && std::string(v) == "0");
}

}  // namespace lamina::cuda
