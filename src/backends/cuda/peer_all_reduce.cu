// PeerAllReduce: see peer_all_reduce.h for the protocol.
#include "backends/cuda/peer_all_reduce.h"

#include <climits>
#include <cstdint>
#include <set>

#include "backends/cuda/ab_switch.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/cuda_types.cuh"
#include "backends/cuda/pdl.cuh"
#include "backends/cuda/peer_all_reduce_norm.h"
#include "backends/cuda/peer_wait.cuh"
#include "backends/cuda/rank_order_sum.cuh"
#include "common/error.h"

namespace lamina {

namespace {

using cuda::from_float;
using cuda::kVec;
using cuda::to_float;

// A fixed grid, the same for every call: each block keeps its own call counter, so every block
// must take part in every call. Small enough to be resident at once on any GPU with peer access.
constexpr int kPeerBlocks = 32;
constexpr int kThreads = 256;

// Peer pointers, valid on every device of the group once peer access is enabled.
struct PeerPtrs {
  void* staging[kPeerMaxRanks];   // rank → [2][half_elems] elements
  uint32_t* flags[kPeerMaxRanks];  // rank → [kPeerBlocks][kPeerMaxRanks]: [b][p] = last call of p's block b
};

__device__ __forceinline__ void store_release_sys(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ uint32_t load_acquire_sys(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Elements [u * V, min(u * V + V, n)) form unit u; full units of 16-byte-aligned memory move as
// one 16-byte access. The staging buffers are always aligned; `buf` may not be (aligned_buf).
template <typename T>
__device__ __forceinline__ void copy_unit(T* dst, const T* src, size_t u, size_t n, bool aligned_buf) {
  constexpr int V = kVec<T>;
  const size_t e0 = u * V;
  if (aligned_buf && e0 + V <= n) {
    *reinterpret_cast<uint4*>(dst + e0) = *reinterpret_cast<const uint4*>(src + e0);
  } else {
    for (size_t e = e0; e < n && e < e0 + V; ++e) dst[e] = src[e];
  }
}

// buf[n] = Σ_q staging[q][half][n] in rank order, for W ranks. Block b owns units
// [b * per_block, (b + 1) * per_block) on every rank, so it waits only for block b of its peers.
// peers is __grid_constant__: indexing a by-value parameter array with a runtime index (rank,
// threadIdx.x) would otherwise copy all of it to local memory in every thread.
template <typename T, int W>
__global__ void __launch_bounds__(kThreads)
    peer_all_reduce_kernel(const __grid_constant__ PeerPtrs peers, uint32_t* epochs, int rank, T* buf, size_t n,
                           size_t half_elems, bool aligned_buf, const cuda::PeerWait wait) {
  constexpr int V = kVec<T>;
  // The kernels before this one on the stream wrote buf (and, for an all-reduce, our counters).
  cuda::pdl_wait();
  cuda::pdl_launch_dependents();
  __shared__ uint32_t s_epoch;
  if (threadIdx.x == 0) s_epoch = __ldcg(epochs + blockIdx.x) + 1;
  __syncthreads();
  const uint32_t epoch = s_epoch;
  const size_t half = (epoch & 1u) * half_elems;
  const size_t units = (n + V - 1) / V;
  const size_t per_block = (units + gridDim.x - 1) / gridDim.x;
  const size_t u_begin = size_t(blockIdx.x) * per_block;
  const size_t u_end = u_begin + per_block < units ? u_begin + per_block : units;

  // 1. Our slice into our staging half.
  T* mine = static_cast<T*>(peers.staging[rank]) + half;
  for (size_t u = u_begin + threadIdx.x; u < u_end; u += kThreads) copy_unit(mine, buf, u, n, aligned_buf);

  // 2. Barrier with block b of every peer. Thread p < W talks to peer p: the release store
  //    (after __syncthreads, so it covers the whole block's staging writes) tells p our slice is
  //    ready; the acquire load sees p's. Peers are at most one call ahead (they cannot finish a
  //    call without ours), so "reached" is a wrap-safe signed difference, never equality.
  __syncthreads();
  const int p = int(threadIdx.x);
  if (p < W && p != rank) {
    store_release_sys(peers.flags[p] + blockIdx.x * kPeerMaxRanks + rank, epoch);
    const uint32_t* from_p = peers.flags[rank] + blockIdx.x * kPeerMaxRanks + p;
    cuda::PeerWaitClock clock;  // past the limit the kernel traps (peer_wait.h)
    while (int32_t(load_acquire_sys(from_p) - epoch) < 0) clock.poll(wait, rank, p);
  }
  __syncthreads();

  // 3. Sum every rank's slice in rank order, in float32, over our input.
  for (size_t u = u_begin + threadIdx.x; u < u_end; u += kThreads) {
    const size_t e0 = u * V;
    if (e0 + V <= n) {
      uint4 raw[W];
#pragma unroll
      for (int q = 0; q < W; ++q)
        raw[q] = __ldcg(reinterpret_cast<const uint4*>(static_cast<const T*>(peers.staging[q]) + half + e0));
      float acc[V];
      cuda::sum_in_rank_order<T, W>(raw, acc);
      if (aligned_buf) {
        cuda::store_vec(buf + e0, acc);
      } else {
#pragma unroll
        for (int i = 0; i < V; ++i) buf[e0 + i] = from_float<T>(acc[i]);
      }
    } else {
      for (size_t e = e0; e < n; ++e) {
        float acc = 0.0f;
#pragma unroll
        for (int q = 0; q < W; ++q) acc += to_float(__ldcg(static_cast<const T*>(peers.staging[q]) + half + e));
        buf[e] = from_float<T>(acc);
      }
    }
  }
  // Only this block reads its counter, and the next call reads it after this grid completed.
  if (threadIdx.x == 0) epochs[blockIdx.x] = epoch;
}

template <typename T, int W>
void launch_for_world(const PeerPtrs& peers, uint32_t* epochs, int rank, void* buf, size_t n, size_t half_elems,
                      cudaStream_t stream) {
  cuda::launch_pdl(peer_all_reduce_kernel<T, W>, dim3(kPeerBlocks), dim3(kThreads), 0, stream, peers, epochs, rank,
                   static_cast<T*>(buf), n, half_elems, cuda::is_aligned16(buf), cuda::peer_wait());
}

template <typename T>
void launch(int world, const PeerPtrs& peers, uint32_t* epochs, int rank, void* buf, size_t n, size_t half_elems,
            cudaStream_t stream) {
  switch (world) {
    case 2: return launch_for_world<T, 2>(peers, epochs, rank, buf, n, half_elems, stream);
    case 3: return launch_for_world<T, 3>(peers, epochs, rank, buf, n, half_elems, stream);
    case 4: return launch_for_world<T, 4>(peers, epochs, rank, buf, n, half_elems, stream);
    case 5: return launch_for_world<T, 5>(peers, epochs, rank, buf, n, half_elems, stream);
    case 6: return launch_for_world<T, 6>(peers, epochs, rank, buf, n, half_elems, stream);
    case 7: return launch_for_world<T, 7>(peers, epochs, rank, buf, n, half_elems, stream);
    case 8: return launch_for_world<T, 8>(peers, epochs, rank, buf, n, half_elems, stream);
    default: fail("peer all-reduce supports 2 to ", kPeerMaxRanks, " ranks, not ", world);
  }
}

constexpr size_t kFlagWords = size_t(kPeerBlocks) * kPeerMaxRanks;

// The fused kernels' view of every rank's landing buffer ([rank] → its buffer).
cuda::LandingPtrs landing_ptrs(const std::vector<void*>& landing) {
  cuda::LandingPtrs ptrs{};
  for (size_t q = 0; q < landing.size(); ++q) ptrs.rank[q] = landing[q];
  return ptrs;
}

// One rank's all-reduce: through peer memory, on its backend's stream.
class PeerCommunicator final : public Communicator {
 public:
  PeerCommunicator(PeerAllReduce& group, int rank, cudaStream_t stream)
      : group_(group),
        rank_(rank),
        stream_(stream),
        fuse_norm_(fused_all_reduce_norm_enabled()),
        fuse_gather_(fused_greedy_gather_enabled()) {}
  int rank() const override { return rank_; }
  int world_size() const override { return group_.world_size(); }
  void all_reduce_sum(void* buf, size_t n, DType dtype) override {
    group_.all_reduce_sum(rank_, buf, n, dtype, stream_);
  }
  bool all_reduce_add_rms_norm(const void* x, void* residual, void* out, const void* w, int T, int H, float eps,
                               DType dtype, L2Prefetch next) override {
    return fuse_norm_ && group_.all_reduce_add_rms_norm(rank_, x, residual, out, w, T, H, eps, dtype, stream_, next);
  }
  bool gather_slice_argmax(const SliceArgmax* mine, int32_t* ids, int R, int64_t vocab_per_rank) override {
    return fuse_gather_ && group_.gather_slice_argmax(rank_, mine, ids, R, vocab_per_rank, stream_);
  }

 private:
  PeerAllReduce& group_;  // outlives this communicator
  int rank_;
  cudaStream_t stream_;
  bool fuse_norm_;    // LAMINA_FUSED_ALL_REDUCE_NORM, read once
  bool fuse_gather_;  // LAMINA_FUSED_GREEDY_GATHER, read once
};

}  // namespace

bool custom_all_reduce_enabled() { return cuda::ab_switch_on("LAMINA_CUSTOM_ALL_REDUCE"); }

bool fused_all_reduce_norm_enabled() { return cuda::ab_switch_on("LAMINA_FUSED_ALL_REDUCE_NORM"); }

bool fused_greedy_gather_enabled() { return cuda::ab_switch_on("LAMINA_FUSED_GREEDY_GATHER"); }

std::unique_ptr<PeerAllReduce> PeerAllReduce::create(const std::vector<int>& devices, size_t capacity_bytes,
                                                     std::string* why_not) {
  const int world = int(devices.size());
  LAMINA_CHECK(world >= 2 && world <= kPeerMaxRanks, "peer all-reduce needs 2 to ", kPeerMaxRanks, " GPUs, not ",
               world);
  LAMINA_CHECK(std::set<int>(devices.begin(), devices.end()).size() == devices.size(),
               "peer all-reduce needs distinct GPUs");
  LAMINA_CHECK(capacity_bytes >= 16 && capacity_bytes % 16 == 0, "peer all-reduce capacity must be a positive ",
               "multiple of 16 bytes, not ", capacity_bytes);
  for (int i : devices)
    for (int j : devices) {
      if (i == j) continue;
      int can = 0;
      CUDA_CHECK(cudaDeviceCanAccessPeer(&can, i, j));
      if (!can) {
        if (why_not) *why_not = "GPU " + std::to_string(i) + " cannot access GPU " + std::to_string(j) + " directly";
        return nullptr;
      }
    }
  for (int i : devices) {
    CUDA_CHECK(cudaSetDevice(i));
    for (int j : devices) {
      if (i == j) continue;
      const cudaError_t e = cudaDeviceEnablePeerAccess(j, 0);
      if (e == cudaErrorPeerAccessAlreadyEnabled) {
        (void)cudaGetLastError();  // the error is sticky in cudaGetLastError until read
      } else {
        CUDA_CHECK(e);
      }
    }
  }
  std::unique_ptr<PeerAllReduce> g(new PeerAllReduce());
  g->devices_ = devices;
  g->capacity_ = capacity_bytes;
  for (int d : devices) {
    CUDA_CHECK(cudaSetDevice(d));
    void* stage = nullptr;
    void* flags = nullptr;
    void* epochs = nullptr;
    CUDA_CHECK(cudaMalloc(&stage, 2 * capacity_bytes));
    g->staging_.push_back(stage);
    CUDA_CHECK(cudaMalloc(&flags, kFlagWords * sizeof(uint32_t)));
    g->flags_.push_back(flags);
    CUDA_CHECK(cudaMalloc(&epochs, kPeerBlocks * sizeof(uint32_t)));
    g->epochs_.push_back(epochs);
    // Call 1 waits for flags ≥ 1.
    CUDA_CHECK(cudaMemset(flags, 0, kFlagWords * sizeof(uint32_t)));
    CUDA_CHECK(cudaMemset(epochs, 0, kPeerBlocks * sizeof(uint32_t)));
    void* landing = nullptr;
    void* state = nullptr;
    const size_t landing_bytes = size_t(cuda::kLandingSlots) * size_t(world) * capacity_bytes;
    CUDA_CHECK(cudaMalloc(&landing, landing_bytes));
    g->landing_.push_back(landing);
    CUDA_CHECK(cudaMalloc(&state, cuda::kFusedNormStateWords * sizeof(uint32_t)));
    g->landing_state_.push_back(state);
    cuda::launch_fill_landing_marker(landing, landing_bytes, nullptr);
    cuda::preload_peer_norm_kernels();
    CUDA_CHECK(cudaMemset(state, 0, cuda::kFusedNormStateWords * sizeof(uint32_t)));
  }
  // The waits' limit and record, made now rather than at a first launch that may be under graph
  // capture (and a bad LAMINA_PEER_WAIT_TIMEOUT_S stops the load).
  (void)cuda::peer_wait();
  // Every rank's zeroed flags must be in place before any rank's first kernel writes into them.
  for (int d : devices) {
    CUDA_CHECK(cudaSetDevice(d));
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  return g;
}

PeerAllReduce::~PeerAllReduce() {
  // The streams that ran our kernels and the graphs that captured them are gone by now (the
  // engine destroys its backends before the communicator group).
  for (size_t r = 0; r < devices_.size(); ++r) {
    cudaSetDevice(devices_[r]);
    if (r < staging_.size()) cudaFree(staging_[r]);
    if (r < flags_.size()) cudaFree(flags_[r]);
    if (r < epochs_.size()) cudaFree(epochs_[r]);
    if (r < landing_.size()) cudaFree(landing_[r]);
    if (r < landing_state_.size()) cudaFree(landing_state_[r]);
  }
}

bool PeerAllReduce::fits(size_t n, DType dtype) const {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16) return false;
  return n * dtype_size(dtype) <= capacity_;
}

void PeerAllReduce::all_reduce_sum(int rank, void* buf, size_t n, DType dtype, cudaStream_t stream) {
  LAMINA_CHECK(rank >= 0 && rank < world_size(), "peer all-reduce rank ", rank, " of ", world_size());
  LAMINA_CHECK(fits(n, dtype), "peer all-reduce of ", n, " ", dtype_user_name(dtype), " elements exceeds its ",
               capacity_, " bytes (or the dtype is not float32, float16 or bfloat16)");
  // n == 0 still runs the kernel: every rank's counters must advance together.
  PeerPtrs peers{};
  for (int q = 0; q < world_size(); ++q) {
    peers.staging[q] = staging_[size_t(q)];
    peers.flags[q] = static_cast<uint32_t*>(flags_[size_t(q)]);
  }
  CUDA_CHECK(cudaSetDevice(devices_[size_t(rank)]));
  uint32_t* epochs = static_cast<uint32_t*>(epochs_[size_t(rank)]);
  const size_t half_elems = capacity_ / dtype_size(dtype);
  cuda::dispatch_float_type(dtype, [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch<T>(world_size(), peers, epochs, rank, buf, n, half_elems, stream);
  });
}

bool PeerAllReduce::all_reduce_add_rms_norm(int rank, const void* x, void* residual, void* out, const void* w, int T,
                                            int H, float eps, DType dtype, cudaStream_t stream, L2Prefetch next) {
  LAMINA_CHECK(rank >= 0 && rank < world_size(), "peer all-reduce rank ", rank, " of ", world_size());
  if (T < 1 || size_t(T) * size_t(H) * dtype_size(dtype) > capacity_ ||
      !cuda::peer_norm_takes(H, dtype, x, residual, out, w))
    return false;
  CUDA_CHECK(cudaSetDevice(devices_[size_t(rank)]));
  cuda::launch_peer_all_reduce_add_rms_norm(dtype, world_size(), landing_ptrs(landing_), capacity_ / dtype_size(dtype),
                                            static_cast<uint32_t*>(landing_state_[size_t(rank)]), rank, x, residual,
                                            out, w, T, H, eps, next.p, next.bytes, stream);
  return true;
}

bool PeerAllReduce::gather_slice_argmax(int rank, const SliceArgmax* mine, int32_t* ids, int R, int64_t vocab_per_rank,
                                        cudaStream_t stream) {
  LAMINA_CHECK(rank >= 0 && rank < world_size(), "peer all-reduce rank ", rank, " of ", world_size());
  const size_t slot_elems = capacity_ / 2;  // 16-bit landing elements a rank's row holds
  if (R < 1 || size_t(R) * 8 > slot_elems || vocab_per_rank < 1 || vocab_per_rank * world_size() > INT32_MAX)
    return false;
  CUDA_CHECK(cudaSetDevice(devices_[size_t(rank)]));
  cuda::launch_peer_gather_slice_argmax(world_size(), landing_ptrs(landing_), slot_elems,
                                        static_cast<uint32_t*>(landing_state_[size_t(rank)]), rank, mine, ids, R,
                                        vocab_per_rank, stream);
  return true;
}

std::unique_ptr<Communicator> PeerAllReduce::make(int rank, Backend& backend) {
  LAMINA_CHECK(rank >= 0 && rank < world_size(), "peer all-reduce rank ", rank, " of ", world_size());
  return std::make_unique<PeerCommunicator>(*this, rank, cuda_stream_of(backend));
}

}  // namespace lamina
