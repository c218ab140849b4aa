// rank{r}.engine: Lamina's weight file, laid out for mmap and direct upload.
//
//   [0, 64)        preamble: magic "LAMINAEN", u32 format version, u32 reserved,
//                  u64 table offset, u64 table length, u64 file size, padding
//   [4096, ...)    tensor blobs, each 256-byte aligned
//   [table offset] JSON tensor table: [{name, dtype, shape, layout, offset, bytes, checksum}]
//
// The table is written last, so tensors stream in one at a time while their checksums are taken.
// A file of another format version, a truncated file or a checksum mismatch is refused.
#pragma once
#include <cstdint>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/mapped_file.h"
#include "io/safetensors.h"

namespace lamina {

constexpr uint32_t kEngineFormatVersion = 1;

// Layout of a packed int4 weight (U8 [N, K/2], two k per byte; see common/quant.h).
inline const std::string kInt4PackedLayout = "int4_packed";

// 64-bit checksum of a byte range (four multiply-xor lanes over 8-byte words; fast enough to
// check a 16 GB engine at load).
uint64_t engine_checksum(const uint8_t* data, size_t bytes);

struct EngineTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::string layout;  // "row_major" (nn.Linear [out, in]) unless a kernel asks otherwise
  uint64_t offset = 0;
  uint64_t bytes = 0;
  uint64_t checksum = 0;
  const uint8_t* data = nullptr;  // set by EngineFile
};

class EngineFileWriter {
 public:
  explicit EngineFileWriter(const std::string& path);
  void add(const std::string& name, DType dtype, const std::vector<int64_t>& shape, const void* data, size_t bytes,
           const std::string& layout = "row_major");
  void finish();  // writes the table and the preamble

 private:
  std::string path_;
  std::ofstream out_;
  uint64_t pos_ = 0;
  std::vector<EngineTensor> table_;
  bool finished_ = false;
};

class EngineFile {
 public:
  // Maps and checks structure (magic, version, sizes). Checksums are checked by verify().
  explicit EngineFile(const std::string& path);
  // Recomputes every tensor's checksum (multi-threaded); throws naming the first bad tensor.
  void verify() const;
  const EngineTensor& get(const std::string& name) const;
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const std::map<std::string, EngineTensor>& tensors() const { return tensors_; }
  const std::string& path() const { return file_.path(); }

 private:
  MappedFile file_;
  std::map<std::string, EngineTensor> tensors_;
};

}  // namespace lamina
