// The peer-to-peer all-reduce (backends/cuda/peer_all_reduce.h) on 2..min(8, visible) GPUs:
// every rank's result equals the host's float32 sum in rank order, rounded to the dtype, bit for
// bit (so the ranks agree exactly), for odd and even sizes up to the capacity; back-to-back calls
// with no host wait between them; and calls captured into CUDA graphs and replayed, which checks
// that the call counter lives on the device and that the staging double buffer is reused safely.
// With NCCL, the group's communicators send small messages this way and large ones through NCCL.
// The fused all-reduce + residual add + RMSNorm (all_reduce_add_rms_norm) equals, bit for bit, the
// unfused all_reduce_sum then add_rms_norm kernel, back to back, mixed with plain all-reduces,
// and replayed from CUDA graphs (which cycles its three landing slots and their clearing). The
// greedy gather over a split vocabulary (gather_slice_argmax), a call of the same protocol, makes
// combine_slice_argmax's ids on every rank, between fused norms and from graphs. A rank whose peer
// never calls gives up after LAMINA_PEER_WAIT_TIMEOUT_S with an error that names the peer, in every
// form (child processes: the kernel's trap ends the process's CUDA context).
// Skips with fewer than 2 GPUs, or when the GPUs lack peer access.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels.h"
#include "backends/cuda/peer_all_reduce.h"
#include "common/dtype.h"
#include "ops/token_choice.h"
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
  explicit Ranks(int world) : devices_(first_devices(world)), graphs_(devices_.size()) {
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
      for (cudaGraphExec_t g : graphs_[r]) cudaGraphExecDestroy(g);
      if (r < buffers_.size())
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
  // Captures what `ops` issues on rank r's stream into an instantiated graph, which lives as long
  // as this Ranks. A rank's graphs are its own: ranks may capture from threads of their own.
  cudaGraphExec_t capture(int r, const std::function<void()>& ops) {
    CUDA_CHECK(cudaSetDevice(devices_[size_t(r)]));
    cudaGraph_t graph = nullptr;
    CUDA_CHECK(cudaStreamBeginCapture(stream(r), cudaStreamCaptureModeThreadLocal));
    ops();
    CUDA_CHECK(cudaStreamEndCapture(stream(r), &graph));
    cudaGraphExec_t exec = nullptr;
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    CUDA_CHECK(cudaGraphDestroy(graph));
    graphs_[size_t(r)].push_back(exec);
    return exec;
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
  std::vector<std::vector<cudaGraphExec_t>> graphs_;  // [rank] → captured graphs to destroy
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
      for (int r = 0; r < world; ++r)
        execs.push_back(ranks.capture(r, [&] {
          group->all_reduce_sum(r, a[size_t(r)], n, dt, ranks.stream(r));
          group->all_reduce_sum(r, b[size_t(r)], m, dt, ranks.stream(r));
          group->all_reduce_sum(r, a[size_t(r)], n, dt, ranks.stream(r));
        }));
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

// ---- all_reduce_add_rms_norm ----

constexpr float kEps = 1e-5f;

// One fused call's buffers and inputs on every rank, and the same call done the unfused way.
struct NormCall {
  int T = 0, H = 0;
  std::vector<std::vector<char>> x;  // [rank] → [T, H], different on every rank
  std::vector<char> residual, w;     // the same on every rank (as in the engine)
  std::vector<void*> x_dev, residual_dev, out_dev;            // fused
  std::vector<void*> x_ref, residual_ref, out_ref, w_dev;    // unfused; w shared by both
};

NormCall make_norm_call(Ranks& ranks, std::mt19937& rng, DType dt, int T, int H) {
  NormCall c;
  c.T = T;
  c.H = H;
  const size_t n = size_t(T) * size_t(H), bytes = n * dtype_size(dt);
  c.residual = random_values(rng, dt, n);
  c.w = random_values(rng, dt, size_t(H));
  for (auto* v : {&c.x_dev, &c.residual_dev, &c.out_dev, &c.x_ref, &c.residual_ref, &c.out_ref})
    *v = ranks.alloc(bytes);
  c.w_dev = ranks.alloc(size_t(H) * dtype_size(dt));
  for (int r = 0; r < ranks.world(); ++r) {
    c.x.push_back(random_values(rng, dt, n));
    // Some -0.0 values: the bit pattern that marks an empty landing element must still arrive.
    for (size_t i = size_t(r); i < n; i += 97) from_f32(dt, -0.0f, c.x.back().data() + i * dtype_size(dt));
    const size_t rr = size_t(r);
    ranks.upload(r, c.x_dev[rr], c.x.back());
    ranks.upload(r, c.x_ref[rr], c.x.back());
    ranks.upload(r, c.residual_dev[rr], c.residual);
    ranks.upload(r, c.residual_ref[rr], c.residual);
    ranks.upload(r, c.w_dev[rr], c.w);
  }
  return c;
}

// fn(r) on one thread per rank, each on its rank's device, as the engine enqueues a step's
// collectives: a kernel that waits for its peers is never launched behind another rank's on one
// host thread.
template <typename Fn>
void on_each_rank(Ranks& ranks, const Fn& fn) {
  std::vector<std::thread> threads;
  for (int r = 0; r < ranks.world(); ++r)
    threads.emplace_back([&, r] {
      CUDA_CHECK(cudaSetDevice(ranks.devices()[size_t(r)]));
      fn(r);
    });
  for (auto& t : threads) t.join();
}

// With an L2 prefetch hint, as the forward passes one (the next projection's weights; here another
// buffer of the rank's): a hint, so the results stay bit for bit those of the unfused path.
bool run_fused(PeerAllReduce& group, Ranks& ranks, DType dt, const NormCall& c, int r) {
  const size_t rr = size_t(r);
  const L2Prefetch next{c.x_ref[rr], size_t(c.T) * size_t(c.H) * dtype_size(dt)};
  return group.all_reduce_add_rms_norm(r, c.x_dev[rr], c.residual_dev[rr], c.out_dev[rr], c.w_dev[rr], c.T, c.H, kEps,
                                       dt, ranks.stream(r), next);
}

void run_unfused(PeerAllReduce& group, Ranks& ranks, DType dt, const NormCall& c, int r) {
  const size_t rr = size_t(r);
  group.all_reduce_sum(r, c.x_ref[rr], size_t(c.T) * size_t(c.H), dt, ranks.stream(r));
  cuda::launch_add_rms_norm(dt, c.residual_ref[rr], c.x_ref[rr], c.out_ref[rr], c.w_dev[rr], c.T, c.H, kEps,
                            ranks.stream(r));
}

// Every rank's fused residual and output equal the unfused ones, bit for bit, and the ranks agree.
void expect_fused_equals_unfused(Ranks& ranks, DType dt, const NormCall& c) {
  const size_t bytes = size_t(c.T) * size_t(c.H) * dtype_size(dt);
  std::vector<char> out0;
  for (int r = 0; r < ranks.world(); ++r) {
    const size_t rr = size_t(r);
    const std::vector<char> out = ranks.download(r, c.out_dev[rr], bytes);
    ASSERT_EQ(first_difference(dt, out, ranks.download(r, c.out_ref[rr], bytes)), "") << "normed, rank " << r;
    ASSERT_EQ(first_difference(dt, ranks.download(r, c.residual_dev[rr], bytes),
                               ranks.download(r, c.residual_ref[rr], bytes)),
              "")
        << "residual, rank " << r;
    ASSERT_NE(first_difference(dt, ranks.download(r, c.residual_dev[rr], bytes), c.residual), "")
        << "the residual was not updated, rank " << r;
    ASSERT_EQ(first_difference(dt, ranks.download(r, c.x_dev[rr], bytes), c.x[rr]), "") << "x changed, rank " << r;
    if (r == 0) out0 = out;
    ASSERT_EQ(std::memcmp(out.data(), out0.data(), bytes), 0) << "rank " << r << " differs from rank 0";
  }
}

// (T, H): a decode token of an 8B and a 70B model, a few tokens, two 16-byte accesses a thread
// (12288, 16384), the whole capacity (64 × 4096 bf16), more rows than the kernel's blocks, small rows.
const std::pair<int, int> kNormShapes[] = {{1, 4096}, {1, 8192}, {3, 8192}, {2, 12288}, {1, 16384},
                                           {64, 4096}, {45, 512}, {5, 64}};


TEST(PeerAllReduceNorm, EqualsAllReduceThenAddRmsNormBitForBit) {
  // All shapes back to back with no host wait, unfused calls after them: every landing slot is
  // reused and cleared after calls of other sizes.
  SKIP_WITHOUT_GPUS(2);
  std::mt19937 rng(31);
  for (int world = 2; world <= max_world(); ++world) {
    Ranks ranks(world);
    MAKE_GROUP_OR_SKIP(group, ranks);
    for (DType dt : {DType::BF16, DType::F16}) {
      SCOPED_TRACE("world " + std::to_string(world) + ", " + dtype_user_name(dt));
      std::vector<NormCall> calls;
      for (auto [T, H] : kNormShapes) calls.push_back(make_norm_call(ranks, rng, dt, T, H));
      std::vector<int> taken(size_t(world), 0);
      on_each_rank(ranks, [&](int r) {
        for (const NormCall& c : calls) taken[size_t(r)] += run_fused(*group, ranks, dt, c, r);
        for (const NormCall& c : calls) run_unfused(*group, ranks, dt, c, r);
      });
      ranks.sync_all();
      for (int r = 0; r < world; ++r) ASSERT_EQ(taken[size_t(r)], int(calls.size())) << "rank " << r;
      for (const NormCall& c : calls) {
        SCOPED_TRACE("T " + std::to_string(c.T) + ", H " + std::to_string(c.H));
        expect_fused_equals_unfused(ranks, dt, c);
      }
    }
  }
}

TEST(PeerAllReduceNorm, InterleavedWithAllReducesAndReplayedFromGraphs) {
  // A graph per rank holding fused(1 × 8192), all_reduce_sum, fused(3 × 4096), as a decode step
  // holds its layers' all-reduces; replayed 5 times (slots 1..3 come round more than once).
  SKIP_WITHOUT_GPUS(2);
  std::mt19937 rng(8);
  const int world = max_world();
  const DType dt = DType::BF16;
  Ranks ranks(world);
  MAKE_GROUP_OR_SKIP(group, ranks);
  NormCall a = make_norm_call(ranks, rng, dt, 1, 8192), b = make_norm_call(ranks, rng, dt, 3, 4096);
  const size_t m = 4096 * 8 + 3;
  auto plain = ranks.alloc(m * 2);
  std::vector<cudaGraphExec_t> execs(size_t(world), nullptr);
  std::vector<int> taken(size_t(world), 0);
  on_each_rank(ranks, [&](int r) {
    taken[size_t(r)] += run_fused(*group, ranks, dt, a, r);  // an eager call first, as the engine's first step
    CUDA_CHECK(cudaStreamSynchronize(ranks.stream(r)));
    execs[size_t(r)] = ranks.capture(r, [&] {
      taken[size_t(r)] += run_fused(*group, ranks, dt, a, r);
      group->all_reduce_sum(r, plain[size_t(r)], m, dt, ranks.stream(r));
      taken[size_t(r)] += run_fused(*group, ranks, dt, b, r);
    });
  });
  for (int r = 0; r < world; ++r) ASSERT_EQ(taken[size_t(r)], 3) << "rank " << r;
  for (int replay = 0; replay < 5; ++replay) {
    SCOPED_TRACE("replay " + std::to_string(replay));
    std::vector<std::vector<char>> in_plain;
    for (NormCall* c : {&a, &b}) {  // fresh inputs; both paths start from the same residual
      c->residual = random_values(rng, dt, size_t(c->T) * size_t(c->H));
      for (int r = 0; r < world; ++r) {
        c->x[size_t(r)] = random_values(rng, dt, size_t(c->T) * size_t(c->H));
        for (void* dst : {c->x_dev[size_t(r)], c->x_ref[size_t(r)]}) ranks.upload(r, dst, c->x[size_t(r)]);
        for (void* dst : {c->residual_dev[size_t(r)], c->residual_ref[size_t(r)]}) ranks.upload(r, dst, c->residual);
      }
    }
    for (int r = 0; r < world; ++r) {
      in_plain.push_back(random_values(rng, dt, m));
      ranks.upload(r, plain[size_t(r)], in_plain.back());
    }
    on_each_rank(ranks, [&](int r) {
      CUDA_CHECK(cudaGraphLaunch(execs[size_t(r)], ranks.stream(r)));
      run_unfused(*group, ranks, dt, a, r);
      run_unfused(*group, ranks, dt, b, r);
    });
    ranks.sync_all();
    expect_fused_equals_unfused(ranks, dt, a);
    expect_fused_equals_unfused(ranks, dt, b);
    const std::vector<char> want = rank_order_sum(dt, in_plain, m);
    for (int r = 0; r < world; ++r)
      ASSERT_EQ(first_difference(dt, ranks.download(r, plain[size_t(r)], m * 2), want), "") << "plain, rank " << r;
  }
}

TEST(PeerAllReduceNorm, DeclinesWhatItDoesNotTake) {
  // float32, a row that is not whole 16-byte units or too long, more than the capacity, an
  // unaligned buffer: false, and nothing runs (the caller then takes the unfused path).
  SKIP_WITHOUT_GPUS(2);
  Ranks ranks(2);
  MAKE_GROUP_OR_SKIP(group, ranks);
  auto buf = ranks.alloc(kCapacity + 64);
  void* p = buf[0];
  void* odd = static_cast<char*>(p) + 2;
  EXPECT_FALSE(group->all_reduce_add_rms_norm(0, p, p, p, p, 1, 4096, kEps, DType::F32, ranks.stream(0)));
  EXPECT_FALSE(group->all_reduce_add_rms_norm(0, p, p, p, p, 1, 4100, kEps, DType::BF16, ranks.stream(0)));
  EXPECT_FALSE(group->all_reduce_add_rms_norm(0, p, p, p, p, 1, 16384 + 8, kEps, DType::BF16, ranks.stream(0)));
  EXPECT_FALSE(group->all_reduce_add_rms_norm(0, p, p, p, p, 65, 4096, kEps, DType::BF16, ranks.stream(0)));
  EXPECT_FALSE(group->all_reduce_add_rms_norm(0, p, p, p, p, 0, 4096, kEps, DType::BF16, ranks.stream(0)));
  EXPECT_FALSE(group->all_reduce_add_rms_norm(0, odd, p, p, p, 1, 4096, kEps, DType::BF16, ranks.stream(0)));
}

// One greedy gather's inputs: R slice argmaxes a rank (rank `empty_rank`'s slice has none: it
// passes nullptr), and the ids combine_slice_argmax makes of them, which every rank must choose.
struct GatherCall {
  int R = 0;
  int64_t vocab_per_rank = 0;
  int empty_rank = -1;
  std::vector<std::vector<SliceArgmax>> pairs;  // [rank][R]
  std::vector<void*> mine, ids;                 // [rank] → device buffers
  std::vector<int32_t> want;
};

// Values drawn from a few, so ranks tie (the lowest global index must win), with NaN (never wins),
// -0.0 and indices such as 32768, whose 16-bit halves are the landing marker's bit pattern.
void fill_gather_inputs(GatherCall& g, std::mt19937& rng, int world) {
  const float kValues[] = {-1.5f, 0.25f, 3.0f, -0.0f, std::nanf(""), 7.5e3f, -2.0e-7f};
  const int32_t kIndices[] = {0, 1, 32768, 0x8000 + 5, int32_t(g.vocab_per_rank - 1)};
  g.pairs.assign(size_t(world), std::vector<SliceArgmax>(size_t(g.R)));
  for (auto& rank_pairs : g.pairs)
    for (SliceArgmax& p : rank_pairs) {
      p.value = kValues[rng() % std::size(kValues)];
      p.index = rng() % 3 == 0 ? kIndices[rng() % std::size(kIndices)] : int32_t(rng() % g.vocab_per_rank);
    }
  g.want.assign(size_t(g.R), 0);
  std::vector<SliceArgmax> row(static_cast<size_t>(world));
  for (int r = 0; r < g.R; ++r) {
    for (int q = 0; q < world; ++q)
      row[size_t(q)] = q == g.empty_rank ? SliceArgmax{std::nanf(""), 0} : g.pairs[size_t(q)][size_t(r)];
    g.want[size_t(r)] = combine_slice_argmax(row.data(), world, g.vocab_per_rank);
  }
}

void upload_gather_inputs(Ranks& ranks, const GatherCall& g) {
  for (int q = 0; q < ranks.world(); ++q) {
    const auto* p = reinterpret_cast<const char*>(g.pairs[size_t(q)].data());
    ranks.upload(q, g.mine[size_t(q)], std::vector<char>(p, p + size_t(g.R) * sizeof(SliceArgmax)));
  }
}

GatherCall make_gather_call(Ranks& ranks, std::mt19937& rng, int R, int64_t vocab_per_rank, int empty_rank) {
  GatherCall g;
  g.R = R;
  g.vocab_per_rank = vocab_per_rank;
  g.empty_rank = empty_rank;
  g.mine = ranks.alloc(size_t(R) * sizeof(SliceArgmax));
  g.ids = ranks.alloc(size_t(R) * sizeof(int32_t));
  fill_gather_inputs(g, rng, ranks.world());
  upload_gather_inputs(ranks, g);
  return g;
}

bool run_gather(PeerAllReduce& group, Ranks& ranks, const GatherCall& g, int r) {
  const auto* mine = r == g.empty_rank ? nullptr : static_cast<const SliceArgmax*>(g.mine[size_t(r)]);
  return group.gather_slice_argmax(r, mine, static_cast<int32_t*>(g.ids[size_t(r)]), g.R, g.vocab_per_rank,
                                   ranks.stream(r));
}

void expect_gathered(Ranks& ranks, const GatherCall& g) {
  for (int r = 0; r < ranks.world(); ++r) {
    const std::vector<char> raw = ranks.download(r, g.ids[size_t(r)], size_t(g.R) * sizeof(int32_t));
    std::vector<int32_t> got(size_t(g.R));
    std::memcpy(got.data(), raw.data(), raw.size());
    for (int i = 0; i < g.R; ++i) ASSERT_EQ(got[size_t(i)], g.want[size_t(i)]) << "rank " << r << ", row " << i;
  }
}

TEST(PeerGatherSliceArgmax, EveryRankChoosesAsCombineSliceArgmax) {
  // Rows from 1 to more than the kernel's threads, a rank whose slice has no candidate, back to back
  // with fused norms between them (one sequence of calls: they share the landing slots).
  SKIP_WITHOUT_GPUS(2);
  std::mt19937 rng(17);
  for (int world = 2; world <= max_world(); ++world) {
    SCOPED_TRACE("world " + std::to_string(world));
    Ranks ranks(world);
    MAKE_GROUP_OR_SKIP(group, ranks);
    std::vector<GatherCall> gathers;
    for (int R : {1, 5, 64, 4100}) gathers.push_back(make_gather_call(ranks, rng, R, 64128, -1));
    gathers.push_back(make_gather_call(ranks, rng, 3, 50000, world - 1));
    NormCall norm = make_norm_call(ranks, rng, DType::BF16, 1, 4096);
    std::vector<int> taken(size_t(world), 0);
    on_each_rank(ranks, [&](int r) {
      for (const GatherCall& g : gathers) {
        taken[size_t(r)] += run_gather(*group, ranks, g, r);
        taken[size_t(r)] += run_fused(*group, ranks, DType::BF16, norm, r);
      }
    });
    ranks.sync_all();
    for (int r = 0; r < world; ++r) ASSERT_EQ(taken[size_t(r)], 2 * int(gathers.size())) << "rank " << r;
    for (const GatherCall& g : gathers) {
      SCOPED_TRACE("R " + std::to_string(g.R));
      expect_gathered(ranks, g);
    }
    EXPECT_FALSE(group->gather_slice_argmax(0, nullptr, nullptr, 0, 64128, ranks.stream(0)));
    EXPECT_FALSE(group->gather_slice_argmax(0, nullptr, nullptr, int(kCapacity / 16) + 1, 64128, ranks.stream(0)));
  }
}

TEST(PeerGatherSliceArgmax, ReplayedFromGraphsBetweenFusedNorms) {
  // As a decode step's graph ends: fused norms, then the gather; replayed with fresh pairs.
  SKIP_WITHOUT_GPUS(2);
  std::mt19937 rng(23);
  const int world = max_world();
  const DType dt = DType::BF16;
  Ranks ranks(world);
  MAKE_GROUP_OR_SKIP(group, ranks);
  NormCall a = make_norm_call(ranks, rng, dt, 1, 4096);
  GatherCall g = make_gather_call(ranks, rng, 2, 64128, -1);
  std::vector<cudaGraphExec_t> execs(size_t(world), nullptr);
  on_each_rank(ranks, [&](int r) {
    run_gather(*group, ranks, g, r);  // an eager call first
    CUDA_CHECK(cudaStreamSynchronize(ranks.stream(r)));
    execs[size_t(r)] = ranks.capture(r, [&] {
      run_fused(*group, ranks, dt, a, r);
      run_fused(*group, ranks, dt, a, r);
      run_gather(*group, ranks, g, r);
    });
  });
  ranks.sync_all();
  expect_gathered(ranks, g);
  for (int replay = 0; replay < 5; ++replay) {
    SCOPED_TRACE("replay " + std::to_string(replay));
    fill_gather_inputs(g, rng, world);
    upload_gather_inputs(ranks, g);
    on_each_rank(ranks, [&](int r) { CUDA_CHECK(cudaGraphLaunch(execs[size_t(r)], ranks.stream(r))); });
    ranks.sync_all();
    expect_gathered(ranks, g);
  }
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

// A rank whose peer never makes its call (the peer's host thread failed, or its GPU was lost) must
// not spin for ever: its kernel gives up after LAMINA_PEER_WAIT_TIMEOUT_S, says so, and traps, so
// that the rank's next synchronisation fails. The trap leaves the process's CUDA context unusable,
// so each form runs in a child process (this binary, the LoneRank test below, which runs only when
// the parent sets LAMINA_PEER_WAIT_CHILD to the form) and the parent reads what it printed.
const char* const kLoneForms[] = {"all_reduce", "fused_norm", "gather"};

TEST(PeerWait, ARankLeftAloneGivesUpWithAnErrorInsteadOfHanging) {
  SKIP_WITHOUT_GPUS(2);
  {
    Ranks ranks(2);
    MAKE_GROUP_OR_SKIP(group, ranks);
  }
  char exe[4096];  // this binary (popen runs a shell, whose /proc/self/exe is the shell)
  const ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  ASSERT_GT(len, 0);
  exe[len] = 0;
  for (const char* form : kLoneForms) {
    const std::string cmd = std::string("LAMINA_PEER_WAIT_CHILD=") + form + " LAMINA_PEER_WAIT_TIMEOUT_S=1 '" + exe +
                            "' --gtest_filter=PeerWait.LoneRank 2>&1";
    const auto start = std::chrono::steady_clock::now();
    FILE* child = popen(cmd.c_str(), "r");
    ASSERT_NE(child, nullptr);
    std::string output;
    char chunk[4096];
    for (size_t got; (got = std::fread(chunk, 1, sizeof(chunk), child)) > 0;) output.append(chunk, got);
    const int status = pclose(child);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    SCOPED_TRACE(std::string(form) + ", the child's output:\n" + output);
    EXPECT_EQ(status, 0) << "the lone rank's test failed";
    EXPECT_NE(output.find("[  PASSED  ] 1 test"), std::string::npos) << "the lone rank's test did not run";
    EXPECT_NE(output.find("rank 0 waited 1 s for rank 1 in an all-reduce and gave up"), std::string::npos);
    EXPECT_NE(output.find("CUDA error"), std::string::npos);
    EXPECT_LT(seconds, 60.0) << "gave up too late";
  }
}

TEST(PeerWait, LoneRank) {
  const char* form = std::getenv("LAMINA_PEER_WAIT_CHILD");
  if (form == nullptr) GTEST_SKIP() << "runs as the child of ARankLeftAloneGivesUpWithAnErrorInsteadOfHanging";
  Ranks ranks(2);
  std::string why_not;
  auto group = make_group(ranks, &why_not);
  ASSERT_NE(group, nullptr) << why_not;
  std::mt19937 rng(7);
  const DType dt = DType::BF16;
  // Rank 0 alone makes one call of the form; rank 1 never does.
  const std::string f = form;
  if (f == "all_reduce") {
    const std::vector<void*> buf = ranks.alloc(4096 * dtype_size(dt));
    group->all_reduce_sum(0, buf[0], 4096, dt, ranks.stream(0));
  } else if (f == "fused_norm") {
    const NormCall c = make_norm_call(ranks, rng, dt, 1, 4096);
    ASSERT_TRUE(run_fused(*group, ranks, dt, c, 0));
  } else {
    ASSERT_EQ(f, "gather");
    const GatherCall g = make_gather_call(ranks, rng, 1, 1000, -1);
    ASSERT_TRUE(run_gather(*group, ranks, g, 0));
  }
  try {
    CUDA_CHECK(cudaSetDevice(ranks.devices()[0]));
    CUDA_CHECK(cudaStreamSynchronize(ranks.stream(0)));
    FAIL() << "the lone call finished";
  } catch (const Error& e) {
    std::fflush(stdout);  // the kernel's message, printed at the synchronisation
    std::fprintf(stderr, "%s\n", e.what());
  }
}

}  // namespace
}  // namespace lamina
