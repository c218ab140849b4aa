// Helpers shared by the tests: fixture paths, scratch dirs, comparing logits, running the CLI.
#pragma once
#include <cmath>
#include <filesystem>
#include <cstdint>
#include <string>
#include <vector>

namespace lamina::test {

namespace fs = std::filesystem;

inline fs::path source_dir() { return LAMINA_SOURCE_DIR; }
inline fs::path golden_dir(const std::string& name) { return source_dir() / "tests/fixtures/golden" / name; }
inline fs::path lamina_binary() { return fs::path(LAMINA_BINARY_DIR) / "tools/lamina/lamina"; }

// A fresh directory under the build tree, removed when the object dies.
class ScratchDir {
 public:
  explicit ScratchDir(const std::string& tag);
  ~ScratchDir();
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& s) const { return path_ / s; }

 private:
  fs::path path_;
};

// ||a - b|| / ||b||
double rel_l2(const std::vector<float>& a, const std::vector<float>& b);

// Greedy ids against a reference's: they must stay identical while the reference's top-2 margin
// exceeds `clear`; at the first difference, that step's margin must be a near-tie (then the
// sequences may legitimately part and comparing stops). Returns how many steps agreed.
size_t expect_greedy_agrees(const std::vector<int32_t>& got, const std::vector<int32_t>& want,
                            const std::vector<double>& margins, double clear, const std::string& what);

struct CommandResult {
  int exit_code;
  std::string output;  // stdout + stderr
};
// Runs a shell command and captures what it printed (stdout + stderr).
CommandResult run_shell(const std::string& command);
// Runs `lamina ARGS` through the shell and captures what it printed.
CommandResult run_lamina(const std::string& args);

}  // namespace lamina::test
