// The official openai npm client against a live server (tests/server/openai_client.mjs). The
// package is installed into the build tree at test time; without node, npm or the registry the
// test skips.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>

#include "http_helpers.h"
#include "server_process.h"
#include "test_support.h"

namespace lamina::test {
namespace {

struct Shell {
  int code;
  std::string output;
};

Shell shell(const std::string& cmd) {
  Shell r{-1, ""};
  FILE* p = ::popen((cmd + " 2>&1").c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  for (size_t n; (n = std::fread(buf.data(), 1, buf.size(), p)) > 0;) r.output.append(buf.data(), n);
  const int status = ::pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  return r;
}

TEST(OpenAINodeClient, CompletionsChatErrorsAndAbort) {
  if (shell("node --version").code != 0 || shell("npm --version").code != 0) GTEST_SKIP() << "node/npm not found";
  const fs::path dir = fs::path(LAMINA_BINARY_DIR) / "tests/server/npm";
  fs::create_directories(dir);
  if (!fs::exists(dir / "node_modules/openai/package.json")) {
    const Shell install = shell("timeout 300 npm install --no-audit --no-fund --loglevel=error --prefix " +
                                dir.string() + " openai@4");
    if (install.code != 0) GTEST_SKIP() << "npm install openai failed (offline?):\n" << install.output;
  }
  // ESM resolves `openai` next to the script: run a copy from the install dir.
  fs::copy_file(source_dir() / "tests/server/openai_client.mjs", dir / "openai_client.mjs",
                fs::copy_options::overwrite_existing);
  ServerProcess server;
  const Shell run = shell("timeout 300 node " + (dir / "openai_client.mjs").string() + " " + server.base_url() + "/v1");
  EXPECT_EQ(run.code, 0) << run.output << "\nserver:\n" << server.output();
  EXPECT_NE(run.output.find("OK"), std::string::npos) << run.output;
  EXPECT_EQ(http_get(server.port(), "/health").status, 200);
}

}  // namespace
}  // namespace lamina::test
