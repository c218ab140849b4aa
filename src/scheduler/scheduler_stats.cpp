#include "scheduler/scheduler_stats.h"

#include <algorithm>
#include <limits>

namespace lamina {

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  const size_t b = size_t(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  ++counts_[b];
  ++count_;
  sum_ += v;
}

double Histogram::quantile(double q) const {
  if (count_ == 0) return 0;
  const double target = q * double(count_);
  uint64_t acc = 0;
  for (size_t b = 0; b < counts_.size(); ++b) {
    acc += counts_[b];
    if (double(acc) >= target) return b < bounds_.size() ? bounds_[b] : std::numeric_limits<double>::infinity();
  }
  return std::numeric_limits<double>::infinity();
}

}  // namespace lamina
