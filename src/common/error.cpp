#include "common/error.h"

namespace lamina::detail {

void throw_check_failure(const char* file, int line, const char* cond, const std::string& msg) {
  std::ostringstream os;
  if (!msg.empty()) os << msg << " ";
  os << "(check failed: " << cond << " at " << file << ":" << line << ")";
  throw Error(os.str());
}

}  // namespace lamina::detail
