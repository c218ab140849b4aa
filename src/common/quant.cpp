#include "common/quant.h"

#include <algorithm>
#include <cmath>

#include "common/dtype.h"
#include "common/error.h"

namespace lamina {

std::string weight_format_name(WeightFormat f) {
  switch (f) {
    case WeightFormat::Int8PerChannel: return "int8 per-channel (W8A16)";
    case WeightFormat::Fp8PerTensor: return "fp8 e4m3 per-tensor (FP8)";
    case WeightFormat::Int4Group: return "int4 group-wise (W4A16_AWQ)";
  }
  return "?";
}

size_t QuantizedWeight::data_bytes() const {
  const size_t n = size_t(rows) * size_t(cols);
  return format == WeightFormat::Int4Group ? n / 2 : n;
}

size_t QuantizedWeight::num_scales() const {
  switch (format) {
    case WeightFormat::Int8PerChannel: return size_t(rows);
    case WeightFormat::Fp8PerTensor: return 1;
    case WeightFormat::Int4Group: return group_size > 0 ? size_t(rows) * size_t(cols / group_size) : 0;
  }
  return 0;
}

void QuantizedWeight::validate() const {
  if (rows <= 0 || cols <= 0) fail("quantized weight with shape [", rows, ", ", cols, "]");
  if (!data || !scales) fail("quantized weight [", rows, ", ", cols, "] without data or scales");
  if (format == WeightFormat::Int4Group) {
    if (group_size <= 0 || group_size % 32 != 0)
      fail("int4 weight group size ", group_size, " is not a positive multiple of 32");
    if (cols % group_size != 0)
      fail("int4 weight [", rows, ", ", cols, "]: K=", cols, " is not a multiple of the group size ", group_size);
  }
}

uint8_t float_to_f8e4m3(float f) {
  if (std::isnan(f)) return 0;
  const uint8_t sign = std::signbit(f) ? 0x80 : 0;
  const float a = std::fabs(f);
  if (a >= kFp8E4M3Max) return sign | 0x7e;  // 448 = 1.75 * 2^8: largest finite
  if (a < 0.015625f) {                       // below 2^-6: subnormal, units of 2^-9
    const int m = int(std::nearbyint(a * 512.0f));  // m == 8 is the smallest normal, encoded alike
    return sign | uint8_t(m);
  }
  int e = 0;
  const float frac = std::frexp(a, &e);  // a = frac * 2^e, frac in [0.5, 1)
  int m = int(std::nearbyint((frac * 2.0f - 1.0f) * 8.0f));
  int exp = e - 1 + 7;
  if (m == 8) {
    m = 0;
    ++exp;
  }
  if (exp > 15 || (exp == 15 && m > 6)) return sign | 0x7e;
  return sign | uint8_t(exp << 3) | uint8_t(m);
}

void quantize_int8_per_channel(const float* w, int64_t rows, int64_t cols, int8_t* q, float* scales) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w + r * cols;
    float amax = 0.0f;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(row[c]));
    const float scale = amax > 0.0f ? amax / 127.0f : 1.0f;
    scales[r] = scale;
    for (int64_t c = 0; c < cols; ++c)
      q[r * cols + c] = static_cast<int8_t>(std::clamp(std::nearbyint(row[c] / scale), -127.0f, 127.0f));
  }
}

float quantize_fp8_per_tensor(const float* w, size_t n, uint8_t* q) {
  float amax = 0.0f;
  for (size_t i = 0; i < n; ++i) amax = std::max(amax, std::fabs(w[i]));
  const float scale = amax > 0.0f ? amax / kFp8E4M3Max : 1.0f;
  for (size_t i = 0; i < n; ++i) q[i] = float_to_f8e4m3(w[i] / scale);
  return scale;
}

void requantize_fp8(uint8_t* q, size_t n, float from, float to) {
  if (from == to) return;
  for (size_t i = 0; i < n; ++i) q[i] = float_to_f8e4m3(f8e4m3_to_float(q[i]) * from / to);
}

void quantize_int4_groups(const float* w, int64_t rows, int64_t cols, int group, uint8_t* packed, float* scales) {
  if (group <= 0 || group % 32 != 0) fail("int4 group size ", group, " is not a positive multiple of 32");
  if (cols % group != 0)
    fail("cannot quantize a weight with K=", cols, " input features to int4: K is not a multiple of the group size ",
         group);
  const int64_t groups = cols / group;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      const float* x = w + r * cols + g * group;
      float amax = 0.0f;
      for (int i = 0; i < group; ++i) amax = std::max(amax, std::fabs(x[i]));
      const float scale = amax > 0.0f ? amax / 7.0f : 1.0f;
      scales[r * groups + g] = scale;
      for (int i = 0; i < group; i += 2) {
        const int lo = int(std::clamp(std::nearbyint(x[i] / scale), -8.0f, 7.0f)) + 8;
        const int hi = int(std::clamp(std::nearbyint(x[i + 1] / scale), -8.0f, 7.0f)) + 8;
        packed[(r * cols + g * group + i) / 2] = uint8_t(lo | (hi << 4));
      }
    }
  }
}

void dequantize(const QuantizedWeight& w, float* out) {
  w.validate();
  const int64_t N = w.rows, K = w.cols;
  const auto* bytes = static_cast<const uint8_t*>(w.data);
  switch (w.format) {
    case WeightFormat::Int8PerChannel:
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) out[n * K + k] = float(int8_t(bytes[n * K + k])) * w.scales[n];
      return;
    case WeightFormat::Fp8PerTensor:
      for (int64_t i = 0; i < N * K; ++i) out[i] = f8e4m3_to_float(bytes[i]) * w.scales[0];
      return;
    case WeightFormat::Int4Group: {
      const int64_t groups = K / w.group_size;
      for (int64_t n = 0; n < N; ++n)
        for (int64_t k = 0; k < K; ++k) {
          const uint8_t b = bytes[(n * K + k) / 2];
          const int q = int((k & 1) ? (b >> 4) : (b & 0xf)) - 8;
          out[n * K + k] = float(q) * w.scales[n * groups + k / w.group_size];
        }
      return;
    }
  }
}

}  // namespace lamina
