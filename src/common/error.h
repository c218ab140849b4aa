// Errors: every failure a user can cause becomes a lamina::Error with a message that names
// the problem and what to do. LAMINA_CHECK adds file:line for internal invariants.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace lamina {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

namespace detail {
[[noreturn]] void throw_check_failure(const char* file, int line, const char* cond, const std::string& msg);

inline void append_all(std::ostringstream&) {}
template <typename T, typename... Rest>
void append_all(std::ostringstream& os, const T& first, const Rest&... rest) {
  os << first;
  append_all(os, rest...);
}
}  // namespace detail

// Builds a message from any streamable pieces: fail("tensor ", name, " has shape ", n).
template <typename... Parts>
[[noreturn]] void fail(const Parts&... parts) {
  std::ostringstream os;
  detail::append_all(os, parts...);
  throw Error(os.str());
}

}  // namespace lamina

#define LAMINA_CHECK(cond, ...)                                                         \
  do {                                                                                  \
    if (!(cond)) {                                                                      \
      std::ostringstream lamina_check_os_;                                              \
      ::lamina::detail::append_all(lamina_check_os_, "" __VA_OPT__(, ) __VA_ARGS__);    \
      ::lamina::detail::throw_check_failure(__FILE__, __LINE__, #cond, lamina_check_os_.str()); \
    }                                                                                   \
  } while (0)
