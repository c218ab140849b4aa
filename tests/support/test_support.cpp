#include "test_support.h"

#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cstdio>
#include <stdexcept>

#include <gtest/gtest.h>

namespace lamina::test {

ScratchDir::ScratchDir(const std::string& tag) {
  static std::atomic<int> counter{0};
  path_ = fs::path(LAMINA_BINARY_DIR) / "test-scratch" /
          (tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
  fs::remove_all(path_);
  fs::create_directories(path_);
}

ScratchDir::~ScratchDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return INFINITY;
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return std::sqrt(num / (den > 0 ? den : 1));
}

size_t expect_greedy_agrees(const std::vector<int32_t>& got, const std::vector<int32_t>& want,
                            const std::vector<double>& margins, double clear, const std::string& what) {
  EXPECT_EQ(got.size(), want.size()) << what;
  size_t i = 0;
  for (; i < std::min(got.size(), want.size()); ++i) {
    if (got[i] == want[i]) continue;
    EXPECT_LT(margins.at(i), clear) << what << ": greedy id differs at step " << i << " (" << got[i] << " vs "
                                    << want[i] << ") where the reference's top-2 margin " << margins.at(i)
                                    << " is clear";
    break;
  }
  return i;
}

CommandResult run_lamina(const std::string& args) {
  return run_shell("LAMINA_QUIET=1 " + lamina_binary().string() + " " + args);
}

CommandResult run_shell(const std::string& command) {
  const std::string cmd = command + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) throw std::runtime_error("popen failed");
  CommandResult r{0, ""};
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), p)) > 0) r.output.append(buf.data(), n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return r;
}

}  // namespace lamina::test
