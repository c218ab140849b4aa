#include "server_process.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <httplib.h>
#include <stdexcept>

#include "test_support.h"

namespace lamina::test {

namespace {

using Clock = std::chrono::steady_clock;

bool use_bundled_model() {
  const char* force = std::getenv("LAMINA_SERVER_TEST_MODEL");
  if (force && std::string(force) == "fixture") return false;
  const fs::path m = source_dir() / "models/lamina-tiny-llama";
  return fs::exists(m / "model.safetensors") && fs::exists(m / "tokenizer.json") && fs::exists(m / "config.json");
}

void run_or_throw(const std::string& args) {
  const CommandResult r = run_lamina(args);
  if (r.exit_code != 0) throw std::runtime_error("lamina " + args + " failed:\n" + r.output);
}

}  // namespace

void make_test_engine(const fs::path& out_dir) {
  const bool bundled = use_bundled_model();
  const fs::path model = bundled ? source_dir() / "models/lamina-tiny-llama" : golden_dir("gqa_f32_hub");
  const fs::path ckpt = out_dir.parent_path() / (out_dir.filename().string() + ".ckpt");
  run_or_throw("convert --model_dir " + model.string() + " --output_dir " + ckpt.string() + " --dtype float32");
  std::string build = "build --checkpoint_dir " + ckpt.string() + " --output_dir " + out_dir.string() +
                      " --max_batch_size 8 --max_input_len 128 --max_seq_len 256";
  if (!bundled) build += " --tokenizer_dir " + (source_dir() / "tests/fixtures/server").string();
  run_or_throw(build);
  fs::remove_all(ckpt);
}

fs::path test_engine_dir() {
  const fs::path dir = fs::path(LAMINA_BINARY_DIR) / "tests/server/engine";
  if (fs::exists(dir / "config.json")) return dir;
  // Several test processes may get here at once: one builds, the others wait on the lock.
  fs::create_directories(dir.parent_path());
  const int fd = ::open((dir.string() + ".lock").c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0644);
  if (fd >= 0) ::flock(fd, LOCK_EX);
  if (!fs::exists(dir / "config.json")) make_test_engine(dir);
  if (fd >= 0) ::close(fd);
  return dir;
}

ServerProcess::ServerProcess(const std::vector<std::string>& extra_args) {
  const fs::path engine = test_engine_dir();
  std::vector<std::string> args = {lamina_binary().string(), "serve", "--engine_dir", engine.string(),
                                   "--host", "127.0.0.1", "--port", "0", "--device", "cpu"};
  args.insert(args.end(), extra_args.begin(), extra_args.end());

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {  // child: stdout + stderr into the pipe
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::setenv("OMP_NUM_THREADS", "1", 0);  // several servers and tests share two cores in CI
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  out_fd_ = fds[0];
  reader_ = std::thread([this] {
    char buf[4096];
    for (ssize_t n; (n = ::read(out_fd_, buf, sizeof buf)) > 0;) {
      std::lock_guard<std::mutex> lk(mu_);
      output_.append(buf, size_t(n));
    }
  });

  try {
    wait_until_serving();
  } catch (...) {  // the destructor will not run: clean up the child and the reader here
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    exited_ = true;
    reader_.join();
    ::close(out_fd_);
    throw;
  }
}

void ServerProcess::wait_until_serving() {
  // Bounded waits for "serving on http://127.0.0.1:PORT", then for /health.
  const std::string marker = "serving on http://127.0.0.1:";
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (port_ == 0) {
    {
      std::lock_guard<std::mutex> lk(mu_);
      const size_t at = output_.find(marker);
      if (at != std::string::npos && output_.find(' ', at + marker.size()) != std::string::npos)
        port_ = std::atoi(output_.c_str() + at + marker.size());
    }
    int status = 0;
    if (port_ == 0 && (::waitpid(pid_, &status, WNOHANG) == pid_ || Clock::now() > deadline))
      throw std::runtime_error("lamina serve did not start:\n" + output());
    if (port_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  httplib::Client cli("127.0.0.1", port_);
  for (int i = 0; i < 200; ++i) {
    if (auto r = cli.Get("/health"); r && r->status == 200) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  throw std::runtime_error("lamina serve does not answer /health:\n" + output());
}

int ServerProcess::signal_and_wait(int sig, double timeout_s) {
  if (exited_) return exit_code_;
  ::kill(pid_, sig);
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  while (Clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_code_;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return -1;
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0 && !exited_) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  if (reader_.joinable()) reader_.join();
  if (out_fd_ >= 0) ::close(out_fd_);
}

std::string ServerProcess::output() const {
  std::lock_guard<std::mutex> lk(mu_);
  return output_;
}

}  // namespace lamina::test
