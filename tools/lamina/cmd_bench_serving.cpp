// lamina bench_serving {--server URL | --engine_dir DIR} --concurrency C --num_requests N --isl I --osl O
//                      [--request_rate R]
// Load test: N requests of I random prompt tokens and exactly O output tokens (ignore_eos), at
// most C in flight, arriving as a Poisson process of rate R (default: all at once).
//   --server: streamed completions against a running `lamina serve` (or any OpenAI-compatible
//     server), over HTTP.
//   --engine_dir: offline, as trtllm-bench does: the engine and the in-flight batching scheduler
//     (Executor) in this process, no HTTP; what the server adds is the difference of the two.
// Prints output tok/s, TTFT and inter-token latency percentiles, and writes them as JSON, then the
// engine steps' wall time by phase (offline: the executor's stats; a lamina server: the difference
// of its /metrics before and after), so the engine's share of the run shows.
#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include <condition_variable>

#include "commands.h"
#include "common/error.h"
#include "common/json.h"
#include "runtime/engine.h"
#include "scheduler/executor.h"

#if LAMINA_HAVE_SERVER
#include <httplib.h>
#endif

namespace lamina::cli {

namespace {

struct BenchServingOptions {
  std::string server = "http://127.0.0.1:8000", model, json_path;
  std::string engine_dir, device = "auto";  // offline mode
  bool skip_checksum = false, disable_overlap_scheduler = false;
  double kv_cache_free_gpu_memory_fraction = 0.9;
  int concurrency = 8, num_requests = 64, isl = 128, osl = 128, vocab_size = 256;
  int warmup = 2;  // requests run (and not counted) before the clock starts
  int max_num_tokens = 0;  // offline: tokens per step; 0 = the engine's
  double request_rate = 0;  // requests/s; 0 = as fast as concurrency allows
  uint64_t seed = 0;
};

using Clock = std::chrono::steady_clock;

struct RequestResult {
  bool ok = false;
  std::string error;
  double ttft = 0, latency = 0;
  int output_tokens = 0;
  std::vector<double> gaps;  // seconds between consecutive content chunks
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double idx = p / 100.0 * double(v.size() - 1);
  const size_t lo = size_t(std::floor(idx)), hi = size_t(std::ceil(idx));
  return v[lo] + (v[hi] - v[lo]) * (idx - double(lo));
}

double mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0 : s / double(v.size());
}

// The workload: prompts of random ids and their arrival times (a Poisson process of rate R, or
// all at t = 0).
struct Workload {
  std::vector<std::vector<int>> prompts;
  std::vector<double> arrival;
};

Workload make_workload(const BenchServingOptions& o, uint64_t seed) {
  Workload w;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> tok(0, o.vocab_size - 1);
  for (int i = 0; i < o.num_requests; ++i) {
    std::vector<int> ids(static_cast<size_t>(o.isl));
    for (int& t : ids) t = tok(rng);
    w.prompts.push_back(std::move(ids));
  }
  w.arrival.assign(w.prompts.size(), 0.0);
  std::exponential_distribution<double> gap(o.request_rate > 0 ? o.request_rate : 1.0);
  for (size_t i = 1; i < w.arrival.size() && o.request_rate > 0; ++i) w.arrival[i] = w.arrival[i - 1] + gap(rng);
  return w;
}

void report(const BenchServingOptions& o, const std::string& target, const std::vector<RequestResult>& results,
            double duration);
// "<what>: N, wall time by phase: ..." for N engine steps.
void print_step_phases(const char* what, double steps, double schedule_s, double engine_s, double output_s);

// The --warmup requests: the run's shape (isl, osl), other random prompts, all at once.
Workload warmup_workload(const BenchServingOptions& o) {
  BenchServingOptions shape = o;
  shape.num_requests = o.warmup;
  shape.request_rate = 0;
  return make_workload(shape, o.seed + 1);
}

// Warm-up (--warmup N): N requests of the run's shape, from other random prompts, all submitted at
// once and finished before the clock starts, so that one-time costs (cuBLASLt's first plans, the
// kernels the driver loads on first use: 0.12 s in a traced H100 run) stay out of the figures, as
// the warm-up requests of trtllm-bench and aiperf do.
void warm_up_offline(Executor& executor, const BenchServingOptions& o) {
  if (o.warmup <= 0) return;
  const Workload w = warmup_workload(o);
  std::mutex mu;
  std::condition_variable cv;
  int left = o.warmup;
  std::string error;
  for (const auto& ids : w.prompts) {
    RequestSpec spec;
    spec.prompt.assign(ids.begin(), ids.end());
    spec.max_tokens = o.osl;
    try {
      executor.submit(std::move(spec), [&](RequestOutput&& out) {
        if (!out.finished) return;
        std::lock_guard<std::mutex> lk(mu);
        if (out.end_reason == EndReason::Error && error.empty()) error = out.error;
        --left;
        cv.notify_all();
      });
    } catch (const std::exception& e) {  // refused: wait for the ones already in, whose callbacks use mu
      std::lock_guard<std::mutex> lk(mu);
      if (error.empty()) error = e.what();
      --left;
    }
  }
  std::unique_lock<std::mutex> lk(mu);
  cv.wait(lk, [&] { return left == 0; });
  if (!error.empty()) fail("a warm-up request failed: ", error);
}

// Offline: the Executor in this process. A request is submitted when its arrival time has come
// and fewer than C are in flight; its tokens are timed as the scheduler hands them out.
void bench_offline(const BenchServingOptions& o) {
  if (!(o.kv_cache_free_gpu_memory_fraction > 0 && o.kv_cache_free_gpu_memory_fraction <= 1))
    fail("--kv_cache_free_gpu_memory_fraction must be in (0, 1] (got ", o.kv_cache_free_gpu_memory_fraction, ")");
  const Workload w = make_workload(o, o.seed);
  EngineOptions eo;
  eo.device = parse_device(o.device);
  eo.verify_checksums = !o.skip_checksum;
  eo.num_slots = 1 << 20;  // the engine caps it at its max_batch_size
  eo.kv_cache_free_gpu_memory_fraction = o.kv_cache_free_gpu_memory_fraction;  // CUDA only
  eo.screen_lm_head = false;  // as lamina serve
  auto engine = Engine::load(o.engine_dir, eo);
  if (o.vocab_size > engine->config().vocab_size)
    fail("--vocab_size ", o.vocab_size, " exceeds the engine's vocabulary (", engine->config().vocab_size, ")");
  ExecutorOptions xo;
  xo.scheduler.overlap_steps = !o.disable_overlap_scheduler;
  xo.scheduler.max_num_tokens = o.max_num_tokens;
  Executor executor(*engine, xo);
  warm_up_offline(executor, o);
  const SchedulerStats warm = executor.stats();  // the warm-up's steps, left out of the phases below

  std::vector<RequestResult> results(w.prompts.size());
  std::vector<Clock::time_point> start(w.prompts.size()), last(w.prompts.size());
  std::mutex mu;
  std::condition_variable cv;
  int in_flight = 0, finished = 0;
  const auto t0 = Clock::now();
  for (size_t i = 0; i < w.prompts.size(); ++i) {
    std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(w.arrival[i])));
    {
      std::unique_lock<std::mutex> lk(mu);
      cv.wait(lk, [&] { return in_flight < o.concurrency; });
      ++in_flight;
      start[i] = Clock::now();
    }
    RequestSpec spec;
    spec.prompt.assign(w.prompts[i].begin(), w.prompts[i].end());
    spec.max_tokens = o.osl;  // no end ids: exactly osl tokens (ignore_eos)
    // Runs on the executor's delivery thread: record and return.
    auto on_output = [&, i](RequestOutput&& out) {
      const auto now = Clock::now();
      std::lock_guard<std::mutex> lk(mu);
      RequestResult& r = results[i];
      if (!out.tokens.empty()) {
        if (r.output_tokens == 0) r.ttft = std::chrono::duration<double>(now - start[i]).count();
        else r.gaps.push_back(std::chrono::duration<double>(now - last[i]).count());
        r.output_tokens += int(out.tokens.size());
        last[i] = now;
      }
      if (out.finished) {
        r.latency = std::chrono::duration<double>(now - start[i]).count();
        if (out.end_reason == EndReason::Error) r.error = out.error;
        else if (r.output_tokens != o.osl) r.error = "ended after " + std::to_string(r.output_tokens) + " tokens";
        r.ok = r.error.empty();
        --in_flight;
        ++finished;
        cv.notify_all();
      }
    };
    try {
      executor.submit(std::move(spec), on_output);
    } catch (const std::exception& e) {
      std::lock_guard<std::mutex> lk(mu);
      results[i].error = e.what();
      --in_flight;
      ++finished;
    }
  }
  {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [&] { return finished == int(w.prompts.size()); });
  }
  const double duration = std::chrono::duration<double>(Clock::now() - t0).count();
  report(o, "offline " + o.engine_dir + " (" + engine->device_name() + ")", results, duration);
  const SchedulerStats st = executor.stats();
  print_step_phases("steps", double(st.steps_total - warm.steps_total),
                    st.step_schedule_seconds_total - warm.step_schedule_seconds_total,
                    st.step_engine_seconds_total - warm.step_engine_seconds_total,
                    st.step_output_seconds_total - warm.step_output_seconds_total);
  std::printf("steps queued before the previous step's tokens were read: %llu\n",
              static_cast<unsigned long long>(st.steps_overlapped_total - warm.steps_overlapped_total));
}

