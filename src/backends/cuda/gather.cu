// Row gather: out[i,H] = x[rows[i], :], e.g. each sequence's last token before the LM head.
#include "kernels.h"
#include "row_copy.cuh"

namespace lamina::cuda {

void launch_gather_rows(DType dt, void* out, const void* x, const int32_t* rows, int num_rows, int H,
                        cudaStream_t stream) {
  launch_copy_rows(out, x, rows, num_rows, H, dtype_size(dt), stream);
}

}  // namespace lamina::cuda
