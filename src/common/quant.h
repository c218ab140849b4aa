// Weight formats of the quantized linear layers (--quant_algo) and their host reference codecs:
// lamina convert quantizes with these, and the CPU backend (and any backend without a kernel for a
// format) dequantizes with them, so every backend agrees on what a quantized weight means.
//
//   Int8PerChannel (W8A16)     data int8 [N, K];               w[n,k] = data[n,k] * scales[n]
//   Fp8PerTensor   (FP8)       data float8 e4m3 [N, K];        w[n,k] = e4m3(data[n,k]) * scales[0]
//   Int4Group      (W4A16_AWQ) data uint8 [N, K/2], packed:    w[n,k] = (nib(n,k) - 8) * scales[n, k/G]
//        byte data[n, k/2] holds element k = 2j in its low nibble and k = 2j + 1 in its high nibble,
//        each as q + 8 (offset binary, q in [-8, 7]); scales is float32 [N, K/G], G = group_size.
// All quantizers are symmetric round-to-nearest with no calibration data: int8 scale = amax/127 per
// row, fp8 scale = amax/448 per tensor, int4 scale = amax/7 per group of G consecutive k.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace lamina {

enum class WeightFormat { Int8PerChannel, Fp8PerTensor, Int4Group };

std::string weight_format_name(WeightFormat f);  // "int8 per-channel", ...

// A quantized [N, K] weight in host memory (pointers are borrowed).
struct QuantizedWeight {
  WeightFormat format = WeightFormat::Int8PerChannel;
  const void* data = nullptr;
  const float* scales = nullptr;
  int64_t rows = 0;      // N (output features)
  int64_t cols = 0;      // K (input features, logical elements)
  int group_size = 0;    // Int4Group only: k-elements per scale (a multiple of 32)

  size_t data_bytes() const;   // N*K (8-bit) or N*K/2 (int4)
  size_t num_scales() const;   // N, 1 or N*K/G
  // Throws lamina::Error if the sizes do not describe a valid weight of the format.
  void validate() const;
};

inline constexpr float kFp8E4M3Max = 448.0f;
inline constexpr int kInt4GroupSize = 128;

// Round to nearest even, saturating at +-448 (NaN maps to 0).
uint8_t float_to_f8e4m3(float f);

// w[rows, cols] float32 → q int8 [rows, cols] and scales[rows].
void quantize_int8_per_channel(const float* w, int64_t rows, int64_t cols, int8_t* q, float* scales);
// w[n] float32 → q e4m3 [n]; returns the tensor's scale (amax / 448, or 1 for an all-zero tensor).
float quantize_fp8_per_tensor(const float* w, size_t n, uint8_t* q);
// Re-encodes e4m3 values of scale `from` at scale `to` (>= from): used to fuse tensors of different scales.
void requantize_fp8(uint8_t* q, size_t n, float from, float to);
// w[rows, cols] float32 → packed int4 [rows, cols/2] and scales [rows, cols/group]. cols must be a
// multiple of group (throws otherwise) and group a multiple of 32.
void quantize_int4_groups(const float* w, int64_t rows, int64_t cols, int group, uint8_t* packed, float* scales);

// Any format → out[rows, cols] float32.
void dequantize(const QuantizedWeight& w, float* out);

}  // namespace lamina
