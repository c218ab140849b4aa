// lamina bench --engine_dir ENGINE --input_len I --output_len O [--warmup W] [--runs R] [--json F]
//              [--temperature T --top_k K --top_p P --random_seed S]
// Offline latency of one request: time to first token (prefill), per-token decode latency, and
// the matching throughputs, as a table and JSON. Greedy by default; the sampling flags (as lamina
// run's) time sampled decoding, whose token choice costs more a step. With a serving-load flag
// (--concurrency, ...) main() runs `lamina bench_serving` instead (bench_asks_for_serving_load).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>

#include "commands.h"
#include "mpi_job.h"
#include "common/json.h"
#include "common/paths.h"
#include "runtime/engine.h"
#include "runtime/generator.h"
#include "sampling/sampler.h"

namespace lamina::cli {

namespace {

struct BenchOptions {
  std::string engine_dir, device = "auto", json_path;
  int input_len = 128, output_len = 128, warmup = 1, runs = 3;
  bool skip_checksum = false;
  SamplingParams sampling;  // TensorRT-LLM's default: top_k 1, greedy
};

// "greedy", or the sampling parameters that apply, e.g. "temperature 0.7 top_k 50 top_p 0.9"
// (top_k 0 and top_p 0 or 1 are off and left out).
std::string sampling_label(const SamplingParams& p) {
  if (p.top_k == 1 || !(p.temperature > 0.0f)) return "greedy";
  auto num = [](double v) {
    char b[32];
    std::snprintf(b, sizeof(b), "%g", v);
    return std::string(b);
  };
  std::string label = "temperature " + num(p.temperature);
  if (p.top_k > 1) label += " top_k " + std::to_string(p.top_k);
  if (p.top_p > 0.0f && p.top_p < 1.0f) label += " top_p " + num(p.top_p);
  return label;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void bench(const BenchOptions& o) {
  o.sampling.validate();  // a bad value fails before the engine loads
  EngineOptions eo;
  eo.device = parse_device(o.device);
  eo.verify_checksums = !o.skip_checksum;
  const auto t_load = std::chrono::steady_clock::now();
  auto engine = load_engine_or_follow(o.engine_dir, eo);
  if (!engine) return;  // a follower process of an mpirun job: its rank ran until the leader ended
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count();

  std::mt19937 rng(0);
  std::uniform_int_distribution<int32_t> tok(0, int32_t(engine->config().vocab_size - 1));
  GenerationRequest req;
  for (int i = 0; i < o.input_len; ++i) req.prompt.push_back(tok(rng));
  req.max_new_tokens = o.output_len;  // no end ids: always runs to length
  req.sampling = o.sampling;

  std::vector<double> ttft, per_token;
  for (int run = 0; run < o.warmup + o.runs; ++run) {
    using clock = std::chrono::steady_clock;
    const auto start = clock::now();
    clock::time_point first, last;
    int n = 0;
    generate(*engine, req, [&](int32_t) {
      last = clock::now();
      if (n++ == 0) first = last;
      return true;
    });
    if (run < o.warmup) continue;
    ttft.push_back(std::chrono::duration<double>(first - start).count());
    if (n > 1) per_token.push_back(std::chrono::duration<double>(last - first).count() / (n - 1));
  }
  const double t = median(ttft), p = per_token.empty() ? 0 : median(per_token);
  const std::string choice = sampling_label(o.sampling);
  // The table keeps its columns for greedy runs (scripts read them); a sampled run adds one.
  const bool sampled = choice != "greedy";
  std::printf("| engine | device | input | output | load s | TTFT ms | prefill tok/s | ms/token | decode tok/s |%s\n",
              sampled ? " sampling |" : "");
  std::printf("|---|---|---|---|---|---|---|---|---|%s\n", sampled ? "---|" : "");
  std::printf("| %s | %s | %d | %d | %.2f | %.2f | %.0f | %.3f | %.1f |%s\n", o.engine_dir.c_str(),
              engine->device_name().c_str(), o.input_len, o.output_len, load_s, t * 1e3, o.input_len / t, p * 1e3,
              p > 0 ? 1.0 / p : 0.0, sampled ? (" " + choice + " |").c_str() : "");
  if (!o.json_path.empty()) {
    const Json j = {{"engine_dir", o.engine_dir}, {"device", engine->device_name()}, {"input_len", o.input_len},
                    {"output_len", o.output_len}, {"runs", o.runs}, {"load_s", load_s}, {"ttft_ms", t * 1e3},
                    {"prefill_tok_per_s", o.input_len / t}, {"ms_per_token", p * 1e3},
                    {"decode_tok_per_s", p > 0 ? 1.0 / p : 0.0}, {"sampling", choice}};
    write_json_file(o.json_path, j);
  }
}

}  // namespace

bool bench_asks_for_serving_load(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) != "bench") return false;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    for (const char* flag : {"--concurrency", "--request_rate", "--num_requests", "--isl", "--osl", "--server"})
      if (a == flag || a.rfind(std::string(flag) + "=", 0) == 0) return true;
  }
  return false;
}

void register_bench(CLI::App& app) {
  auto* sub = app.add_subcommand("bench",
                                 "Measure TTFT, per-token latency and throughput of an engine (batch 1); with "
                                 "--concurrency, --request_rate, --num_requests, --isl, --osl or --server, the "
                                 "serving load test (as lamina bench_serving)");
  auto o = std::make_shared<BenchOptions>();
  sub->add_option("--engine_dir", o->engine_dir, "Output of lamina build")->required();
  sub->add_option("--input_len", o->input_len, "Prompt tokens (random ids)")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--output_len", o->output_len, "Generated tokens")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--warmup", o->warmup, "Untimed runs first")->capture_default_str();
  sub->add_option("--runs", o->runs, "Timed runs (the median is reported)")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--device", o->device, "cuda or cpu")->check(CLI::IsMember({"auto", "cuda", "gpu", "cpu"}));
  sub->add_option("--json", o->json_path, "Also write the figures as JSON here");
  sub->add_flag("--skip_checksum", o->skip_checksum, "Do not verify engine checksums at load");
  sub->add_option("--temperature", o->sampling.temperature, "Sampling temperature (with --top_k other than 1)")
      ->capture_default_str();
  sub->add_option("--top_k", o->sampling.top_k, "1 = greedy (default), 0 = no top-k limit")->capture_default_str();
  sub->add_option("--top_p", o->sampling.top_p, "0 = off")->capture_default_str();
  sub->add_option("--random_seed", o->sampling.seed)->capture_default_str();
  sub->callback([o] { bench(*o); });
}

}  // namespace lamina::cli
