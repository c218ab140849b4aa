// POST /v1/completions and /v1/chat/completions: parse → tokenize (chat template for chat) →
// submit one scheduler request per choice → answer as one JSON body or as an SSE stream.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "scheduler/executor.h"
#include "server/drain_gate.h"
#include "server/metrics.h"
#include "server/openai_request.h"
#include "tokenizer/tokenizer.h"

namespace httplib {
struct Response;
class DataSink;
}  // namespace httplib

namespace lamina::server {

struct ServedModel {
  std::string name;
  std::vector<int32_t> end_ids;       // completions stop at these (the model's eos list)
  std::vector<int32_t> chat_end_ids;  // chat also stops at end-of-turn tokens (<|eot_id|>, <|eom_id|>)
  int64_t created = 0;
};

class CompletionRoutes {
 public:
  CompletionRoutes(Executor& executor, Tokenizer tokenizer, ServedModel model, HttpCounters& counters,
                   DrainGate& gate)
      : executor_(executor), tok_(std::move(tokenizer)), model_(std::move(model)), counters_(counters), gate_(gate) {}

  void handle(const std::string& body, httplib::Response& res, Endpoint endpoint);

 private:
  struct Prepared;
  struct StreamState;
  Prepared prepare(const std::string& body, Endpoint endpoint) const;
  void answer_whole(httplib::Response& res, Prepared& p);
  void answer_stream(httplib::Response& res, Prepared&& p);
  bool stream_step(StreamState& st, httplib::DataSink& sink);

  Executor& executor_;
  Tokenizer tok_;
  ServedModel model_;
  HttpCounters& counters_;
  DrainGate& gate_;
};

// Writes an OpenAI error body with its status.
void send_error(httplib::Response& res, int status, const std::string& message, const std::string& type,
                const std::string& param = "", const std::string& code = "");

}  // namespace lamina::server
