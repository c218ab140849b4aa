// A progress bar on a TTY (stderr), silent otherwise, like TensorRT-LLM's converters.
#pragma once
#include <chrono>
#include <cstddef>
#include <string>

namespace lamina {

class Progress {
 public:
  Progress(std::string label, size_t total);
  ~Progress();
  void advance(size_t n = 1, const std::string& detail = "");
  void finish();

 private:
  void draw(const std::string& detail);
  std::string label_;
  size_t total_;
  size_t done_ = 0;
  bool tty_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
};

// Logging to stderr with a [lamina] prefix; LAMINA_QUIET=1 silences info lines.
void log_info(const std::string& msg);
void log_warn(const std::string& msg);

}  // namespace lamina
