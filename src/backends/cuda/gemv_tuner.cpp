// Timing of GEMV launch shapes (gemv_tuner.h): candidates timed on scratch matrices, best kept.
#include "gemv_tuner.h"
#include "gemv_shape_override.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>

namespace lamina::cuda {
namespace {

enum class Mode { kOff, kOn, kLog };

Mode tuning_mode() {
  static const Mode mode = [] {
    const char* e = std::getenv("LAMINA_GEMV_TUNING");
    const std::string v = e ? e : "";
    if (v == "0" || v == "off") return Mode::kOff;
    return v == "log" ? Mode::kLog : Mode::kOn;
  }();
  return mode;
}

// Choices by "device <d> <key>". Tuning itself runs without the lock: ranks of a tensor-parallel
// engine tune on their own devices at the same time, and one rank's stream may wait on the others.
struct Choice {
  int index;
  std::string name;  // for gemv_tuning_choices()
};
struct ChoiceTable {
  std::mutex mu;
  std::map<std::string, Choice> by_key;
};
ChoiceTable& table() {
  static ChoiceTable t;
  return t;
}

constexpr size_t kMaxScratchBytes = size_t(1) << 30;  // larger matrices keep the built-in choice
constexpr int kTrials = 3;                           // the best of 3, candidates interleaved
constexpr int kMinLaunches = 12;                     // a timed run: this many launches at least

size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

// Device memory freed (after the stream's work) when it goes out of scope.
struct Scratch {
  void* p = nullptr;
  cudaStream_t stream = nullptr;
  ~Scratch() {
    if (!p) return;
    cudaStreamSynchronize(stream);
    cudaFree(p);
  }
};

// Times every candidate; returns the index to use, or -1 when it could not time them.
int time_candidates(const GemvTuneRequest& req, cudaStream_t stream, const GemvCandidateLaunch& launch) {
  int device = 0, l2_bytes = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&l2_bytes, cudaDevAttrL2CacheSize, device) != cudaSuccess)
    return -1;
  // More weight copies than four L2s, so (as in a decode step) almost every launch reads from DRAM.
  const size_t w_bytes = round_up(req.weight_bytes, 256);
  const int copies = static_cast<int>(std::clamp<size_t>((size_t(4) * l2_bytes + w_bytes - 1) / w_bytes, 1, 64));
  const size_t total = w_bytes * copies + round_up(req.x_bytes, 256) + round_up(req.out_bytes, 256);
  if (total > kMaxScratchBytes) return -1;
  Scratch s;
  s.stream = stream;
  if (cudaMalloc(&s.p, total) != cudaSuccess) {
    cudaGetLastError();  // out of memory is not sticky: clear it and keep the built-in choice
    s.p = nullptr;
    return -1;
  }
  char* base = static_cast<char*>(s.p);
  const void* x = base + w_bytes * copies;
  void* out = base + w_bytes * copies + round_up(req.x_bytes, 256);
  // Any finite values do: the time does not depend on them (0x3c3c is 1.15e-2 in bf16).
  if (cudaMemsetAsync(s.p, 0x3c, total, stream) != cudaSuccess) return -1;

  const int n = static_cast<int>(req.candidates.size());
  const int launches = std::max(copies, kMinLaunches);
  auto run = [&](int c, int count) {
    for (int i = 0; i < count; ++i) launch(c, base + w_bytes * (i % copies), x, out, stream);
  };
  for (int c = 0; c < n; ++c) run(c, 2);  // first launches (module loading) stay out of the timing

  std::vector<cudaEvent_t> events(size_t(2) * n * kTrials);
  for (auto& e : events) cudaEventCreate(&e);
  for (int t = 0; t < kTrials; ++t)
    for (int c = 0; c < n; ++c) {
      cudaEventRecord(events[2 * (t * n + c)], stream);
      run(c, launches);
      cudaEventRecord(events[2 * (t * n + c) + 1], stream);
    }
  std::vector<float> best(n, 1e30f);
  bool ok = cudaStreamSynchronize(stream) == cudaSuccess;
  for (int t = 0; ok && t < kTrials; ++t)
    for (int c = 0; c < n; ++c) {
      float ms = 0;
      ok = ok && cudaEventElapsedTime(&ms, events[2 * (t * n + c)], events[2 * (t * n + c) + 1]) == cudaSuccess;
      best[c] = std::min(best[c], ms);
    }
  for (auto& e : events) cudaEventDestroy(e);
  if (!ok) return -1;
  const int fastest = static_cast<int>(std::min_element(best.begin(), best.end()) - best.begin());
  return best[fastest] < 0.99f * best[req.fallback] ? fastest : req.fallback;
}

}  // namespace

int tuned_gemv_choice(const GemvTuneRequest& req, cudaStream_t stream, const GemvCandidateLaunch& launch) {
  static const char* const named_shapes = std::getenv("LAMINA_GEMV_SHAPES");
  const int named = gemv_shape_override(named_shapes, req.matrix, req.candidates);
  if (named >= 0) return named;
  const Mode mode = tuning_mode();
  if (mode == Mode::kOff || req.candidates.size() < 2) return req.fallback;
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) return req.fallback;
  const std::string key = "device " + std::to_string(device) + " " + req.key;
  ChoiceTable& t = table();
  {
    std::lock_guard<std::mutex> lock(t.mu);
    if (auto it = t.by_key.find(key); it != t.by_key.end()) return it->second.index;
  }
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &capture) != cudaSuccess || capture != cudaStreamCaptureStatusNone)
    return req.fallback;  // not remembered: the next call outside a capture tunes
  int choice = time_candidates(req, stream, launch);
  if (choice < 0) choice = req.fallback;
  const std::string& name = req.candidates[choice];
  if (mode == Mode::kLog) std::fprintf(stderr, "[lamina] gemv tuning: %s -> %s\n", key.c_str(), name.c_str());
  std::lock_guard<std::mutex> lock(t.mu);
  return t.by_key.emplace(key, Choice{choice, name}).first->second.index;
}

std::vector<std::string> gemv_tuning_choices() {
  ChoiceTable& t = table();
  std::lock_guard<std::mutex> lock(t.mu);
  std::vector<std::string> lines;
  for (const auto& [key, c] : t.by_key) lines.push_back(key + ": " + c.name);
  return lines;
}

}  // namespace lamina::cuda
