// Filesystem helpers: atomic file writes and output directories that appear only when complete.
#pragma once
#include <filesystem>
#include <string>

namespace lamina {

namespace fs = std::filesystem;

// Writes bytes to path via "path.tmp.<pid>" + rename, so readers never see half a file.
void write_file_atomic(const std::string& path, const std::string& bytes);
std::string read_file(const std::string& path);

// An output directory built under a temporary sibling name and renamed into place by commit().
// If destroyed without commit() (an error was thrown), the temporary directory is removed, so a
// failed command never leaves a half-written output dir behind.
class StagedDir {
 public:
  explicit StagedDir(const fs::path& final_dir);
  ~StagedDir();
  StagedDir(const StagedDir&) = delete;
  StagedDir& operator=(const StagedDir&) = delete;

  const fs::path& path() const { return staging_; }  // write here
  void commit();                                     // replaces final_dir atomically(ish)

 private:
  fs::path final_;
  fs::path staging_;
  bool committed_ = false;
};

}  // namespace lamina
