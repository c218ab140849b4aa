// lamina inspect DIR: what a checkpoint or engine directory holds.
#include <cstdio>
#include <filesystem>

#include "commands.h"
#include "common/error.h"
#include "common/json.h"
#include "io/engine_file.h"
#include "io/tensor_source.h"

namespace lamina::cli {

namespace {

void print_tensor(const std::string& name, DType dt, const std::vector<int64_t>& shape, size_t bytes) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  s += "]";
  std::printf("  %-48s %-5s %-18s %10.3f MB\n", name.c_str(), dtype_safetensors_name(dt).c_str(), s.c_str(), bytes / 1e6);
}

void inspect(const std::string& dir_arg, bool tensors) {
  namespace fs = std::filesystem;
  const fs::path dir(dir_arg);
  if (!fs::exists(dir / "config.json")) fail("'", dir_arg, "' has no config.json: not a Lamina checkpoint or engine");
  const Json cfg = read_json_file((dir / "config.json").string());
  const bool engine = cfg.contains("build_config");
  std::printf("%s: %s\n", engine ? "engine" : "checkpoint", dir_arg.c_str());
  std::printf("%s\n", cfg.dump(2).c_str());
  double total = 0;
  for (int r = 0;; ++r) {
    const fs::path p = dir / ("rank" + std::to_string(r) + (engine ? ".engine" : ".safetensors"));
    if (!fs::exists(p)) break;
    std::printf("%s\n", p.filename().string().c_str());
    if (engine) {
      EngineFile f(p.string());
      for (const auto& [n, t] : f.tensors()) {
        total += double(t.bytes);
        if (tensors) print_tensor(n, t.dtype, t.shape, t.bytes);
      }
      std::printf("  %zu tensors\n", f.tensors().size());
    } else {
      TensorSource s = TensorSource::open_file(p.string());
      for (const auto& n : s.names()) {
        const TensorView& t = s.get(n);
        total += double(t.bytes);
        if (tensors) print_tensor(n, t.dtype, t.shape, t.bytes);
      }
      std::printf("  %zu tensors\n", s.names().size());
    }
  }
  std::printf("total weights: %.3f GB\n", total / 1e9);
}

}  // namespace

void register_inspect(CLI::App& app) {
  auto* sub = app.add_subcommand("inspect", "Print what a checkpoint or engine directory holds");
  auto dir = std::make_shared<std::string>();
  auto tensors = std::make_shared<bool>(false);
  sub->add_option("dir", *dir, "Checkpoint or engine directory")->required();
  sub->add_flag("--tensors", *tensors, "List every tensor");
  sub->callback([dir, tensors] { inspect(*dir, *tensors); });
}

}  // namespace lamina::cli
