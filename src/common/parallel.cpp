#include "common/parallel.h"

#include <algorithm>
#include <exception>
#include <thread>
#include <vector>

namespace lamina {

void parallel_for(size_t n, size_t min_chunk, const std::function<void(size_t begin, size_t end)>& body) {
  if (n == 0) return;
  const size_t hw = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  const size_t parts = std::max<size_t>(1, std::min(hw, n / std::max<size_t>(1, min_chunk)));
  if (parts == 1) return body(0, n);
  const size_t step = (n + parts - 1) / parts;
  std::vector<std::exception_ptr> errors(parts);
  auto run = [&](size_t p) {
    try {
      const size_t begin = p * step, end = std::min(n, begin + step);
      if (begin < end) body(begin, end);
    } catch (...) {
      errors[p] = std::current_exception();
    }
  };
  std::vector<std::thread> workers;
  for (size_t p = 1; p < parts; ++p) workers.emplace_back(run, p);
  run(0);
  for (auto& t : workers) t.join();
  for (auto& e : errors)
    if (e) std::rethrow_exception(e);
}

}  // namespace lamina