#if LAMINA_HAVE_SERVER

// One streamed completion; parses the SSE events as they arrive.
RequestResult run_one(httplib::Client& cli, const Json& body) {
  RequestResult r;
  const auto start = Clock::now();
  Clock::time_point last;
  bool first = true, done = false;
  std::string buf;  // SSE bytes not yet split into events
  auto on_event = [&](const std::string& data) {
    if (data == "[DONE]") {
      done = true;
      return;
    }
    const Json j = Json::parse(data, nullptr, false);
    if (j.is_discarded()) return;
    if (j.contains("error")) r.error = j["error"].value("message", "error event");
    if (j.contains("usage") && j["usage"].is_object()) r.output_tokens = j["usage"].value("completion_tokens", 0);
    if (!j.contains("choices") || j["choices"].empty()) return;
    const auto now = Clock::now();
    if (first) r.ttft = std::chrono::duration<double>(now - start).count();
    else r.gaps.push_back(std::chrono::duration<double>(now - last).count());
    first = false;
    last = now;
  };
  httplib::Request req;
  req.method = "POST";
  req.path = "/v1/completions";
  req.body = body.dump();
  req.set_header("Content-Type", "application/json");
  req.content_receiver = [&](const char* data, size_t n, uint64_t, uint64_t) {
    buf.append(data, n);
    for (size_t end; (end = buf.find("\n\n")) != std::string::npos; buf.erase(0, end + 2))
      if (buf.rfind("data: ", 0) == 0) on_event(buf.substr(6, end - 6));
    return true;
  };
  const httplib::Result res = cli.send(req);
  r.latency = std::chrono::duration<double>(Clock::now() - start).count();
  if (!res) r.error = "HTTP error: " + httplib::to_string(res.error());
  else if (res->status != 200) r.error = "HTTP " + std::to_string(res->status) + " " + buf + res->body;
  else if (!done && r.error.empty()) r.error = "the stream ended without [DONE]";
  r.ok = r.error.empty();
  return r;
}

