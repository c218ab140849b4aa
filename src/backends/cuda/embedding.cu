// Token embedding lookup: out[T,H] = table[ids[t], :] (table: [V,H] in the activation dtype).
#include "kernels.h"
#include "row_copy.cuh"

namespace lamina::cuda {

void launch_embedding(DType dt, void* out, const int32_t* ids, const void* table, int T, int H, cudaStream_t stream) {
  launch_copy_rows(out, table, ids, T, H, dtype_size(dt), stream);
}

}  // namespace lamina::cuda
