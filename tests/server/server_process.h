// Test harness for `lamina serve`: builds a small engine that has a tokenizer, starts the server
// as a child process on 127.0.0.1 (a free port it picks itself), and stops it with a signal.
#pragma once
#include <sys/types.h>

#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace lamina::test {

namespace fs = std::filesystem;

// The engine the server tests use: the bundled models/lamina-tiny-llama when it is there, else
// the golden fixture gqa_f32_hub with the tiny tokenizer of tests/fixtures/server/. Set
// LAMINA_SERVER_TEST_MODEL=fixture to force the second. Built with max_batch_size 8,
// max_input_len 128, max_seq_len 256.
void make_test_engine(const fs::path& out_dir);
// The engine dir the tests use; built on first use when ctest's setup step has not made it.
fs::path test_engine_dir();

class ServerProcess {
 public:
  // Starts `lamina serve --engine_dir ENGINE --port 0 --device cpu EXTRA...` and waits (bounded)
  // until it answers /health. Throws std::runtime_error with the server's output on failure.
  explicit ServerProcess(const std::vector<std::string>& extra_args = {});
  ~ServerProcess();  // SIGKILL if still running
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }
  pid_t pid() const { return pid_; }
  // Sends sig and waits up to timeout_s for the exit; returns the exit code (-1: still running,
  // 128 + n: killed by signal n).
  int signal_and_wait(int sig, double timeout_s);
  std::string output() const;  // what it printed so far (stdout + stderr)

 private:
  void wait_until_serving();

  pid_t pid_ = -1;
  int port_ = 0;
  int out_fd_ = -1;
  std::thread reader_;
  mutable std::mutex mu_;
  std::string output_;
  bool exited_ = false;
  int exit_code_ = -1;
};

}  // namespace lamina::test