// The value of the first sample of `name` in Prometheus text whose labels include `label` (any
// labels when empty), if there is one.
std::optional<double> prometheus_sample(const std::string& text, const std::string& name, const std::string& label) {
  for (size_t at = 0; at < text.size();) {
    const size_t end = std::min(text.find('\n', at), text.size());
    const std::string line = text.substr(at, end - at);
    at = end + 1;
    if (line.compare(0, name.size(), name) != 0 || line.size() <= name.size()) continue;
    size_t value_at = name.size();
    if (line[value_at] == '{') {
      const size_t close = line.find('}', value_at);
      if (close == std::string::npos) continue;
      if (!label.empty() && line.substr(value_at, close - value_at).find(label) == std::string::npos) continue;
      value_at = close + 1;
    } else if (line[value_at] != ' ' || !label.empty()) {
      continue;
    }
    return std::strtod(line.c_str() + value_at, nullptr);
  }
  return std::nullopt;
}

// A lamina server's step counters (/metrics); empty when the server has none (another server).
std::optional<std::array<double, 4>> server_step_counters(const std::string& url) {
  httplib::Client cli(url);
  cli.set_read_timeout(10);
  const httplib::Result res = cli.Get("/metrics");
  if (!res || res->status != 200) return std::nullopt;
  const auto steps = prometheus_sample(res->body, "lamina_engine_steps_total", "");
  std::array<double, 4> c{steps.value_or(0), 0, 0, 0};
  const char* phases[] = {"schedule", "engine", "output"};
  for (int i = 0; i < 3; ++i) {
    const auto v = prometheus_sample(res->body, "lamina_step_seconds_total", std::string("phase=\"") + phases[i] + "\"");
    if (!steps || !v) return std::nullopt;
    c[size_t(i) + 1] = *v;
  }
  return c;
}

