// lamina serve --engine_dir ENGINE [--host 127.0.0.1] [--port 8000] ...
// OpenAI-compatible HTTP (docs/serving.md). One scheduler thread owns the engine; HTTP threads
// talk to it through the Executor. SIGINT/SIGTERM: stop taking requests, drain, exit 0.
#include <algorithm>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "commands.h"
#include "mpi_job.h"
#include "common/error.h"

#if LAMINA_HAVE_SERVER
#include <pthread.h>
#include <unistd.h>

#include <atomic>

#include "runtime/engine.h"
#include "scheduler/executor.h"
#include "server/http_server.h"
#include "tokenizer/tokenizer.h"
#endif

namespace lamina::cli {

namespace {

struct ServeOptions {
  std::string engine_dir, tokenizer_dir, host = "127.0.0.1", device = "auto", served_model_name;
  std::string capacity_policy = "guaranteed_no_evict";
  int port = 8000, max_queue = 256, tokens_per_block = 32, max_batch_size = 0, max_num_tokens = 0;
  int max_tokens_in_paged_kv_cache = 0, http_threads = 0;  // 0: auto_http_threads
  double kv_cache_free_gpu_memory_fraction = 0.9, drain_timeout = 60;
  bool enable_kv_cache_reuse = false, skip_checksum = false, disable_overlap_scheduler = false;
};

#if LAMINA_HAVE_SERVER

// Connections served at once when --http_threads is not given: one for every request the server
// runs or queues (a streaming request holds its connection to the end), and 16 more for /health,
// /metrics and the requests it refuses. A fixed pool smaller than the batch left requests waiting
// for a connection while the engine had room for them (1024 streams against 128 connections).
int auto_http_threads(int max_batch_size, int max_queue) {
  const int queued = max_queue > 0 ? max_queue : 256;  // no limit: room for 256 waiting
  return max_batch_size + queued + 16;
}

void add_unique(std::vector<int32_t>& ids, int32_t id) {
  if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
}

void serve(const ServeOptions& o) {
  // Signals go to a sigwait below, never to a random thread: block them before any thread exists.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  if (!(o.kv_cache_free_gpu_memory_fraction > 0 && o.kv_cache_free_gpu_memory_fraction <= 1))
    fail("--kv_cache_free_gpu_memory_fraction must be in (0, 1] (got ", o.kv_cache_free_gpu_memory_fraction, ")");
  const std::string tok_dir = o.tokenizer_dir.empty() ? o.engine_dir : o.tokenizer_dir;
  if (!std::filesystem::exists(std::filesystem::path(tok_dir) / "tokenizer.json"))
    fail("'", tok_dir, "' has no tokenizer.json: lamina serve needs one (pass --tokenizer_dir)");
  const Tokenizer tok = Tokenizer::load(tok_dir);

  EngineOptions eo;
  eo.device = parse_device(o.device);
  eo.verify_checksums = !o.skip_checksum;
  eo.num_slots = o.max_batch_size > 0 ? o.max_batch_size : 1 << 20;  // the engine caps it at its max_batch_size
  eo.tokens_per_block = o.tokens_per_block;
  eo.max_tokens_in_paged_kv_cache = o.max_tokens_in_paged_kv_cache;
  eo.kv_cache_free_gpu_memory_fraction = o.kv_cache_free_gpu_memory_fraction;  // CUDA only
  eo.screen_lm_head = false;  // the scheduler's steps take the logits (the screen serves generate())
  auto engine = load_engine_or_follow(o.engine_dir, eo);
  if (!engine) return;  // a follower process of an mpirun job: its rank ran until the leader ended

  ExecutorOptions xo;
  xo.max_queue = o.max_queue;
  xo.scheduler.max_batch_size = o.max_batch_size;
  xo.scheduler.max_num_tokens = o.max_num_tokens;
  xo.scheduler.enable_kv_cache_reuse = o.enable_kv_cache_reuse;
  xo.scheduler.capacity_policy = parse_capacity_policy(o.capacity_policy);
  xo.scheduler.overlap_steps = !o.disable_overlap_scheduler;
  Executor executor(*engine, xo);

  server::ServedModel model;
  model.name = o.served_model_name.empty()
                   ? std::filesystem::weakly_canonical(o.engine_dir).filename().string()
                   : o.served_model_name;
  model.created = int64_t(std::time(nullptr));
  for (int64_t e : engine->config().eos_token_ids) add_unique(model.end_ids, int32_t(e));
  for (int32_t e : tok.eos_token_ids()) add_unique(model.end_ids, e);
  model.chat_end_ids = model.end_ids;
  for (const char* t : {"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"})
    if (auto id = tok.token_to_id(t)) add_unique(model.chat_end_ids, *id);
  // Ids the engine cannot produce would only make every request fail validation.
  const auto vocab = int32_t(engine->config().vocab_size);
  for (auto* ids : {&model.end_ids, &model.chat_end_ids})
    ids->erase(std::remove_if(ids->begin(), ids->end(), [&](int32_t id) { return id < 0 || id >= vocab; }), ids->end());

  server::HttpOptions ho;
  ho.host = o.host;
  ho.port = o.port;
  ho.threads = o.http_threads > 0 ? o.http_threads : auto_http_threads(executor.max_batch_size(), o.max_queue);
  ho.drain_timeout_s = o.drain_timeout;
  server::HttpServer http(executor, tok, model, ho);
  const int port = http.bind();

  const SchedulerStats st = executor.stats();
  std::printf("[lamina] model '%s' on %s: max_batch_size %d, max_num_tokens %d, KV %d blocks x %d tokens (%s%s%s)\n",
              model.name.c_str(), engine->device_name().c_str(), executor.max_batch_size(), executor.max_num_tokens(),
              st.kv_blocks_total, st.tokens_per_block, o.capacity_policy.c_str(),
              executor.kv_reuse_active() ? ", prefix reuse" : "",
              engine->config().kv_cache_quant_algo == "FP8" ? ", fp8 e4m3" : "");
  std::printf("[lamina] serving on http://%s:%d, %d connections at once (Ctrl-C or SIGTERM drains and exits)\n",
              o.host.c_str(), port, ho.threads);
  std::fflush(stdout);

  std::atomic<bool> stopping{false};
  std::thread http_thread([&] {
    http.run();
    if (!stopping) ::kill(::getpid(), SIGTERM);  // the listener died: wake the sigwait below
  });
  int sig = 0;
  sigwait(&signals, &sig);
  stopping = true;
  std::printf("[lamina] %s: no new requests; draining %d running and %d queued\n", sig == SIGINT ? "SIGINT" : "SIGTERM",
              executor.stats().num_running, executor.stats().num_waiting);
  std::fflush(stdout);
  std::thread([signals]() mutable {  // a second signal ends the process without waiting
    int again = 0;
    sigwait(&signals, &again);
    std::fprintf(stderr, "[lamina] second signal: exiting now\n");
    std::_Exit(130);
  }).detach();
  http.shutdown();
  http_thread.join();
  executor.drain();
  std::printf("[lamina] drained; bye\n");
  std::fflush(stdout);
}

#endif  // LAMINA_HAVE_SERVER

}  // namespace

void register_serve(CLI::App& app) {
  auto* sub = app.add_subcommand("serve", "Serve an engine over OpenAI-compatible HTTP");
  auto o = std::make_shared<ServeOptions>();
  sub->add_option("--engine_dir", o->engine_dir, "Output of lamina build")->required();
  sub->add_option("--tokenizer_dir", o->tokenizer_dir, "Tokenizer files (default: the engine dir)");
  sub->add_option("--host", o->host, "Address to listen on")->capture_default_str();
  sub->add_option("--port", o->port, "Port (0: any free port, printed at start)")->capture_default_str()
      ->check(CLI::Range(0, 65535));
  sub->add_option("--device", o->device, "cuda or cpu (default: cuda when a GPU is present)")
      ->check(CLI::IsMember({"auto", "cuda", "gpu", "cpu"}));
  sub->add_option("--served_model_name", o->served_model_name, "Model name in the API (default: the engine dir's name)");
  sub->add_option("--max_queue", o->max_queue, "Requests waiting for admission before 429 (0: no limit)")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  sub->add_option("--max_batch_size", o->max_batch_size, "Running requests at once (default: the engine's)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--max_num_tokens", o->max_num_tokens, "Tokens per step (default: the engine's)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--capacity_policy", o->capacity_policy, "KV admission policy")->capture_default_str()
      ->check(CLI::IsMember({"guaranteed_no_evict", "max_utilization"}));
  sub->add_option("--tokens_per_block", o->tokens_per_block, "Tokens per KV block")->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--max_tokens_in_paged_kv_cache", o->max_tokens_in_paged_kv_cache,
                  "KV pool size in tokens (CUDA: an upper bound on the memory-fraction size; CPU default: "
                  "max_batch_size x max_seq_len)")
      ->check(CLI::NonNegativeNumber);
  sub->add_option("--kv_cache_free_gpu_memory_fraction", o->kv_cache_free_gpu_memory_fraction,
                  "Share of the GPU memory free after weights and activations that the KV pool takes (CUDA)")
      ->capture_default_str();
  sub->add_flag("--enable_kv_cache_reuse", o->enable_kv_cache_reuse, "Reuse the KV of shared prompt prefixes");
  sub->add_flag("--disable_overlap_scheduler", o->disable_overlap_scheduler,
                "Read each step's tokens before queuing the next (no overlapped decode steps)");
  sub->add_option("--http_threads", o->http_threads,
                  "Connections served at once (default: max_batch_size + max_queue + 16, a max_queue of 0 counting 256)")
      ->check(CLI::PositiveNumber);
  sub->add_option("--drain_timeout", o->drain_timeout, "Seconds a shutdown waits before cancelling requests")
      ->capture_default_str();
  sub->add_flag("--skip_checksum", o->skip_checksum, "Do not verify engine checksums at load");
#if LAMINA_HAVE_SERVER
  sub->callback([o] { serve(*o); });
#else
  // The options were bound to *o: the callback must keep it alive even when it only fails.
  sub->callback([o] {
    (void)o;
    fail("this lamina was built without cpp-httplib: install libcpp-httplib-dev and rebuild");
  });
#endif
}

}  // namespace lamina::cli
