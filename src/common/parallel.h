// Data-parallel loops for the host's bulk work (quantizing and converting checkpoints): [0, n) is
// cut into at most one contiguous range per worker (up to 16, and never below min_chunk items a
// range) and body(begin, end) runs on each, the calling thread taking the first. Ranges are
// disjoint, so bodies that write only their own items need no locks. An exception from a body is
// rethrown on the calling thread after every worker has finished.
#pragma once
#include <cstddef>
#include <functional>

namespace lamina {

void parallel_for(size_t n, size_t min_chunk, const std::function<void(size_t begin, size_t end)>& body);

}  // namespace lamina