Json completion_body(const BenchServingOptions& o, const std::vector<int>& ids) {
  Json b = {{"prompt", ids}, {"max_tokens", o.osl}, {"temperature", 0}, {"ignore_eos", true}, {"stream", true},
            {"stream_options", {{"include_usage", true}}}};
  if (!o.model.empty()) b["model"] = o.model;
  return b;
}

// The server's warm-up (--warmup N): N requests of the run's shape, one after another, before the
// clock starts (see warm_up_offline).
void warm_up_server(const BenchServingOptions& o) {
  if (o.warmup <= 0) return;
  httplib::Client cli(o.server);
  cli.set_read_timeout(600);
  for (const auto& ids : warmup_workload(o).prompts) {
    const RequestResult r = run_one(cli, completion_body(o, ids));
    if (!r.ok) fail("a warm-up request failed: ", r.error);
  }
}

void bench_server(const BenchServingOptions& o) {
  {  // A server that is not there would fail every request alike: say so once, up front.
    httplib::Client probe(o.server);
    probe.set_connection_timeout(5);
    if (const httplib::Result res = probe.Get("/v1/models"); !res)
      fail("cannot reach ", o.server, " (", httplib::to_string(res.error()),
           "): is a server running there? Start one with `lamina serve --engine_dir ENGINE`, or run the "
           "load offline with --engine_dir ENGINE");
  }
  const Workload w = make_workload(o, o.seed);
  warm_up_server(o);
  const auto counters_before = server_step_counters(o.server);
  std::vector<Json> bodies;
  for (const auto& ids : w.prompts) bodies.push_back(completion_body(o, ids));
  std::vector<RequestResult> results(bodies.size());
  std::atomic<size_t> next{0};
  const auto t0 = Clock::now();
  std::vector<std::thread> workers;
  for (int k = 0; k < o.concurrency; ++k)
    workers.emplace_back([&] {
      httplib::Client cli(o.server);
      cli.set_read_timeout(600);
      cli.set_keep_alive(true);
      cli.set_tcp_nodelay(true);  // else Nagle + delayed ACK add 40 ms to every request
      for (size_t i; (i = next++) < bodies.size();) {
        std::this_thread::sleep_until(t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(w.arrival[i])));
        results[i] = run_one(cli, bodies[i]);
      }
    });
  for (auto& t : workers) t.join();
  const double duration = std::chrono::duration<double>(Clock::now() - t0).count();
  const auto counters_after = server_step_counters(o.server);
  report(o, o.server, results, duration);
  if (counters_before && counters_after) {
    const auto& a = *counters_before;
    const auto& b = *counters_after;
    print_step_phases("server steps", b[0] - a[0], b[1] - a[1], b[2] - a[2], b[3] - a[3]);
  }
}

#endif  // LAMINA_HAVE_SERVER

void print_step_phases(const char* what, double steps, double schedule_s, double engine_s, double output_s) {
  std::printf("%s: %.0f, wall time by phase: schedule %.3f s, engine %.3f s (%.2f ms a step), output %.3f s\n", what,
              steps, schedule_s, engine_s, steps > 0 ? 1e3 * engine_s / steps : 0.0, output_s);
}

