// Stop strings over streamed text (OpenAI's `stop`): the text before the first stop string is
// emitted, the stop string and everything after it are not. push() holds back any tail that could
// still grow into a stop string, so a stop split across tokens is never half-sent.
#pragma once
#include <string>
#include <vector>

namespace lamina::server {

class StopMatcher {
 public:
  explicit StopMatcher(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  std::string push(const std::string& text);  // text that is safe to send now
  std::string flush();                         // at the end: whatever was held back
  bool stopped() const { return stopped_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  bool stopped_ = false;
};

}  // namespace lamina::server
