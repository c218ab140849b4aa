// int4 weights between the checkpoint's layout (row-major [N, K], two weights a byte, the even k in
// the low nibble; common/quant.h) and the int4 GEMV's tile layout (mma_layout.h: int4_tile_elem),
// done once when a weight is uploaded. One thread per 32-bit word of the tile layout.
#include <cuda_runtime.h>

#include <algorithm>

#include "cuda_check.h"
#include "cuda_types.cuh"
#include "mma_layout.h"
#include "quant_kernels.h"

namespace lamina::cuda {
namespace {

// Element (n, k) of the weight that nibble i of tile-layout word `idx` holds.
__device__ __forceinline__ mma_layout::RowCol tile_word_elem(size_t idx, int i, int chunks) {
  const int j = static_cast<int>(idx % 4), lane = static_cast<int>((idx / 4) % 32);
  const size_t tile = idx / 128;
  const int kc = static_cast<int>(tile % chunks), rt = static_cast<int>(tile / chunks);
  const mma_layout::RowCol rc = mma_layout::int4_tile_elem(lane, j, i);
  return {rt * mma_layout::kInt4TileRows + rc.row, kc * mma_layout::kInt4TileCols + rc.col};
}

__global__ void int4_to_tiles_kernel(uint32_t* __restrict__ out, const uint8_t* __restrict__ in, int N, int K) {
  const size_t words = static_cast<size_t>(N) * K / 8;
  const int chunks = K / mma_layout::kInt4TileCols;
  for (size_t idx = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < words;
       idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t v = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const mma_layout::RowCol e = tile_word_elem(idx, i, chunks);
      const uint8_t b = in[(static_cast<size_t>(e.row) * K + e.col) / 2];
      v |= static_cast<uint32_t>((e.col & 1) ? b >> 4 : b & 0xfu) << (4 * i);
    }
    out[idx] = v;
  }
}

template <typename T>
__global__ void dequantize_int4_tiles_kernel(T* __restrict__ out, const uint32_t* __restrict__ w,
                                             const float* __restrict__ scales, int N, int K, int group) {
  const size_t words = static_cast<size_t>(N) * K / 8;
  const int chunks = K / mma_layout::kInt4TileCols, groups = K / group;
  for (size_t idx = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < words;
       idx += static_cast<size_t>(gridDim.x) * blockDim.x) {
    const uint32_t v = w[idx];
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const mma_layout::RowCol e = tile_word_elem(idx, i, chunks);
      const float q = static_cast<float>(static_cast<int>((v >> (4 * i)) & 0xfu) - 8);
      out[static_cast<size_t>(e.row) * K + e.col] =
          from_float<T>(q * scales[static_cast<size_t>(e.row) * groups + e.col / group]);
    }
  }
}

unsigned grid_for(size_t words) { return static_cast<unsigned>(std::min<size_t>((words + 255) / 256, 8192)); }

}  // namespace

bool int4_tiles_fit(int N, int K, int group) {
  return N % mma_layout::kInt4TileRows == 0 && K % mma_layout::kInt4TileCols == 0 && group > 0 &&
         group % mma_layout::kInt4TileCols == 0 && K % group == 0;
}

void launch_int4_to_tiles(void* out, const void* in, int N, int K, cudaStream_t stream) {
  LAMINA_CHECK(int4_tiles_fit(N, K, mma_layout::kInt4TileCols), "int4 tiles need N % 16 == 0 and K % 64 == 0, got [",
               N, ", ", K, "]");
  const size_t words = static_cast<size_t>(N) * K / 8;
  if (words == 0) return;
  int4_to_tiles_kernel<<<grid_for(words), 256, 0, stream>>>(static_cast<uint32_t*>(out),
                                                             static_cast<const uint8_t*>(in), N, K);
  CUDA_CHECK_LAUNCH();
}

void launch_dequantize_int4_tiles(DType dt, void* out, const DeviceQuantWeight& w, int N, int K, cudaStream_t stream) {
  const size_t words = static_cast<size_t>(N) * K / 8;
  if (words == 0) return;
  dispatch_float_type(dt, [&](auto tag) {
    using E = typename decltype(tag)::type;
    dequantize_int4_tiles_kernel<E><<<grid_for(words), 256, 0, stream>>>(
        static_cast<E*>(out), static_cast<const uint32_t*>(w.data), w.scales, N, K, w.group_size);
    CUDA_CHECK_LAUNCH();
  });
}

}  // namespace lamina::cuda