void report(const BenchServingOptions& o, const std::string& target, const std::vector<RequestResult>& results,
            double duration) {
  std::vector<double> ttft, itl, tpot, latency;
  int ok = 0;
  long output_tokens = 0;
  for (const auto& r : results) {
    if (!r.ok) continue;
    ++ok;
    output_tokens += r.output_tokens;
    ttft.push_back(r.ttft * 1e3);
    latency.push_back(r.latency * 1e3);
    for (double g : r.gaps) itl.push_back(g * 1e3);
    if (r.output_tokens > 1) tpot.push_back((r.latency - r.ttft) * 1e3 / (r.output_tokens - 1));
  }
  const int failed = o.num_requests - ok;
  std::printf("| target | requests | failed | concurrency | rate | ISL | OSL | duration s | req/s | output tok/s |"
              " TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | TPOT mean ms |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  std::printf("| %s | %d | %d | %d | %s | %d | %d | %.2f | %.2f | %.1f | %.1f | %.1f | %.2f | %.2f | %.2f |\n",
              target.c_str(), o.num_requests, failed, o.concurrency,
              o.request_rate > 0 ? std::to_string(o.request_rate).c_str() : "inf", o.isl, o.osl, duration,
              ok / duration, double(output_tokens) / duration, percentile(ttft, 50), percentile(ttft, 99),
              percentile(itl, 50), percentile(itl, 99), mean(tpot));
  for (const auto& r : results)
    if (!r.ok) {
      std::printf("first failure: %s\n", r.error.c_str());
      break;
    }
  if (!o.json_path.empty()) {
    const Json j = {{"target", target}, {"offline", !o.engine_dir.empty()}, {"num_requests", o.num_requests},
                    {"failed", failed}, {"concurrency", o.concurrency}, {"request_rate", o.request_rate},
                    {"isl", o.isl}, {"osl", o.osl}, {"duration_s", duration}, {"request_throughput", ok / duration},
                    {"output_tokens", output_tokens}, {"output_token_throughput", double(output_tokens) / duration},
                    {"ttft_ms", {{"mean", mean(ttft)}, {"p50", percentile(ttft, 50)}, {"p99", percentile(ttft, 99)}}},
                    {"itl_ms", {{"mean", mean(itl)}, {"p50", percentile(itl, 50)}, {"p99", percentile(itl, 99)}}},
                    {"tpot_ms", {{"mean", mean(tpot)}, {"p50", percentile(tpot, 50)}, {"p99", percentile(tpot, 99)}}},
                    {"e2e_latency_ms", {{"mean", mean(latency)}, {"p50", percentile(latency, 50)},
                                        {"p99", percentile(latency, 99)}}}};
    write_json_file(o.json_path, j);
  }
  if (failed > 0) fail(failed, " of ", o.num_requests, " requests failed");
}

}  // namespace

void register_bench_serving(CLI::App& app) {
  auto* sub = app.add_subcommand("bench_serving",
                                 "Load-test a server (lamina serve) or, offline, an engine with in-flight batching");
  auto o = std::make_shared<BenchServingOptions>();
  auto* server = sub->add_option("--server", o->server, "Base URL of an OpenAI-compatible server")->capture_default_str();
  sub->add_option("--engine_dir", o->engine_dir, "Offline: run this engine in-process (no HTTP)")->excludes(server);
  sub->add_option("--device", o->device, "Offline: cuda or cpu")->check(CLI::IsMember({"auto", "cuda", "gpu", "cpu"}));
  sub->add_flag("--skip_checksum", o->skip_checksum, "Offline: do not verify engine checksums at load");
  sub->add_flag("--disable_overlap_scheduler", o->disable_overlap_scheduler,
                "Offline: read each step's tokens before queuing the next (no overlapped decode steps)");
  sub->add_option("--max_num_tokens", o->max_num_tokens,
                  "Offline: tokens per step (default: the engine's max_num_tokens; at most it)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--kv_cache_free_gpu_memory_fraction", o->kv_cache_free_gpu_memory_fraction,
                  "Offline: share of free GPU memory for the paged KV cache")
      ->capture_default_str();
  sub->add_option("--concurrency", o->concurrency, "Requests in flight at most")->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--num_requests", o->num_requests, "Requests in all")->capture_default_str()->check(CLI::PositiveNumber);
  sub->add_option("--isl", o->isl, "Input tokens per request (random ids)")->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--osl", o->osl, "Output tokens per request (ignore_eos)")->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--request_rate", o->request_rate, "Poisson arrival rate, requests/s (default: all at once)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--model", o->model, "Model name to send (default: none, the server's)");
  sub->add_option("--vocab_size", o->vocab_size, "Prompt ids are drawn from [0, vocab_size)")->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--seed", o->seed, "Seed for prompts and arrivals")->capture_default_str();
  sub->add_option("--warmup", o->warmup, "Requests of the same shape run before the clock starts, not counted")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--json", o->json_path, "Also write the figures as JSON here");
  sub->callback([o] {
    if (!o->engine_dir.empty()) return bench_offline(*o);
#if LAMINA_HAVE_SERVER
    bench_server(*o);
#else
    fail("this lamina was built without cpp-httplib: install libcpp-httplib-dev and rebuild (or use --engine_dir)");
#endif
  });
}

}  // namespace lamina::cli
