#include "backends/cuda/pinned_staging.h"

#include <cstring>

#include "backends/cuda/ab_switch.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"

namespace lamina::cuda {

PinnedStaging::PinnedStaging(int slots)
    : slots_(size_t(slots)), kernel_downloads_(ab_switch_on("LAMINA_KERNEL_DOWNLOAD")) {
  for (Slot& s : slots_) {
    const unsigned flags = cudaHostAllocMapped | cudaHostAllocPortable;
    CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&s.host), kSlotBytes, flags));
    if (cudaHostGetDevicePointer(&s.device, s.host, 0) != cudaSuccess) {
      (void)cudaGetLastError();  // not mapped on this system: downloads take the copy engine
      s.device = nullptr;
    }
    CUDA_CHECK(cudaEventCreateWithFlags(&s.copied, cudaEventDisableTiming));
  }
}

PinnedStaging::~PinnedStaging() {
  for (Slot& s : slots_) {
    if (s.copied) {
      cudaEventSynchronize(s.copied);
      cudaEventDestroy(s.copied);
    }
    if (s.host) cudaFreeHost(s.host);
  }
}

PinnedStaging::Slot* PinnedStaging::free_slot() {
  // Round robin over the slots not holding a download; an upload's slot is free once its copy ran.
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& s = slots_[(next_ + i) % slots_.size()];
    if (s.ticket != 0) continue;
    next_ = (next_ + i + 1) % slots_.size();
    CUDA_CHECK(cudaEventSynchronize(s.copied));
    return &s;
  }
  return nullptr;
}

bool PinnedStaging::upload(void* dst, const void* host_src, size_t bytes, cudaStream_t stream) {
  if (bytes > kSlotBytes) return false;
  Slot* s = free_slot();
  if (!s) return false;
  std::memcpy(s->host, host_src, bytes);
  CUDA_CHECK(cudaMemcpyAsync(dst, s->host, bytes, cudaMemcpyHostToDevice, stream));
  CUDA_CHECK(cudaEventRecord(s->copied, stream));
  return true;
}

uint64_t PinnedStaging::start_download(const void* src, size_t bytes, cudaStream_t stream) {
  if (bytes > kSlotBytes) return 0;
  Slot* s = free_slot();
  if (!s) return 0;
  if (kernel_downloads_ && s->device != nullptr && bytes <= kKernelCopyBytes)
    launch_copy_to_mapped(s->device, src, bytes, stream);
  else
    CUDA_CHECK(cudaMemcpyAsync(s->host, src, bytes, cudaMemcpyDeviceToHost, stream));
  CUDA_CHECK(cudaEventRecord(s->copied, stream));
  s->ticket = next_ticket_++;
  s->bytes = bytes;
  return s->ticket;
}

bool PinnedStaging::finish_download(uint64_t ticket, void* host_dst) {
  for (Slot& s : slots_) {
    if (s.ticket != ticket || ticket == 0) continue;
    CUDA_CHECK(cudaEventSynchronize(s.copied));
    std::memcpy(host_dst, s.host, s.bytes);
    s.ticket = 0;
    return true;
  }
  return false;
}

}  // namespace lamina::cuda
