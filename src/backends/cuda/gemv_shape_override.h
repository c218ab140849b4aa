// LAMINA_GEMV_SHAPES: the one-token GEMV launch shape for named matrices, instead of the tuned
// choice (gemv_tuner.h). The tuning times each matrix alone, back to back; inside a decode step a
// GEMV follows an attention or an all-reduce, so this lets an A/B run time another shape in place.
//   LAMINA_GEMV_SHAPES=gemv:4096x2048=R8U1+gate_up:7168x4096=R2U1
// Entries joined by '+', each <kind>:<N>x<K>=<shape>: kind gemv (plain) or gate_up (with its
// SwiGLU; N is the output width), shape a candidate's name without spaces (gemv_one_token_shapes).
#pragma once

#include <string>
#include <vector>

#include "common/error.h"

namespace lamina::cuda {

// The index in `candidates` that `spec` names for `matrix` ("gemv:4096x2048"); -1 where spec is
// null, empty or has no entry for it. A malformed entry, or a shape that is not a candidate, stops
// with a message naming the variable.
inline int gemv_shape_override(const char* spec, const std::string& matrix, const std::vector<std::string>& candidates) {
  if (spec == nullptr) return -1;
  const std::string s = spec;
  size_t begin = 0;
  while (begin < s.size()) {
    size_t end = s.find('+', begin);
    if (end == std::string::npos) end = s.size();
    const std::string entry = s.substr(begin, end - begin);
    begin = end + 1;
    const size_t eq = entry.find('=');
    const size_t colon = entry.find(':');
    const size_t times = entry.find('x', colon == std::string::npos ? 0 : colon);
    const auto digits = [&](size_t from, size_t to) {  // entry[from, to) is a number
      return from < to && entry.find_first_not_of("0123456789", from) >= to;
    };
    if (eq == std::string::npos || colon == std::string::npos || times == std::string::npos || times > eq ||
        !digits(colon + 1, times) || !digits(times + 1, eq) ||
        (entry.compare(0, colon, "gemv") != 0 && entry.compare(0, colon, "gate_up") != 0))
      fail("LAMINA_GEMV_SHAPES entry '", entry, "' is not <gemv|gate_up>:<N>x<K>=<shape> (e.g. gemv:4096x2048=R8U1)");
    if (entry.compare(0, eq, matrix) != 0) continue;
    const std::string shape = entry.substr(eq + 1);
    std::string listed;
    for (size_t i = 0; i < candidates.size(); ++i) {
      std::string name;
      for (char c : candidates[i])
        if (c != ' ') name += c;
      if (name == shape) return static_cast<int>(i);
      listed += (listed.empty() ? "" : ", ") + name;
    }
    fail("LAMINA_GEMV_SHAPES: '", shape, "' is not a shape of ", matrix, " (", listed, ")");
  }
  return -1;
}

}  // namespace lamina::cuda
