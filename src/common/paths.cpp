#include "common/paths.h"

#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <fstream>
#include <sstream>

#include "common/error.h"

namespace lamina {

void write_file_atomic(const std::string& path, const std::string& bytes) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) fail("cannot write '", tmp, "': check that the directory exists and is writable");
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!out) fail("write to '", tmp, "' failed (disk full?)");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) fail("cannot rename '", tmp, "' to '", path, "': ", ec.message());
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot read '", path, "': file is missing or unreadable");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

namespace {

// A run killed outright (Ctrl-C, OOM) cannot remove its staging dir; the next run for the same
// output removes those whose process is gone.
void remove_stale_staging_dirs(const fs::path& parent, const std::string& prefix) {
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0) continue;
    const std::string pid_text = name.substr(prefix.size());
    if (pid_text.empty() || pid_text.find_first_not_of("0123456789") != std::string::npos) continue;
    const long pid = std::stol(pid_text);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH) fs::remove_all(e.path(), ec);
  }
}

}  // namespace

StagedDir::StagedDir(const fs::path& final_dir) : final_(fs::absolute(final_dir).lexically_normal()) {
  if (final_.filename().empty()) final_ = final_.parent_path();
  const fs::path parent = final_.parent_path();
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec) fail("cannot create directory '", parent.string(), "': ", ec.message());
  const std::string prefix = "." + final_.filename().string() + ".partial.";
  remove_stale_staging_dirs(parent, prefix);
  staging_ = parent / (prefix + std::to_string(::getpid()));
  fs::remove_all(staging_, ec);
  fs::create_directories(staging_, ec);
  if (ec) fail("cannot create directory '", staging_.string(), "': ", ec.message());
}

StagedDir::~StagedDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(staging_, ec);
  }
}

void StagedDir::commit() {
  std::error_code ec;
  if (fs::exists(final_)) {
    fs::remove_all(final_, ec);
    if (ec) fail("cannot replace existing '", final_.string(), "': ", ec.message());
  }
  fs::rename(staging_, final_, ec);
  if (ec) fail("cannot move '", staging_.string(), "' to '", final_.string(), "': ", ec.message());
  committed_ = true;
}

}  // namespace lamina
