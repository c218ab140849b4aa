#include "server/metrics.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "scheduler/request.h"

namespace lamina::server {

namespace {

class Writer {
 public:
  explicit Writer(std::string model) : label_("model_name=\"" + escape(model) + "\"") {}

  void metric(const char* name, const char* type, const char* help, double value, const std::string& extra = "") {
    header(name, type, help);
    sample(name, extra, value);
  }
  void header(const char* name, const char* type, const char* help) {
    os_ << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
  }
  void sample(const std::string& name, const std::string& extra, double value) {
    os_ << name << '{' << label_ << (extra.empty() ? "" : ",") << extra << "} " << number(value) << '\n';
  }
  void histogram(const char* name, const char* help, const Histogram& h) {
    header(name, "histogram", help);
    uint64_t acc = 0;
    for (size_t b = 0; b < h.counts().size(); ++b) {
      acc += h.counts()[b];
      std::ostringstream le;
      if (b < h.bounds().size()) le << h.bounds()[b];
      else le << "+Inf";
      sample(std::string(name) + "_bucket", "le=\"" + le.str() + "\"", double(acc));
    }
    sample(std::string(name) + "_sum", "", h.sum());
    sample(std::string(name) + "_count", "", double(h.count()));
  }
  std::string str() const { return os_.str(); }

 private:
  // Counters print as integers (no 1.2e+06 rounding); other values with 9 significant digits.
  static std::string number(double v) {
    char buf[40];
    if (v == std::floor(v) && std::fabs(v) < 9e15) std::snprintf(buf, sizeof buf, "%.0f", v);
    else std::snprintf(buf, sizeof buf, "%.9g", v);
    return buf;
  }
  static std::string escape(const std::string& s) {
    std::string out;
    for (char c : s) {
      if (c == '\\' || c == '"') out += '\\';
      if (c == '\n') {
        out += "\\n";
        continue;
      }
      out += c;
    }
    return out;
  }
  std::string label_;
  std::ostringstream os_;
};

}  // namespace

std::string render_metrics(const SchedulerStats& s, const HttpCounters& http, const std::string& model_name) {
  Writer w(model_name);
  w.metric("lamina_num_requests_waiting", "gauge", "Requests queued for admission (KV capacity or a slot).",
           s.num_waiting);
  w.metric("lamina_num_requests_running", "gauge", "Requests holding KV blocks (prefilling or decoding).",
           s.num_running);
  w.metric("lamina_kv_cache_blocks_used", "gauge", "KV blocks held by running requests.", s.kv_blocks_used);
  w.metric("lamina_kv_cache_blocks_total", "gauge", "KV blocks in the pool.", s.kv_blocks_total);
  w.metric("lamina_kv_cache_tokens_per_block", "gauge", "Tokens per KV block.", s.tokens_per_block);
  w.metric("lamina_kv_cache_usage_ratio", "gauge", "kv_cache_blocks_used / kv_cache_blocks_total.",
           s.kv_blocks_total ? double(s.kv_blocks_used) / s.kv_blocks_total : 0.0);
  w.metric("lamina_prompt_tokens_total", "counter", "Prompt tokens of accepted requests.", double(s.prompt_tokens_total));
  w.metric("lamina_generation_tokens_total", "counter", "Tokens generated.", double(s.generation_tokens_total));
  w.metric("lamina_engine_steps_total", "counter", "Engine forward steps.", double(s.steps_total));
  w.metric("lamina_engine_steps_overlapped_total", "counter",
           "Steps queued before the previous step's token ids were read (overlapped scheduling).",
           double(s.steps_overlapped_total));
  w.metric("lamina_kv_cache_blocks_cached", "gauge", "Full KV blocks published for prefix reuse.",
           s.kv_blocks_cached);
  w.metric("lamina_kv_cache_reused_tokens_total", "counter",
           "Prompt tokens whose KV came from cached prefix blocks (--enable_kv_cache_reuse).",
           double(s.reused_tokens_total));
  w.metric("lamina_engine_tokens_total", "counter", "Tokens the engine computed.", double(s.computed_tokens_total));
  w.metric("lamina_num_preemptions_total", "counter", "Requests preempted to free KV (max_utilization).",
           double(s.preemptions_total));
  w.header("lamina_step_seconds_total", "counter",
           "Wall time of engine steps by phase: schedule (admission, micro-batch), engine (forward and "
           "token choice, GPU included), output (stop rules, handing tokens out).");
  w.sample("lamina_step_seconds_total", "phase=\"schedule\"", s.step_schedule_seconds_total);
  w.sample("lamina_step_seconds_total", "phase=\"engine\"", s.step_engine_seconds_total);
  w.sample("lamina_step_seconds_total", "phase=\"output\"", s.step_output_seconds_total);
  w.header("lamina_request_finished_total", "counter", "Requests finished, by reason.");
  for (size_t r = 0; r < s.finished_total.size(); ++r)
    w.sample("lamina_request_finished_total", std::string("reason=\"") + end_reason_name(EndReason(r)) + "\"",
             double(s.finished_total[r]));
  w.histogram("lamina_time_to_first_token_seconds", "Arrival to first generated token.", s.ttft);
  w.histogram("lamina_inter_token_latency_seconds", "Time between consecutive tokens of a request.", s.itl);
  w.header("lamina_http_requests_total", "counter", "Completion requests answered, by outcome.");
  w.sample("lamina_http_requests_total", "status=\"ok\"", double(http.requests_ok.load()));
  w.sample("lamina_http_requests_total", "status=\"bad_request\"", double(http.requests_bad.load()));
  w.sample("lamina_http_requests_total", "status=\"busy\"", double(http.requests_rejected_busy.load()));
  w.sample("lamina_http_requests_total", "status=\"error\"", double(http.requests_failed.load()));
  w.metric("lamina_client_disconnects_total", "counter", "Streams cancelled because the client went away.",
           double(http.client_disconnects.load()));
  return w.str();
}

}  // namespace lamina::server
