// All-reduce time between the GPUs of this machine, as the tensor-parallel decode step uses it:
// each rank on its own thread and CUDA backend, the calls captured into a CUDA graph (as the
// engine's decode graphs capture them) and replayed, bfloat16 sums in place. For each world size
// (2, 4, 8: as many GPUs as there are) and message size it prints microseconds a call for the
// engine's communicators (peer-to-peer kernel for small messages, NCCL above) and for NCCL alone
// (LAMINA_CUSTOM_ALL_REDUCE=0). The sizes are one decode token of Llama-3-8B (4096) and -70B
// (8192), 8 such tokens, and a 2048-token prefill of 70B. The time includes the wait for the
// slowest rank, as in the engine. For the decode sizes it also times what the engine's layers
// run: the all-reduce followed by the residual add + RMSNorm kernel, against the two fused into
// one kernel (Communicator::all_reduce_add_rms_norm). docs/tensor-parallel.md uses it for the
// tp bound:
//   bench_all_reduce [--json FILE] [--calls N] [--replays N]
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/nccl_communicator.h"
#include "common/error.h"
#include "common/json.h"
#include "runtime/rank_workers.h"

namespace lamina {
namespace {

struct Rank {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Communicator> comm;
  DeviceBuffer buf, residual, normed, norm_weight;  // residual etc.: [8, 8192] bf16 at most
};

constexpr float kEps = 1e-5f;

// Microseconds a call: `calls` calls of op (one all-reduce, or what stands for it) captured into
// one graph per rank, the graph replayed `replays` times after one warm-up replay; the slowest
// rank's time.
template <typename Op>
double time_calls(std::vector<Rank>& ranks, RankWorkers& workers, int calls, int replays, const Op& op) {
  std::vector<double> us(ranks.size());
  workers.run([&](size_t r) {
    Rank& rk = ranks[r];
    cudaStream_t s = cuda_stream_of(*rk.backend);
    op(rk);  // first calls connect outside capture
    rk.backend->synchronize();
    cudaGraph_t graph = nullptr;
    cudaGraphExec_t exec = nullptr;
    CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < calls; ++i) op(rk);
    CUDA_CHECK(cudaStreamEndCapture(s, &graph));
    CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
    CUDA_CHECK(cudaGraphLaunch(exec, s));  // warm-up
    CUDA_CHECK(cudaStreamSynchronize(s));
    cudaEvent_t a, b;
    CUDA_CHECK(cudaEventCreate(&a));
    CUDA_CHECK(cudaEventCreate(&b));
    CUDA_CHECK(cudaEventRecord(a, s));
    for (int i = 0; i < replays; ++i) CUDA_CHECK(cudaGraphLaunch(exec, s));
    CUDA_CHECK(cudaEventRecord(b, s));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    us[r] = 1e3 * ms / (double(calls) * replays);
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  });
  return *std::max_element(us.begin(), us.end());
}

int run(int argc, char** argv) {
  std::string json_path;
  int calls = 64, replays = 20;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a == "--calls" && i + 1 < argc) calls = std::atoi(argv[++i]);
    else if (a == "--replays" && i + 1 < argc) replays = std::atoi(argv[++i]);
    else fail("unknown argument '", a, "' (bench_all_reduce [--json FILE] [--calls N] [--replays N])");
  }
  LAMINA_CHECK(calls > 0 && replays > 0, "--calls and --replays must be positive");
  const int gpus = cuda_device_count();
  if (gpus < 2) {
    std::printf("bench_all_reduce: %d GPU(s) visible, 2 or more needed\n", gpus);
    return 0;
  }
  nccl_disable_nvls_unless_set();
  const size_t sizes[] = {4096, 8192, 8 * 8192, 2048 * 8192};
  Json out = Json::array();
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  const size_t max_norm_n = 8 * 8192;  // the decode sizes: [T, H] with H = 4096 for 4096, else 8192
  std::printf("%-6s %-10s %-14s %-12s %-14s %-12s\n", "ranks", "elements", "engine us", "NCCL us", "AR+norm us",
              "fused us");
  for (int world = 2; world <= std::min(gpus, 8); world *= 2) {
    std::vector<int> devices(static_cast<size_t>(world));
    for (int r = 0; r < world; ++r) devices[size_t(r)] = r;
    RankWorkers workers(static_cast<size_t>(world));
    double t[2][std::size(sizes)] = {}, t_norm[2][std::size(sizes)] = {};
    for (int nccl_only = 0; nccl_only < 2; ++nccl_only) {
      // The engine's communicators read LAMINA_CUSTOM_ALL_REDUCE when the group is made.
      if (nccl_only) setenv("LAMINA_CUSTOM_ALL_REDUCE", "0", 1);
      else unsetenv("LAMINA_CUSTOM_ALL_REDUCE");
      std::vector<Rank> ranks(static_cast<size_t>(world));
      for (int r = 0; r < world; ++r) ranks[size_t(r)].backend = make_cuda_backend(r, DType::BF16);
      std::unique_ptr<NcclGroup> group = NcclGroup::create_local(devices);
      const size_t max_n = sizes[std::size(sizes) - 1];
      for (int r = 0; r < world; ++r) {
        Rank& rk = ranks[size_t(r)];
        rk.comm = group->make(size_t(r), *rk.backend);
        rk.buf = DeviceBuffer(rk.backend.get(), max_n * 2);
        std::vector<uint16_t> host(max_n);  // bf16 bits of small random values
        for (auto& h : host) {
          const float f = dist(rng) * 1e-3f;
          uint32_t bits;
          std::memcpy(&bits, &f, 4);
          h = uint16_t(bits >> 16);
        }
        rk.backend->copy_to_device(rk.buf.get(), host.data(), max_n * 2);
        rk.residual = DeviceBuffer(rk.backend.get(), max_norm_n * 2);
        rk.normed = DeviceBuffer(rk.backend.get(), max_norm_n * 2);
        rk.norm_weight = DeviceBuffer(rk.backend.get(), 8192 * 2);
        rk.backend->copy_to_device(rk.residual.get(), host.data(), max_norm_n * 2);
        rk.backend->copy_to_device(rk.norm_weight.get(), host.data(), 8192 * 2);
      }
      for (size_t i = 0; i < std::size(sizes); ++i) {
        const size_t n = sizes[i];
        t[nccl_only][i] = time_calls(ranks, workers, calls, replays,
                                     [&](Rank& rk) { rk.comm->all_reduce_sum(rk.buf.get(), n, DType::BF16); });
        if (nccl_only || n > max_norm_n) continue;
        const int H = n == 4096 ? 4096 : 8192, T = int(n / size_t(H));
        t_norm[0][i] = time_calls(ranks, workers, calls, replays, [&](Rank& rk) {
          rk.comm->all_reduce_sum(rk.buf.get(), n, DType::BF16);
          rk.backend->add_rms_norm(rk.residual.get(), rk.buf.get(), rk.normed.get(), rk.norm_weight.get(), T, H, kEps);
        });
        t_norm[1][i] = time_calls(ranks, workers, calls, replays, [&](Rank& rk) {
          LAMINA_CHECK(rk.comm->all_reduce_add_rms_norm(rk.buf.get(), rk.residual.get(), rk.normed.get(),
                                                        rk.norm_weight.get(), T, H, kEps, DType::BF16, {}),
                       "the engine's communicator did not fuse the all-reduce and the norm (", T, " x ", H, ")");
        });
      }
      for (auto& rk : ranks) {
        rk.backend->synchronize();
        rk.comm.reset();
        for (DeviceBuffer* b : {&rk.buf, &rk.residual, &rk.normed, &rk.norm_weight}) *b = DeviceBuffer();
      }
      group.reset();
    }
    unsetenv("LAMINA_CUSTOM_ALL_REDUCE");
    for (size_t i = 0; i < std::size(sizes); ++i) {
      Json row = {{"ranks", world}, {"elements", sizes[i]}, {"dtype", "bfloat16"}, {"engine_us", t[0][i]},
                  {"nccl_us", t[1][i]}};
      if (t_norm[1][i] > 0) {
        std::printf("%-6d %-10zu %-14.2f %-12.2f %-14.2f %-12.2f\n", world, sizes[i], t[0][i], t[1][i], t_norm[0][i],
                    t_norm[1][i]);
        row["all_reduce_then_norm_us"] = t_norm[0][i];
        row["fused_norm_us"] = t_norm[1][i];
      } else {
        std::printf("%-6d %-10zu %-14.2f %-12.2f %-14s %-12s\n", world, sizes[i], t[0][i], t[1][i], "-", "-");
      }
      out.push_back(row);
    }
  }
  if (!json_path.empty()) write_json_file(json_path, out);
  return 0;
}

}  // namespace
}  // namespace lamina

int main(int argc, char** argv) {
  try {
    return lamina::run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_all_reduce: %s\n", e.what());
    return 1;
  }
}
