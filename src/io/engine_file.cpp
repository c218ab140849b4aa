#include "io/engine_file.h"

#include <atomic>
#include <cstring>
#include <thread>

#include "common/error.h"
#include "common/json.h"

namespace lamina {

namespace {
constexpr char kMagic[8] = {'L', 'A', 'M', 'I', 'N', 'A', 'E', 'N'};
constexpr uint64_t kDataStart = 4096;
constexpr uint64_t kAlign = 256;

struct Preamble {
  char magic[8];
  uint32_t version;
  uint32_t reserved;
  uint64_t table_offset;
  uint64_t table_bytes;
  uint64_t file_size;
  uint8_t pad[24];
};
static_assert(sizeof(Preamble) == 64);
}  // namespace

uint64_t engine_checksum(const uint8_t* data, size_t bytes) {
  constexpr uint64_t kMul = 0x9E3779B97F4A7C15ull;
  uint64_t lane[4] = {0x243F6A8885A308D3ull, 0x13198A2E03707344ull, 0xA4093822299F31D0ull, 0x082EFA98EC4E6C89ull};
  size_t i = 0;
  for (; i + 32 <= bytes; i += 32) {
    for (int l = 0; l < 4; ++l) {
      uint64_t w;
      std::memcpy(&w, data + i + 8 * l, 8);
      lane[l] = (lane[l] ^ w) * kMul;
      lane[l] ^= lane[l] >> 29;
    }
  }
  uint64_t h = bytes;
  for (int l = 0; l < 4; ++l) h = (h ^ lane[l]) * kMul;
  for (; i < bytes; ++i) h = (h ^ data[i]) * kMul;
  return h ^ (h >> 31);
}

EngineFileWriter::EngineFileWriter(const std::string& path) : path_(path) {
  out_.open(path, std::ios::binary | std::ios::trunc);
  if (!out_) fail("cannot create '", path, "'");
  const std::string zeros(kDataStart, '\0');
  out_.write(zeros.data(), kDataStart);
  pos_ = kDataStart;
}

void EngineFileWriter::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data,
                           size_t bytes, const std::string& layout) {
  LAMINA_CHECK(!finished_, "engine file already finished");
  const uint64_t aligned = (pos_ + kAlign - 1) / kAlign * kAlign;
  if (aligned > pos_) {
    const std::string pad(aligned - pos_, '\0');
    out_.write(pad.data(), static_cast<std::streamsize>(pad.size()));
    pos_ = aligned;
  }
  EngineTensor t{name, dtype, shape, layout, pos_, bytes, engine_checksum(static_cast<const uint8_t*>(data), bytes), nullptr};
  out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  if (!out_) fail("write to '", path_, "' failed (disk full?)");
  pos_ += bytes;
  table_.push_back(std::move(t));
}

void EngineFileWriter::finish() {
  Json table = Json::array();
  for (const auto& t : table_)
    table.push_back({{"name", t.name}, {"dtype", dtype_safetensors_name(t.dtype)}, {"shape", t.shape},
                     {"layout", t.layout}, {"offset", t.offset}, {"bytes", t.bytes}, {"checksum", t.checksum}});
  const std::string text = table.dump();
  Preamble p{};
  std::memcpy(p.magic, kMagic, 8);
  p.version = kEngineFormatVersion;
  p.table_offset = pos_;
  p.table_bytes = text.size();
  p.file_size = pos_ + text.size();
  out_.write(text.data(), static_cast<std::streamsize>(text.size()));
  out_.seekp(0);
  out_.write(reinterpret_cast<const char*>(&p), sizeof(p));
  out_.close();
  if (out_.fail()) fail("writing '", path_, "' failed (disk full?)");
  finished_ = true;
}

EngineFile::EngineFile(const std::string& path) : file_(path) {
  const size_t size = file_.size();
  if (size < sizeof(Preamble)) fail("engine file '", path, "' is truncated (", size, " bytes): rebuild it with lamina build");
  Preamble p;
  std::memcpy(&p, file_.data(), sizeof(p));
  if (std::memcmp(p.magic, kMagic, 8) != 0)
    fail("'", path, "' is not a Lamina engine file (bad magic): rebuild it with lamina build");
  if (p.version != kEngineFormatVersion)
    fail("engine file '", path, "' has format version ", p.version, " but this lamina reads version ",
         kEngineFormatVersion, ": rebuild the engine with this lamina's `lamina build`");
  if (p.file_size != size || p.table_offset + p.table_bytes != size)
    fail("engine file '", path, "' is truncated or damaged: expected ", p.file_size, " bytes, found ", size,
         ": rebuild it with lamina build");
  Json table;
  try {
    table = Json::parse(file_.data() + p.table_offset, file_.data() + p.table_offset + p.table_bytes);
  } catch (const nlohmann::json::exception& e) {
    fail("engine file '", path, "' has a corrupt tensor table: ", e.what());
  }
  for (const auto& e : table) {
    EngineTensor t;
    t.name = e.at("name");
    t.dtype = dtype_from_safetensors_name(e.at("dtype"));
    t.shape = e.at("shape").get<std::vector<int64_t>>();
    t.layout = e.at("layout");
    t.offset = e.at("offset");
    t.bytes = e.at("bytes");
    t.checksum = e.at("checksum");
    if (t.offset + t.bytes > p.table_offset) fail("engine file '", path, "': tensor '", t.name, "' lies outside the data");
    t.data = file_.data() + t.offset;
    tensors_[t.name] = std::move(t);
  }
}

void EngineFile::verify() const {
  std::vector<const EngineTensor*> all;
  for (const auto& [_, t] : tensors_) all.push_back(&t);
  std::atomic<size_t> next{0};
  std::atomic<const EngineTensor*> bad{nullptr};
  const unsigned workers = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  std::vector<std::thread> pool;
  for (unsigned w = 0; w < workers; ++w)
    pool.emplace_back([&] {
      for (size_t i; (i = next++) < all.size();)
        if (engine_checksum(all[i]->data, all[i]->bytes) != all[i]->checksum) bad = all[i];
    });
  for (auto& t : pool) t.join();
  if (const EngineTensor* t = bad.load())
    fail("engine file '", path(), "': checksum mismatch in tensor '", t->name,
         "' (the file is damaged): rebuild the engine with lamina build");
}

const EngineTensor& EngineFile::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) fail("engine file '", path(), "' has no tensor '", name, "': rebuild the engine");
  return it->second;
}

}  // namespace lamina
