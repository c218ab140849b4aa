// Pinned host slots for copies that must not wait for the device (Backend::copy_to_device_ordered,
// start_copy_to_host): a copy between pageable memory and the device waits for the stream, which
// would hold the host until the step in flight ends. Each slot has an event recorded after its
// copy, so the host knows when the slot's bytes have left (upload) or arrived (download).
// The slots are mapped into the device's address space: a download of up to kKernelCopyBytes (a
// decode step's chosen ids) is written there by a kernel (mapped_copy.cu), which leaves the stream
// free sooner than a copy-engine transfer; LAMINA_KERNEL_DOWNLOAD=0 turns that off (A/B).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace lamina::cuda {

class PinnedStaging {
 public:
  static constexpr size_t kSlotBytes = 64u << 10;  // a decode step's inputs or chosen ids, with room
  static constexpr size_t kKernelCopyBytes = 4u << 10;  // downloads a kernel makes (the chosen ids of 1024 rows)
  explicit PinnedStaging(int slots);
  ~PinnedStaging();
  PinnedStaging(const PinnedStaging&) = delete;
  PinnedStaging& operator=(const PinnedStaging&) = delete;

  // Copies host_src into a slot and from there to dst on `stream`; returns at once. Bytes over
  // kSlotBytes return false without copying (the caller copies synchronously).
  bool upload(void* dst, const void* host_src, size_t bytes, cudaStream_t stream);
  // Starts copying src into a slot kept for the returned ticket (0: no slot free or too many
  // bytes; the caller copies synchronously). finish() waits for it and hands the bytes over.
  uint64_t start_download(const void* src, size_t bytes, cudaStream_t stream);
  // False if no download has this ticket.
  bool finish_download(uint64_t ticket, void* host_dst);

 private:
  struct Slot {
    char* host = nullptr;
    void* device = nullptr;  // the device's address of `host`
    cudaEvent_t copied = nullptr;
    uint64_t ticket = 0;  // a download's ticket while its bytes wait for finish_download
    size_t bytes = 0;
  };
  Slot* free_slot();  // waits for a slot's last upload to leave; null if every slot holds a download
  std::vector<Slot> slots_;
  bool kernel_downloads_ = true;
  size_t next_ = 0;
  uint64_t next_ticket_ = 1;
};

}  // namespace lamina::cuda
