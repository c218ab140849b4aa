#include "convert/sharding.h"

#include <cstring>

namespace lamina {

void copy_rows(const uint8_t* src, int64_t src_rows, int64_t cols, size_t elem, int64_t row_begin, int64_t rows,
               uint8_t* dst) {
  const size_t row_bytes = size_t(cols) * elem;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t s = row_begin + r;
    if (s < src_rows) std::memcpy(dst + size_t(r) * row_bytes, src + size_t(s) * row_bytes, row_bytes);
    else std::memset(dst + size_t(r) * row_bytes, 0, row_bytes);
  }
}

void copy_cols(const uint8_t* src, int64_t rows, int64_t src_cols, size_t elem, int64_t col_begin, int64_t cols,
               uint8_t* dst) {
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(dst + size_t(r) * size_t(cols) * elem, src + (size_t(r) * size_t(src_cols) + size_t(col_begin)) * elem,
                size_t(cols) * elem);
}

}  // namespace lamina
