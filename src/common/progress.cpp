#include "common/progress.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace lamina {

Progress::Progress(std::string label, size_t total)
    : label_(std::move(label)), total_(total), tty_(::isatty(STDERR_FILENO) != 0), start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() { finish(); }

void Progress::advance(size_t n, const std::string& detail) {
  done_ += n;
  if (tty_) draw(detail);
}

void Progress::draw(const std::string& detail) {
  const int width = 30;
  const double frac = total_ ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
  const int filled = static_cast<int>(frac * width);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::string bar(static_cast<size_t>(filled), '#');
  bar.append(static_cast<size_t>(width - filled), '.');
  std::fprintf(stderr, "\r%s [%s] %zu/%zu %5.1fs %-40.40s", label_.c_str(), bar.c_str(), done_, total_, secs,
               detail.c_str());
  std::fflush(stderr);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (tty_) std::fprintf(stderr, "\n");
}

void log_info(const std::string& msg) {
  const char* quiet = std::getenv("LAMINA_QUIET");
  if (quiet && quiet[0] == '1') return;
  std::fprintf(stderr, "[lamina] %s\n", msg.c_str());
}

void log_warn(const std::string& msg) { std::fprintf(stderr, "[lamina] warning: %s\n", msg.c_str()); }

}  // namespace lamina
