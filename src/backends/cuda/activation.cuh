// SiLU, shared by the SwiGLU kernel (silu_mul.cu) and the GEMV epilogues that apply the SwiGLU to
// gate_up's outputs (gemv.cu, gemv_quant.cu, gemv_int4_tiles.cu): one definition, one rounding.
#pragma once
#include <cuda_runtime.h>

namespace lamina::cuda {

// silu(g) = g * sigmoid(g) = g / (1 + e^-g)
__device__ __forceinline__ float silu(float g) { return g / (1.0f + __expf(-g)); }

}  // namespace lamina::cuda
