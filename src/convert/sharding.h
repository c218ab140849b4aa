// Tensor-parallel sharding rules (Megatron style), from HF tensors to one rank's slice.
//   column-parallel (split output rows): q/k/v, gate, up, lm_head (vocab, padded to tp)
//   row-parallel (split input columns):  attention dense (o_proj), mlp proj (down_proj)
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace lamina {

// Copies rows [row_begin, row_begin + rows) of a row-major [*, cols] matrix of elem-byte
// elements; rows past src_rows are zero-filled (vocab padding).
void copy_rows(const uint8_t* src, int64_t src_rows, int64_t cols, size_t elem, int64_t row_begin, int64_t rows,
               uint8_t* dst);
// Copies columns [col_begin, col_begin + cols) of every row of a row-major [rows, src_cols] matrix.
void copy_cols(const uint8_t* src, int64_t rows, int64_t src_cols, size_t elem, int64_t col_begin, int64_t cols,
               uint8_t* dst);

}  // namespace lamina
