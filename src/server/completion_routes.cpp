#include "server/completion_routes.h"

#include <httplib.h>

#include <cstdio>
#include <random>

#include "server/api_error.h"
#include "server/completion_job.h"
#include "server/openai_response.h"

namespace lamina::server {

namespace {

constexpr auto kPollInterval = std::chrono::milliseconds(200);
// A stream silent this long gets an SSE comment: writing is how a closed client is noticed.
constexpr auto kKeepAliveInterval = std::chrono::milliseconds(1000);

std::string body_of(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

uint64_t random_seed() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

}  // namespace

void send_error(httplib::Response& res, int status, const std::string& message, const std::string& type,
                const std::string& param, const std::string& code) {
  res.status = status;
  res.set_content(body_of(ApiError(status, message, type, param, code).to_json()), "application/json");
}

struct CompletionRoutes::Prepared {
  CompletionParams params;
  std::vector<RequestSpec> specs;  // one per choice: prompt i's choices are specs[i*n .. i*n+n)
  int prompt_tokens = 0;
  ResponseMeta meta;
  std::shared_ptr<CompletionJob> job;
};

CompletionRoutes::Prepared CompletionRoutes::prepare(const std::string& body, Endpoint endpoint) const {
  Prepared p;
  p.params = parse_completion_params(body, endpoint);
  const CompletionParams& c = p.params;
  const bool chat = endpoint == Endpoint::Chat;
  if (!c.model.empty() && c.model != model_.name)
    throw ApiError(404, "the model '" + c.model + "' does not exist: this server serves '" + model_.name + "'",
                   "invalid_request_error", "model", "model_not_found");

  // Prompts → token ids.
  const char* prompt_param = chat ? "messages" : "prompt";
  std::vector<std::vector<int32_t>> prompts;
  try {
    if (chat) {
      if (!tok_.has_chat_template())
        bad_request("this model's tokenizer has no chat template: use /v1/completions", "messages");
      prompts.push_back(tok_.encode(tok_.render_chat_json(c.messages, true), /*add_special_tokens=*/false));
    } else {
      for (const PromptInput& in : c.prompts) prompts.push_back(in.is_ids ? in.ids : tok_.encode(in.text, true));
    }
  } catch (const Error& e) {
    bad_request(std::string("cannot tokenize the ") + prompt_param + ": " + e.what(), prompt_param);
  }

  // One scheduler request per choice.
  const RequestLimits& lim = executor_.limits();
  const int context = std::min(lim.max_seq_len, lim.kv_tokens_capacity);
  int choice = 0;
  for (const auto& prompt : prompts) {
    const int n_prompt = int(prompt.size());
    const int max_tokens = c.max_tokens ? *c.max_tokens : chat ? std::max(1, context - n_prompt) : 16;
    for (int k = 0; k < c.n; ++k, ++choice) {
      RequestSpec s;
      s.prompt = prompt;
      s.max_tokens = max_tokens;
      s.sampling = sampling_for_choice(c, choice, random_seed());
      if (!c.ignore_eos) s.end_ids = chat ? model_.chat_end_ids : model_.end_ids;
      s.top_logprobs = c.logprobs;
      p.specs.push_back(std::move(s));
    }
    p.prompt_tokens += n_prompt;
  }
  p.meta = {endpoint, new_response_id(endpoint), model_.name, int64_t(std::time(nullptr)), c.logprobs >= 0};
  return p;
}

void CompletionRoutes::handle(const std::string& body, httplib::Response& res, Endpoint endpoint) {
  if (!gate_.enter()) {
    ++counters_.requests_rejected_busy;
    send_error(res, 503, "the server is shutting down", "server_error", "",
               "service_unavailable");
    return;
  }
  bool streaming = false;
  try {
    Prepared p = prepare(body, endpoint);
    p.job = std::make_shared<CompletionJob>(executor_, tok_, p.params.stop);
    p.job->submit(std::move(p.specs));
    streaming = p.params.stream;
    if (streaming) answer_stream(res, std::move(p));  // the stream leaves the gate when it ends
    else answer_whole(res, p);
  } catch (const ApiError& e) {
    ++counters_.requests_bad;
    res.status = e.status();
    res.set_content(body_of(e.to_json()), "application/json");
  } catch (const RequestRejected& e) {
    using Kind = RequestRejected::Kind;
    if (e.kind() == Kind::Invalid) {
      ++counters_.requests_bad;
      const std::string param = endpoint == Endpoint::Chat && e.param() == "prompt" ? "messages" : e.param();
      send_error(res, 400, e.what(), "invalid_request_error", param, e.code());
    } else {
      ++counters_.requests_rejected_busy;
      const bool full = e.kind() == Kind::QueueFull;
      send_error(res, full ? 429 : 503, e.what(), full ? "rate_limit_error" : "server_error", "",
                 full ? "rate_limit_exceeded" : "service_unavailable");
    }
  } catch (const std::exception& e) {
    ++counters_.requests_failed;
    send_error(res, 500, std::string("internal error: ") + e.what(), "server_error");
  }
  if (!streaming) gate_.leave();
}

void CompletionRoutes::answer_whole(httplib::Response& res, Prepared& p) {
  std::vector<ChoiceResult> results(p.job->num_choices());
  while (!p.job->done())
    for (ChoiceDelta& d : p.job->poll(kPollInterval)) {
      ChoiceResult& r = results[size_t(d.index)];
      r.text += d.text;
      r.tokens.insert(r.tokens.end(), d.tokens.begin(), d.tokens.end());
      if (d.finish_reason) r.finish_reason = *d.finish_reason;
    }
  if (p.job->error()) {
    ++counters_.requests_failed;
    send_error(res, 500, "generation failed: " + *p.job->error(), "server_error");
    return;
  }
  ++counters_.requests_ok;
  res.set_content(body_of(response_json(p.meta, results, tok_, p.prompt_tokens, p.job->completion_tokens())),
                  "application/json");
}

struct CompletionRoutes::StreamState {
  Prepared p;
  bool opened = false;
  std::chrono::steady_clock::time_point last_write = std::chrono::steady_clock::now();
};

// One call of httplib's content provider: waits up to kPollInterval for tokens and writes them.
// Returns false when a write fails (the client left) so httplib ends the response.
bool CompletionRoutes::stream_step(StreamState& st, httplib::DataSink& sink) {
  auto write = [&](const std::string& s) {
    st.last_write = std::chrono::steady_clock::now();
    return sink.write(s.data(), s.size());
  };
  CompletionJob& job = *st.p.job;
  const ResponseMeta& meta = st.p.meta;
  if (!st.opened) {
    st.opened = true;
    if (meta.endpoint == Endpoint::Chat)
      for (size_t i = 0; i < job.num_choices(); ++i)
        if (!write(sse_event(chat_role_chunk_json(meta, int(i))))) return false;
  }
  for (const ChoiceDelta& d : job.poll(kPollInterval))
    if (!write(sse_event(chunk_json(meta, d, tok_)))) return false;
  if (!job.done()) {
    if (std::chrono::steady_clock::now() - st.last_write > kKeepAliveInterval) return write(": keep-alive\n\n");
    return true;
  }
  if (job.error()) {
    ++counters_.requests_failed;
    if (!write(sse_event(ApiError(500, "generation failed: " + *job.error(), "server_error").to_json()))) return false;
  }
  if (st.p.params.include_usage &&
      !write(sse_event(usage_chunk_json(meta, st.p.prompt_tokens, job.completion_tokens()))))
    return false;
  if (!write(kSseDone)) return false;
  sink.done();
  return true;
}

void CompletionRoutes::answer_stream(httplib::Response& res, Prepared&& p) {
  auto st = std::make_shared<StreamState>(StreamState{std::move(p)});
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  ++counters_.requests_ok;
  auto provider = [this, st](size_t, httplib::DataSink& sink) {
    try {
      return stream_step(*st, sink);
    } catch (const std::exception& e) {  // never let an exception into httplib's writer
      std::fprintf(stderr, "[lamina] stream aborted: %s\n", e.what());
      return false;
    }
  };
  // Runs when the response is over, written or not: a broken stream cancels its requests now.
  auto release = [this, st](bool success) {
    if (!success || !st->p.job->done()) {
      st->p.job->cancel();
      ++counters_.client_disconnects;
    }
    st->p.job.reset();
    gate_.leave();
  };
  res.set_chunked_content_provider("text/event-stream", provider, release);
}

}  // namespace lamina::server
