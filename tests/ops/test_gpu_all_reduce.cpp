// The peer-to-peer all-reduce (backends/cuda/peer_all_reduce.h) on 2..min(8, visible) GPUs:
// every rank's result equals the host's float32 sum in rank order, rounded to the dtype, bit for
// bit (so the ranks agree exactly), for odd and even sizes up to the capacity; back-to-back calls
// with no host wait between them; and calls captured into CUDA graphs and replayed, which checks
// that the call counter lives on the device and that the staging double buffer is reused safely.
// With NCCL, the group's communicators send small messages this way and large ones through NCCL.
// Skips with fewer than 2 GPUs, or when the GPUs lack peer access.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/peer_all_reduce.h"
#include "common/dtype.h"
#if LAMINA_HAVE_NCCL
#include "backends/cuda/nccl_communicator.h"
#endif

namespace lamina {
namespace {

constexpr size_t kCapacity = kPeerAllReduceDefaultCapacity;

int max_world() { return std::min(cuda_device_count(), kPeerMaxRanks); }

#define SKIP_WITHOUT_GPUS(n) \
  if (cuda_device_count() < (n)) GTEST_SKIP() << cuda_device_count() << " GPU(s) visible, " << (n) << " needed"

std::vector<int> first_devices(int world) {
  std::vector<int> d(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) d[size_t(r)] = r;
  return d;
}

// Host values of one dtype, kept as raw element bytes (4 or 2 each).
float to_f32(DType dt, const char* p) {
  if (dt == DType::F32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t b;
  std::memcpy(&b, p, 2);
  return dt == DType::BF16 ? bf16_to_float(b) : f16_to_float(b);
}

void from_f32(DType dt, float f, char* p) {
  if (dt == DType::F32) {
    std::memcpy(p, &f, 4);
    return;
  }
  const uint16_t b = dt == DType::BF16 ? float_to_bf16(f) : float_to_f16(f);
  std::memcpy(p, &b, 2);
}

// [n] random non-zero values in ±[0.1, 2), already representable in dtype.
std::vector<char> random_values(std::mt19937& rng, DType dt, size_t n) {
  std::uniform_real_distribution<float> mag(0.1f, 2.0f);
  std::vector<char> out(n * dtype_size(dt));
  for (size_t i = 0; i < n; ++i) from_f32(dt, (rng() & 1 ? -1.0f : 1.0f) * mag(rng), out.data() + i * dtype_size(dt));
  return out;
}

// The reference: float32 sum over ranks in order 0..N-1, rounded to dtype.
std::vector<char> rank_order_sum(DType dt, const std::vector<std::vector<char>>& inputs, size_t n) {
  const size_t es = dtype_size(dt);
  std::vector<char> out(n * es);
  for (size_t i = 0; i < n; ++i) {
    float acc = 0.0f;
    for (const auto& in : inputs) acc += to_f32(dt, in.data() + i * es);
    from_f32(dt, acc, out.data() + i * es);
  }
  return out;
}

// The first element where got and want differ, as text ("" when they are equal).
std::string first_difference(DType dt, const std::vector<char>& got, const std::vector<char>& want) {
  if (got.size() != want.size()) return "sizes differ";
  const size_t es = dtype_size(dt);
  for (size_t i = 0; i * es < got.size(); ++i)
    if (std::memcmp(got.data() + i * es, want.data() + i * es, es) != 0)
      return "element " + std::to_string(i) + ": got " + std::to_string(to_f32(dt, got.data() + i * es)) +
             ", want " + std::to_string(to_f32(dt, want.data() + i * es));
  return "";
}

// One GPU per rank, a stream and device buffers on each.
class Ranks {
 public:
  explicit Ranks(int world) : devices_(first_devices(world)) {
    for (int d : devices_) {
      CUDA_CHECK(cudaSetDevice(d));
      cudaStream_t s;
      CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
      streams_.push_back(s);
    }
  }
  ~Ranks() {
    for (size_t r = 0; r < devices_.size(); ++r) {
      cudaSetDevice(devices_[r]);
      cudaStreamSynchronize(streams_[r]);
      for (void* p : buffers_[r]) cudaFree(p);
      cudaStreamDestroy(streams_[r]);
    }
  }
  int world() const { return int(devices_.size()); }
  const std::vector<int>& devices() const { return devices_; }
  cudaStream_t stream(int r) const { return streams_[size_t(r)]; }
  // A buffer of `bytes` on every rank; [rank] → pointer. `offset` bytes past an aligned
  // allocation, for unaligned-input cases.
  std::vector<void*> alloc(size_t bytes, size_t offset = 0) {
    std::vector<void*> out;
    buffers_.resize(devices_.size());
    for (size_t r = 0; r < devices_.size(); ++r) {
      CUDA_CHECK(cudaSetDevice(devices_[r]));
      void* p = nullptr;
      CUDA_CHECK(cudaMalloc(&p, bytes + offset + 16));
      buffers_[r].push_back(p);
      out.push_back(static_cast<char*>(p) + offset);
    }
    return out;
  }
  void upload(int r, void* dst, const std::vector<char>& src) {
    CUDA_CHECK(cudaSetDevice(devices_[size_t(r)]));
    CUDA_CHECK(cudaMemcpyAsync(dst, src.data(), src.size(), cudaMemcpyHostToDevice, stream(r)));
  }
  std::vector<char> download(int r, const void* src, size_t bytes) {
    std::vector<char> out(bytes);
    CUDA_CHECK(cudaSetDevice(devices_[size_t(r)]));
    CUDA_CHECK(cudaMemcpyAsync(out.data(), src, bytes, cudaMemcpyDeviceToHost, stream(r)));
    CUDA_CHECK(cudaStreamSynchronize(stream(r)));
    return out;
  }
  void sync_all() {
    for (int r = 0; r < world(); ++r) {
      CUDA_CHECK(cudaSetDevice(devices_[size_t(r)]));
      CUDA_CHECK(cudaStreamSynchronize(stream(r)));
    }
  }

 private:
  std::vector<int> devices_;
  std::vector<cudaStream_t> streams_;
  std::vector<std::vector<void*>> buffers_;  // [rank] → allocations to free
};

std::unique_ptr<PeerAllReduce> make_group(const Ranks& ranks, std::string* why_not) {
  return PeerAllReduce::create(ranks.devices(), kCapacity, why_not);
}

#define MAKE_GROUP_OR_SKIP(group, ranks)                                             \
  std::string why_not_;                                                              \
  auto group = make_group(ranks, &why_not_);                                         \
  if (!group) GTEST_SKIP() << "no peer access between the GPUs: " << why_not_

const DType kDtypes[] = {DType::F32, DType::F16, DType::BF16};

// Sizes in elements: tiny, odd, a decode token of an 8B model, odd and larger, the capacity.
std::vector<size_t> sizes_for(DType dt) { return {1, 7, 4096, 4096 * 8 + 3, kCapacity / dtype_size(dt)}; }

TEST(PeerAllReduce, EqualsTheRankOrderSumOnEveryRank) {
  SKIP_WITHOUT_GPUS(2);
  std::mt19937 rng(1234);
  for (int world = 2; world <= max_world(); ++world) {
    Ranks ranks(world);
    MAKE_GROUP_OR_SKIP(group, ranks);
    for (DType dt : kDtypes)
      for (size_t n : sizes_for(dt))
        for (size_t offset : {size_t(0), dtype_size(dt)})  // aligned input, and not 16-byte aligned
          for (int round = 0; round < 3; ++round) {
            SCOPED_TRACE("world " + std::to_string(world) + ", " + dtype_user_name(dt) + ", n " + std::to_string(n) +
                         ", offset " + std::to_string(offset) + ", round " + std::to_string(round));
            const size_t bytes = n * dtype_size(dt);
            auto bufs = ranks.alloc(bytes, offset);
            std::vector<std::vector<char>> inputs;
            for (int r = 0; r < world; ++r) {
              inputs.push_back(random_values(rng, dt, n));
              ranks.upload(r, bufs[size_t(r)], inputs.back());
            }
            for (int r = 0; r < world; ++r) group->all_reduce_sum(r, bufs[size_t(r)], n, dt, ranks.stream(r));
            const std::vector<char> want = rank_order_sum(dt, inputs, n);
            std::vector<char> rank0;
            for (int r = 0; r < world; ++r) {
              const std::vector<char> got = ranks.download(r, bufs[size_t(r)], bytes);
              ASSERT_EQ(first_difference(dt, got, want), "") << "rank " << r;
              if (r == 0) rank0 = got;
              ASSERT_EQ(std::memcmp(got.data(), rank0.data(), bytes), 0) << "rank " << r << " differs from rank 0";
            }
          }
  }
}

TEST(PeerAllReduce, BackToBackCallsWithoutHostWaits) {
  // Ranks may run up to one call ahead of one another here, so the staging double buffer and
  // the flags are what keeps the calls apart.
  SKIP_WITHOUT_GPUS(2);
  std::mt19937 rng(99);
  const int world = max_world(), calls = 9;
  Ranks ranks(world);
  MAKE_GROUP_OR_SKIP(group, ranks);
  for (DType dt : kDtypes) {
    SCOPED_TRACE(dtype_user_name(dt));
    std::vector<size_t> ns;
    std::vector<std::vector<void*>> bufs;
    std::vector<std::vector<std::vector<char>>> inputs(calls);
    for (int c = 0; c < calls; ++c) {
      ns.push_back(c % 3 == 0 ? 4096 : c % 3 == 1 ? 4096 * 8 + 3 : 7);
      bufs.push_back(ranks.alloc(ns.back() * dtype_size(dt)));
      for (int r = 0; r < world; ++r) {
        inputs[size_t(c)].push_back(random_values(rng, dt, ns.back()));
        ranks.upload(r, bufs.back()[size_t(r)], inputs[size_t(c)].back());
      }
    }
    for (int r = 0; r < world; ++r)
      for (int c = 0; c < calls; ++c) group->all_reduce_sum(r, bufs[size_t(c)][size_t(r)], ns[size_t(c)], dt, ranks.stream(r));
    ranks.sync_all();
    for (int c = 0; c < calls; ++c) {
      const std::vector<char> want = rank_order_sum(dt, inputs[size_t(c)], ns[size_t(c)]);
      for (int r = 0; r < world; ++r)
        ASSERT_EQ(first_difference(dt, ranks.download(r, bufs[size_t(c)][size_t(r)], want.size()), want), "")
            << "call " << c << ", rank " << r;
    }
  }
}

TEST(PeerAllReduce, CapturedInACudaGraphAndReplayed) {
  // Each graph holds three calls (a: n elements, b: m elements, a again), so replays start on
  // alternating staging halves; the kernel's arguments are frozen, the call counter is not.
  SKIP_WITHOUT_GPUS(2);
  std::mt19937 rng(7);
  std::vector<int> worlds = {2};
  if (max_world() > 2) worlds.push_back(max_world());
  for (int world : worlds) {
    Ranks ranks(world);
    MAKE_GROUP_OR_SKIP(group, ranks);
    for (DType dt : kDtypes) {
      SCOPED_TRACE("world " + std::to_string(world) + ", " + dtype_user_name(dt));
      const size_t n = 4096, m = 4096 * 8 + 3, es = dtype_size(dt);
      auto a = ranks.alloc(n * es), b = ranks.alloc(m * es);
      // One eager call first, as the engine's first step runs its ops before capturing them.
      for (int r = 0; r < world; ++r) ranks.upload(r, a[size_t(r)], random_values(rng, dt, n));
      for (int r = 0; r < world; ++r) group->all_reduce_sum(r, a[size_t(r)], n, dt, ranks.stream(r));
      ranks.sync_all();
      std::vector<cudaGraphExec_t> execs;
      for (int r = 0; r < world; ++r) {
        CUDA_CHECK(cudaSetDevice(ranks.devices()[size_t(r)]));
        cudaGraph_t graph = nullptr;
        CUDA_CHECK(cudaStreamBeginCapture(ranks.stream(r), cudaStreamCaptureModeThreadLocal));
        group->all_reduce_sum(r, a[size_t(r)], n, dt, ranks.stream(r));
        group->all_reduce_sum(r, b[size_t(r)], m, dt, ranks.stream(r));
        group->all_reduce_sum(r, a[size_t(r)], n, dt, ranks.stream(r));
        CUDA_CHECK(cudaStreamEndCapture(ranks.stream(r), &graph));
        cudaGraphExec_t exec = nullptr;
        CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
        CUDA_CHECK(cudaGraphDestroy(graph));
        execs.push_back(exec);
      }
      for (int replay = 0; replay < 5; ++replay) {
        SCOPED_TRACE("replay " + std::to_string(replay));
        std::vector<std::vector<char>> in_a, in_b;
        for (int r = 0; r < world; ++r) {
          in_a.push_back(random_values(rng, dt, n));
          in_b.push_back(random_values(rng, dt, m));
          ranks.upload(r, a[size_t(r)], in_a.back());
          ranks.upload(r, b[size_t(r)], in_b.back());
        }
        for (int r = 0; r < world; ++r) {
          CUDA_CHECK(cudaSetDevice(ranks.devices()[size_t(r)]));
          CUDA_CHECK(cudaGraphLaunch(execs[size_t(r)], ranks.stream(r)));
        }
        // a is reduced twice: the second time every rank holds the first sum.
        const std::vector<char> once = rank_order_sum(dt, in_a, n);
        const std::vector<char> want_a = rank_order_sum(dt, std::vector<std::vector<char>>(size_t(world), once), n);
        const std::vector<char> want_b = rank_order_sum(dt, in_b, m);
        for (int r = 0; r < world; ++r) {
          ASSERT_EQ(first_difference(dt, ranks.download(r, a[size_t(r)], n * es), want_a), "") << "a, rank " << r;
          ASSERT_EQ(first_difference(dt, ranks.download(r, b[size_t(r)], m * es), want_b), "") << "b, rank " << r;
        }
      }
      ranks.sync_all();
      for (int r = 0; r < world; ++r) {
        CUDA_CHECK(cudaSetDevice(ranks.devices()[size_t(r)]));
        CUDA_CHECK(cudaGraphExecDestroy(execs[size_t(r)]));
      }
    }
  }
}

TEST(PeerAllReduce, RefusesMessagesOverItsCapacity) {
  SKIP_WITHOUT_GPUS(2);
  Ranks ranks(2);
  MAKE_GROUP_OR_SKIP(group, ranks);
  EXPECT_TRUE(group->fits(kCapacity / 2, DType::BF16));
  EXPECT_FALSE(group->fits(kCapacity / 2 + 1, DType::BF16));
  EXPECT_FALSE(group->fits(1, DType::I8));
  auto buf = ranks.alloc(kCapacity + 2);
  EXPECT_THROW(group->all_reduce_sum(0, buf[0], kCapacity / 2 + 1, DType::BF16, ranks.stream(0)), Error);
}

#if LAMINA_HAVE_NCCL
TEST(PeerAllReduce, NcclGroupSendsSmallMessagesPeerToPeerAndLargeOnesThroughNccl) {
  // Through the engine's path: NcclGroup::make on CUDA backends, one thread per rank. Up to the
  // capacity the result is the exact rank-order sum; above it NCCL's (its own order) within
  // bf16 rounding.
  SKIP_WITHOUT_GPUS(2);
  if (!custom_all_reduce_enabled()) GTEST_SKIP() << "LAMINA_CUSTOM_ALL_REDUCE=0";
  const int world = max_world();
  const DType dt = DType::BF16;
  const std::vector<size_t> sizes = {4096, kCapacity / 2, kCapacity / 2 + 1};
  auto group = NcclGroup::create_local(first_devices(world));
  std::vector<std::unique_ptr<Backend>> backends;
  std::vector<std::unique_ptr<Communicator>> comms;
  for (int r = 0; r < world; ++r) {
    backends.push_back(make_cuda_backend(r, dt));
    comms.push_back(group->make(size_t(r), *backends.back()));
  }
  std::mt19937 rng(5);
  for (size_t n : sizes) {
    SCOPED_TRACE("n " + std::to_string(n));
    std::vector<std::vector<char>> inputs, outputs(static_cast<size_t>(world));
    for (int r = 0; r < world; ++r) inputs.push_back(random_values(rng, dt, n));
    std::vector<std::thread> threads;
    for (int r = 0; r < world; ++r)
      threads.emplace_back([&, r] {
        Backend& be = *backends[size_t(r)];
        void* buf = be.alloc(inputs[size_t(r)].size());
        be.copy_to_device(buf, inputs[size_t(r)].data(), inputs[size_t(r)].size());
        comms[size_t(r)]->all_reduce_sum(buf, n, dt);
        outputs[size_t(r)].resize(inputs[size_t(r)].size());
        be.copy_to_host(outputs[size_t(r)].data(), buf, outputs[size_t(r)].size());
        be.free(buf);
      });
    for (auto& t : threads) t.join();
    const std::vector<char> want = rank_order_sum(dt, inputs, n);
    for (int r = 0; r < world; ++r) {
      if (n * dtype_size(dt) <= kCapacity) {
        ASSERT_EQ(first_difference(dt, outputs[size_t(r)], want), "") << "rank " << r;
      } else {
        for (size_t i = 0; i < n; ++i) {
          const float w = to_f32(dt, want.data() + 2 * i), g = to_f32(dt, outputs[size_t(r)].data() + 2 * i);
          ASSERT_NEAR(g, w, 2e-2f * (std::abs(w) + float(world))) << "rank " << r << ", element " << i;
        }
      }
    }
  }
  comms.clear();
  backends.clear();
}
#endif

}  // namespace
}  // namespace lamina
