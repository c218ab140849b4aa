#include "io/npy.h"

#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "common/error.h"
#include "common/paths.h"

namespace lamina {

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::vector<float> NpyArray::as_f32() const {
  std::vector<float> out(static_cast<size_t>(numel()));
  if (descr == "<f4") std::memcpy(out.data(), data.data(), out.size() * 4);
  else if (descr == "<f8")
    for (size_t i = 0; i < out.size(); ++i) {
      double d;
      std::memcpy(&d, data.data() + 8 * i, 8);
      out[i] = static_cast<float>(d);
    }
  else fail("npy dtype ", descr, " is not a float type");
  return out;
}

std::vector<int64_t> NpyArray::as_i64() const {
  std::vector<int64_t> out(static_cast<size_t>(numel()));
  for (size_t i = 0; i < out.size(); ++i) {
    if (descr == "<i4") {
      int32_t v;
      std::memcpy(&v, data.data() + 4 * i, 4);
      out[i] = v;
    } else if (descr == "<i8") {
      std::memcpy(&out[i], data.data() + 8 * i, 8);
    } else {
      fail("npy dtype ", descr, " is not an integer type (expected int32 or int64)");
    }
  }
  return out;
}

NpyArray read_npy(const std::string& path) {
  const std::string bytes = read_file(path);
  if (bytes.size() < 10 || bytes.compare(0, 6, "\x93NUMPY") != 0) fail("'", path, "' is not a .npy file");
  const int major = static_cast<uint8_t>(bytes[6]);
  size_t header_len, header_start;
  if (major == 1) {
    header_len = static_cast<uint8_t>(bytes[8]) | (static_cast<uint8_t>(bytes[9]) << 8);
    header_start = 10;
  } else {
    if (bytes.size() < 12) fail("'", path, "' is truncated");
    uint32_t len;
    std::memcpy(&len, bytes.data() + 8, 4);
    header_len = len;
    header_start = 12;
  }
  if (header_start + header_len > bytes.size()) fail("'", path, "' is truncated");
  const std::string header = bytes.substr(header_start, header_len);
  std::smatch m;
  NpyArray a;
  if (!std::regex_search(header, m, std::regex("'descr':\\s*'([^']+)'"))) fail("'", path, "': npy header has no descr");
  a.descr = m[1];
  if (a.descr == "|i1" || a.descr == "<u4") fail("'", path, "': unsupported npy dtype ", a.descr);
  if (std::regex_search(header, m, std::regex("'fortran_order':\\s*True"))) fail("'", path, "': Fortran-order arrays are not supported");
  if (!std::regex_search(header, m, std::regex("'shape':\\s*\\(([^)]*)\\)"))) fail("'", path, "': npy header has no shape");
  std::stringstream ss(m[1].str());
  std::string item;
  while (std::getline(ss, item, ','))
    if (item.find_first_not_of(" ") != std::string::npos) a.shape.push_back(std::stoll(item));
  size_t elem = a.descr == "<f8" || a.descr == "<i8" ? 8 : 4;
  if (a.descr != "<f4" && a.descr != "<f8" && a.descr != "<i4" && a.descr != "<i8")
    fail("'", path, "': unsupported npy dtype ", a.descr, " (use float32, int32 or int64)");
  const size_t need = static_cast<size_t>(a.numel()) * elem;
  const size_t data_start = header_start + header_len;
  if (bytes.size() - data_start < need) fail("'", path, "' is truncated: needs ", need, " data bytes");
  a.data.assign(bytes.begin() + static_cast<long>(data_start), bytes.begin() + static_cast<long>(data_start + need));
  return a;
}

namespace {
void write_npy(const std::string& path, const std::string& descr, const std::vector<int64_t>& shape, const void* data,
               size_t bytes) {
  std::string shp = "(";
  for (size_t i = 0; i < shape.size(); ++i) shp += std::to_string(shape[i]) + (shape.size() == 1 || i + 1 < shape.size() ? "," : "");
  shp += ")";
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shp + ", }";
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string out = "\x93NUMPY";
  out += '\x01';
  out += '\x00';
  out += static_cast<char>(header.size() & 0xff);
  out += static_cast<char>(header.size() >> 8);
  out += header;
  out.append(static_cast<const char*>(data), bytes);
  write_file_atomic(path, out);
}
}  // namespace

void write_npy_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  write_npy(path, "<f4", shape, data, static_cast<size_t>(n) * 4);
}

void write_npy_i32(const std::string& path, const std::vector<int64_t>& shape, const int32_t* data) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  write_npy(path, "<i4", shape, data, static_cast<size_t>(n) * 4);
}

}  // namespace lamina
