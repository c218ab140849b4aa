#include "model/rope.h"

#include <cmath>

namespace lamina {

std::vector<float> rope_inv_freq(const ModelConfig& cfg) {
  const int64_t D = cfg.head_size;
  std::vector<float> inv(static_cast<size_t>(D / 2));
  for (int64_t i = 0; i < D / 2; ++i)
    inv[size_t(i)] = static_cast<float>(1.0 / std::pow(cfg.rotary_base, double(2 * i) / double(D)));

  const RopeScaling& rs = cfg.rotary_scaling;
  if (rs.type == "linear") {
    for (float& f : inv) f = static_cast<float>(f / rs.factor);
  } else if (rs.type == "llama3") {
    // Long wavelengths (low frequencies) are slowed by `factor`, short ones kept, and the band
    // between original_max/high_freq_factor and original_max/low_freq_factor is interpolated.
    const double old_len = double(rs.original_max_position_embeddings);
    const double low_wavelen = old_len / rs.low_freq_factor;
    const double high_wavelen = old_len / rs.high_freq_factor;
    for (float& f : inv) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_wavelen) continue;
      if (wavelen > low_wavelen) {
        f = static_cast<float>(f / rs.factor);
      } else {
        const double smooth = (old_len / wavelen - rs.low_freq_factor) / (rs.high_freq_factor - rs.low_freq_factor);
        f = static_cast<float>((1.0 - smooth) * f / rs.factor + smooth * f);
      }
    }
  }
  return inv;
}

}  // namespace lamina
