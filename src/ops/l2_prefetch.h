// A hint passed down to the kernel before a projection: the bytes that projection reads first.
#pragma once
#include <cstddef>

namespace lamina {

// A byte range of device memory that the next kernel will read (the next projection's weights). A
// kernel that leaves DRAM idle while it runs may ask L2 for its start meanwhile, so the projection
// finds it there: the CUDA fused all-reduce + norm does, while it waits on its peers
// (docs/tensor-parallel.md). A hint only; {nullptr, 0}: none.
struct L2Prefetch {
  const void* p = nullptr;
  size_t bytes = 0;
};

}  // namespace lamina
