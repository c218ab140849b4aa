#include "io/safetensors.h"

#include <algorithm>
#include <cstring>
#include <sstream>

#include "common/error.h"
#include "common/json.h"

namespace lamina {

namespace {
constexpr uint64_t kMaxHeaderBytes = 100ull * 1024 * 1024;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::shape_str() const {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

SafetensorsFile::SafetensorsFile(const std::string& path) : file_(path) {
  const size_t size = file_.size();
  if (size < 8) fail("'", path, "' is not a safetensors file: ", size, " bytes is shorter than the 8-byte header length");
  uint64_t header_len = 0;
  std::memcpy(&header_len, file_.data(), 8);
  if (header_len > kMaxHeaderBytes)
    fail("'", path, "' is not a valid safetensors file: header length ", header_len, " exceeds 100 MB");
  if (8 + header_len > size)
    fail("'", path, "' is truncated: header needs ", header_len, " bytes but the file has ", size - 8);
  Json header;
  try {
    header = Json::parse(reinterpret_cast<const char*>(file_.data()) + 8,
                         reinterpret_cast<const char*>(file_.data()) + 8 + header_len);
  } catch (const nlohmann::json::parse_error& e) {
    fail("'", path, "' has a corrupt safetensors header (not JSON): ", e.what());
  }
  if (!header.is_object()) fail("'", path, "' has a corrupt safetensors header: not a JSON object");
  const uint8_t* data_start = file_.data() + 8 + header_len;
  const size_t data_size = size - 8 - header_len;
  std::vector<std::pair<size_t, size_t>> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (it->is_object())
        for (auto m = it->begin(); m != it->end(); ++m)
          metadata_[m.key()] = m->is_string() ? m->get<std::string>() : m->dump();
      continue;
    }
    const Json& e = *it;
    TensorView v;
    v.name = it.key();
    try {
      v.dtype = dtype_from_safetensors_name(e.at("dtype").get<std::string>());
      v.shape = e.at("shape").get<std::vector<int64_t>>();
      auto offs = e.at("data_offsets").get<std::vector<uint64_t>>();
      if (offs.size() != 2) fail("data_offsets must have two entries");
      if (offs[0] > offs[1] || offs[1] > data_size)
        fail("data_offsets [", offs[0], ", ", offs[1], "] run past the data section of ", data_size,
             " bytes (file truncated?)");
      for (int64_t d : v.shape)
        if (d < 0) fail("negative dimension in shape");
      v.bytes = offs[1] - offs[0];
      if (static_cast<uint64_t>(v.numel()) * dtype_size(v.dtype) != v.bytes)
        fail("shape ", v.shape_str(), " of ", dtype_safetensors_name(v.dtype), " needs ",
             v.numel() * static_cast<int64_t>(dtype_size(v.dtype)), " bytes but data_offsets give ", v.bytes);
      v.data = data_start + offs[0];
      ranges.emplace_back(offs[0], offs[1]);
    } catch (const Error& err) {
      fail("'", path, "': tensor '", v.name, "': ", err.what());
    } catch (const nlohmann::json::exception& err) {
      fail("'", path, "': tensor '", v.name, "' has a malformed header entry: ", err.what());
    }
    tensors_[v.name] = std::move(v);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i)
    if (ranges[i].first < ranges[i - 1].second) fail("'", path, "' is corrupt: two tensors overlap in the data section");
}

const TensorView& SafetensorsFile::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail("tensor '", name, "' is missing from '", path(), "'");
  return it->second;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<const TensorView*> all;
  for (auto& [_, v] : tensors_) all.push_back(&v);
  std::sort(all.begin(), all.end(), [](auto* a, auto* b) { return a->data < b->data; });
  std::vector<std::string> out;
  for (auto* v : all) out.push_back(v->name);
  return out;
}

size_t TensorDecl::bytes() const {
  size_t n = dtype_size(dtype);
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

SafetensorsWriter::SafetensorsWriter(const std::string& path, std::vector<TensorDecl> decls,
                                     const std::map<std::string, std::string>& metadata)
    : path_(path), decls_(std::move(decls)) {
  Json header = Json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const auto& d : decls_) {
    header[d.name] = {{"dtype", dtype_safetensors_name(d.dtype)}, {"shape", d.shape},
                      {"data_offsets", {offset, offset + d.bytes()}}};
    offset += d.bytes();
  }
  std::string text = header.dump();
  text.append((8 - (text.size() % 8)) % 8, ' ');  // keep the data section 8-byte aligned
  out_.open(path, std::ios::binary | std::ios::trunc);
  if (!out_) fail("cannot create '", path, "'");
  const uint64_t len = text.size();
  out_.write(reinterpret_cast<const char*>(&len), 8);
  out_.write(text.data(), static_cast<std::streamsize>(text.size()));
}

void SafetensorsWriter::write(const std::string& name, const void* data, size_t bytes) {
  LAMINA_CHECK(next_ < decls_.size(), "more tensors written than declared to ", path_);
  const TensorDecl& d = decls_[next_];
  LAMINA_CHECK(d.name == name, "tensor '", name, "' written out of order; expected '", d.name, "'");
  LAMINA_CHECK(d.bytes() == bytes, "tensor '", name, "' has ", bytes, " bytes, declared ", d.bytes());
  out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  if (!out_) fail("write to '", path_, "' failed (disk full?)");
  ++next_;
}

void SafetensorsWriter::close() {
  if (!out_.is_open()) return;
  LAMINA_CHECK(next_ == decls_.size(), "only ", next_, " of ", decls_.size(), " tensors written to ", path_);
  out_.close();
  if (out_.fail()) fail("closing '", path_, "' failed (disk full?)");
}

SafetensorsWriter::~SafetensorsWriter() {
  if (out_.is_open()) out_.close();
}

}  // namespace lamina
