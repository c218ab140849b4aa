#include "common/quant.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>

#include "common/dtype.h"
#include "common/error.h"
#include "common/parallel.h"

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
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  const uint8_t sign = (u >> 24) & 0x80;
  u &= 0x7fffffffu;                           // |f|
  if (u >= 0x43e00000u) return sign | 0x7e;  // |f| >= 448 = 1.75 * 2^8: the largest finite
  if (u < 0x3c800000u) {                      // below 2^-6: subnormal, units of 2^-9
    float a;
    std::memcpy(&a, &u, sizeof(a));
    const int m = int(std::nearbyint(a * 512.0f));  // m == 8 is the smallest normal, encoded alike
    return sign | uint8_t(m);
  }
  // Normal: keep 3 of the 23 mantissa bits, rounding to nearest even on the bits (a carry moves
  // into the exponent, as it should); e4m3's exponent bias is 7, float's 127.
  const uint32_t r = u + 0x7ffffu + ((u >> 20) & 1u);
  const uint32_t code = ((((r >> 23) - 127u + 7u)) << 3) | ((r >> 20) & 7u);
  return sign | uint8_t(code > 0x7eu ? 0x7eu : code);
}

// Each quantizer works on whole rows (or, for the per-tensor scale, on disjoint ranges) in
// parallel (common/parallel.h): an 8B checkpoint holds 7 billion weights to quantize.
constexpr size_t kMinParallelItems = size_t(1) << 16;

void quantize_int8_per_channel(const float* w, int64_t rows, int64_t cols, int8_t* q, float* scales) {
  parallel_for(size_t(rows), std::max<size_t>(1, kMinParallelItems / size_t(std::max<int64_t>(cols, 1))),
               [&](size_t r0, size_t r1) {
                 for (size_t r = r0; r < r1; ++r) {
                   const float* row = w + int64_t(r) * cols;
                   float amax = 0.0f;
                   for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(row[c]));
                   const float scale = amax > 0.0f ? amax / 127.0f : 1.0f;
                   scales[r] = scale;
                   for (int64_t c = 0; c < cols; ++c)
                     q[int64_t(r) * cols + c] =
                         static_cast<int8_t>(std::clamp(std::nearbyint(row[c] / scale), -127.0f, 127.0f));
                 }
               });
}

float quantize_fp8_per_tensor(const float* w, size_t n, uint8_t* q) {
  std::mutex mu;
  float amax = 0.0f;
  parallel_for(n, kMinParallelItems, [&](size_t i0, size_t i1) {
    float m = 0.0f;
    for (size_t i = i0; i < i1; ++i) m = std::max(m, std::fabs(w[i]));
    std::lock_guard<std::mutex> lock(mu);
    amax = std::max(amax, m);
  });
  const float scale = amax > 0.0f ? amax / kFp8E4M3Max : 1.0f;
  parallel_for(n, kMinParallelItems, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) q[i] = float_to_f8e4m3(w[i] / scale);
  });
  return scale;
}

void requantize_fp8(uint8_t* q, size_t n, float from, float to) {
  if (from == to) return;
  parallel_for(n, kMinParallelItems, [&](size_t i0, size_t i1) {
    for (size_t i = i0; i < i1; ++i) q[i] = float_to_f8e4m3(f8e4m3_to_float(q[i]) * from / to);
  });
}

void quantize_int4_groups(const float* w, int64_t rows, int64_t cols, int group, uint8_t* packed, float* scales) {
  if (group <= 0 || group % 32 != 0) fail("int4 group size ", group, " is not a positive multiple of 32");
  if (cols % group != 0)
    fail("cannot quantize a weight with K=", cols, " input features to int4: K is not a multiple of the group size ",
         group);
  const int64_t groups = cols / group;
  parallel_for(size_t(rows), std::max<size_t>(1, kMinParallelItems / size_t(std::max<int64_t>(cols, 1))),
               [&](size_t r0, size_t r1) {
                 for (int64_t r = int64_t(r0); r < int64_t(r1); ++r) {
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
               });
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
