// Diagnostic: a timeline of every kernel a CUDA program runs, graph replays included, with the
// start and end the GPU recorded, so that the cost of each kernel inside a decode step's CUDA graph
// (where programmatic dependent launch overlaps neighbours, which Nsight Compute cannot show) can
// be read off: how far each kernel's end lies past the previous one's. Loaded into any CUDA
// program through the driver's injection hook, nothing linked into the program:
//   CUDA_INJECTION64_PATH=build-device/bench/libkernel_trace.so LAMINA_KERNEL_TRACE=trace.csv
//     build-device/tools/lamina/lamina bench ...   (both variables in the program's environment)
// writes one line a kernel, `start_ns,end_ns,device,stream,graph,name` (name demangled, its
// template arguments and parameters cut), at exit. scripts/bench/kernel_timeline.py sums it up.
#include <cupti.h>
#include <cxxabi.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Record {
  uint64_t start, end;
  uint32_t device, stream, graph;
  std::string name;
};

std::mutex g_mu;
std::vector<Record> g_records;

std::string short_name(const char* mangled) {
  if (mangled == nullptr) return "?";
  int status = 0;
  char* d = abi::__cxa_demangle(mangled, nullptr, nullptr, &status);
  std::string s = status == 0 && d != nullptr ? d : mangled;
  std::free(d);
  // "void ns::(anonymous namespace)::kernel<...>(...)" -> "kernel"
  for (size_t at; (at = s.find("(anonymous namespace)::")) != std::string::npos;) s.erase(at, 23);
  const size_t cut = s.find_first_of("<(");
  if (cut != std::string::npos) s.resize(cut);
  const size_t space = s.rfind(' ');
  if (space != std::string::npos) s = s.substr(space + 1);
  const size_t colon = s.rfind("::");
  if (colon != std::string::npos) s = s.substr(colon + 2);
  return s;
}

void CUPTIAPI buffer_requested(uint8_t** buffer, size_t* size, size_t* max_records) {
  *size = size_t(8) << 20;
  *buffer = static_cast<uint8_t*>(std::aligned_alloc(8, *size));
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, uint32_t, uint8_t* buffer, size_t, size_t valid) {
  CUpti_Activity* rec = nullptr;
  std::vector<Record> got;
  while (cuptiActivityGetNextRecord(buffer, valid, &rec) == CUPTI_SUCCESS) {
    if (rec->kind != CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL && rec->kind != CUPTI_ACTIVITY_KIND_KERNEL) continue;
    const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(rec);
    got.push_back({k->start, k->end, k->deviceId, k->streamId, k->graphId, short_name(k->name)});
  }
  std::free(buffer);
  std::lock_guard<std::mutex> lock(g_mu);
  g_records.insert(g_records.end(), got.begin(), got.end());
}

void write_trace() {
  cuptiActivityFlushAll(1);
  const char* path = std::getenv("LAMINA_KERNEL_TRACE");
  FILE* f = std::fopen(path != nullptr ? path : "kernel_trace.csv", "w");
  if (f == nullptr) return;
  std::lock_guard<std::mutex> lock(g_mu);
  std::fprintf(f, "start_ns,end_ns,device,stream,graph,name\n");
  for (const Record& r : g_records)
    std::fprintf(f, "%llu,%llu,%u,%u,%u,%s\n", static_cast<unsigned long long>(r.start),
                 static_cast<unsigned long long>(r.end), r.device, r.stream, r.graph, r.name.c_str());
  std::fclose(f);
  std::fprintf(stderr, "kernel_trace: %zu kernels written\n", g_records.size());
}

}  // namespace

extern "C" int InitializeInjection() {
  if (cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed) != CUPTI_SUCCESS ||
      cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL) != CUPTI_SUCCESS) {
    std::fprintf(stderr, "kernel_trace: CUPTI activity tracing could not be enabled\n");
    return 0;
  }
  std::atexit(write_trace);
  return 1;
}
