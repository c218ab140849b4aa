// W8A16 weight-only quantization: int8 weights with one float scale per output channel (row).
// Symmetric round-to-nearest with no calibration data: scale[r] = max|w[r, :]| / 127.
#pragma once
#include <cstdint>

namespace lamina {

// w[rows, cols] float32 → q[rows, cols] int8 and scales[rows].
void quantize_int8_per_channel(const float* w, int64_t rows, int64_t cols, int8_t* q, float* scales);
// q[rows, cols] int8 and scales[rows] → out[rows, cols] float32.
void dequantize_int8_per_channel(const int8_t* q, const float* scales, int64_t rows, int64_t cols, float* out);

}  // namespace lamina
