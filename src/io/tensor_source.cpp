#include "io/tensor_source.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "common/error.h"
#include "common/json.h"

namespace lamina {

namespace fs = std::filesystem;

TensorSource TensorSource::open_file(const std::string& path) {
  TensorSource s;
  s.description_ = "'" + path + "'";
  auto f = std::make_shared<SafetensorsFile>(path);
  for (const auto& n : f->names()) s.where_[n] = f.get();
  s.files_.push_back(std::move(f));
  return s;
}

TensorSource TensorSource::open_hf_dir(const std::string& dir) {
  TensorSource s;
  s.description_ = "checkpoint '" + dir + "'";
  const fs::path d(dir);
  std::vector<std::string> paths;
  const fs::path index = d / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const Json j = read_json_file(index.string());
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      fail("'", index.string(), "' has no weight_map object");
    std::set<std::string> unique;
    for (auto it = j["weight_map"].begin(); it != j["weight_map"].end(); ++it) unique.insert(it->get<std::string>());
    for (const auto& f : unique) {
      const fs::path p = d / f;
      if (!fs::exists(p)) fail("shard '", p.string(), "' listed in ", index.string(), " is missing");
      paths.push_back(p.string());
    }
  } else if (fs::exists(d / "model.safetensors")) {
    paths.push_back((d / "model.safetensors").string());
  } else if (fs::is_directory(d)) {
    for (const auto& e : fs::directory_iterator(d))
      if (e.path().extension() == ".safetensors") paths.push_back(e.path().string());
    std::sort(paths.begin(), paths.end());
  }
  if (paths.empty())
    fail("no safetensors weights in '", dir, "': expected model.safetensors or model.safetensors.index.json "
         "(.bin/.pth checkpoints are not supported; re-save with safe_serialization=True)");
  for (const auto& p : paths) {
    auto f = std::make_shared<SafetensorsFile>(p);
    for (const auto& n : f->names()) {
      if (s.where_.count(n)) fail("tensor '", n, "' appears in two files of '", dir, "'");
      s.where_[n] = f.get();
    }
    s.files_.push_back(std::move(f));
  }
  return s;
}

const TensorView& TensorSource::get(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) fail("tensor '", name, "' is missing from ", description_);
  return it->second->get(name);
}

std::vector<std::string> TensorSource::names() const {
  std::vector<std::string> out;
  for (const auto& [n, _] : where_) out.push_back(n);
  return out;
}

}  // namespace lamina
