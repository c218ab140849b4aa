// lamina run --engine_dir ENGINE (--input_text T... | --input_file ids.csv|ids.npy) --max_output_len N
// Mirrors TensorRT-LLM's run.py: same flags, same "Input [Text i]" / "Output [Text i Beam 0]"
// lines, and the same .npy outputs. --streaming prints text as it is generated.
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "commands.h"
#include "mpi_job.h"
#include "common/error.h"
#include "common/progress.h"
#include "io/npy.h"
#include "runtime/engine.h"
#include "runtime/generator.h"
#include "tokenizer/tokenizer.h"

namespace lamina::cli {

namespace {

struct RunOptions {
  std::string engine_dir, tokenizer_dir, input_file, device = "auto", system_prompt;
  std::vector<std::string> input_text, stop_words;
  int max_output_len = 64;
  bool streaming = false, chat = false, no_add_special_tokens = false, skip_checksum = false;
  std::vector<int> end_id;
  SamplingParams sampling;
  std::string output_npy, output_logits_npy, output_context_logits_npy;
};

std::vector<std::vector<int32_t>> read_input_file(const std::string& path, const std::vector<int>& pad_ids) {
  std::vector<std::vector<int32_t>> prompts;
  if (std::filesystem::path(path).extension() == ".npy") {
    const NpyArray a = read_npy(path);
    const std::vector<int64_t> v = a.as_i64();
    if (a.shape.empty() || a.shape.size() > 2) fail("'", path, "': expected a [len] or [batch, len] array of token ids");
    const int64_t rows = a.shape.size() == 2 ? a.shape[0] : 1, cols = a.shape.back();
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<int32_t> p(v.begin() + r * cols, v.begin() + (r + 1) * cols);
      // Rows are right-padded with the end id, as run.py writes them.
      while (!p.empty() && std::find(pad_ids.begin(), pad_ids.end(), p.back()) != pad_ids.end()) p.pop_back();
      prompts.push_back(std::move(p));
    }
    return prompts;
  }
  std::ifstream in(path);
  if (!in) fail("cannot read --input_file '", path, "'");
  std::string line;
  while (std::getline(in, line)) {
    std::vector<int32_t> p;
    std::stringstream ss(line);
    std::string cell;
    while (std::getline(ss, cell, ',')) {
      if (cell.find_first_not_of(" \t\r") == std::string::npos) continue;
      try {
        p.push_back(static_cast<int32_t>(std::stol(cell)));
      } catch (const std::exception&) {
        fail("--input_file '", path, "': '", cell, "' is not a token id (expected comma-separated integers)");
      }
    }
    if (!p.empty()) prompts.push_back(std::move(p));
  }
  if (prompts.empty()) fail("--input_file '", path, "' holds no token ids");
  return prompts;
}

std::string quoted(const std::string& s) { return Json(s).dump(); }

void run(const RunOptions& o) {
  EngineOptions eo;
  eo.device = parse_device(o.device);
  eo.verify_checksums = !o.skip_checksum;
  auto engine = load_engine_or_follow(o.engine_dir, eo);
  if (!engine) return;  // a follower process of an mpirun job: its rank ran until the leader ended
  const ModelConfig& cfg = engine->config();

  const std::string tok_dir = o.tokenizer_dir.empty() ? o.engine_dir : o.tokenizer_dir;
  const bool have_tokenizer = std::filesystem::exists(std::filesystem::path(tok_dir) / "tokenizer.json");
  std::optional<Tokenizer> tok;
  if (have_tokenizer) tok = Tokenizer::load(tok_dir);
  if (!tok && (!o.input_text.empty() || o.chat || !o.stop_words.empty()))
    fail("engine '", o.engine_dir, "' has no tokenizer.json: pass --tokenizer_dir, or give token ids with --input_file");

  // Prompts: text (optionally through the chat template) or ids from a file.
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> prompt_texts;
  std::vector<int32_t> end_ids(o.end_id.begin(), o.end_id.end());
  if (end_ids.empty()) {
    for (int64_t e : cfg.eos_token_ids) end_ids.push_back(int32_t(e));
    if (tok)
      for (int32_t e : tok->eos_token_ids())
        if (std::find(end_ids.begin(), end_ids.end(), e) == end_ids.end()) end_ids.push_back(e);
  }
  if (!o.input_file.empty()) {
    if (!o.input_text.empty()) fail("give --input_text or --input_file, not both");
    prompts = read_input_file(o.input_file, std::vector<int>(end_ids.begin(), end_ids.end()));
  } else {
    std::vector<std::string> texts = o.input_text;
    if (texts.empty()) texts.push_back("Born in north-east France, Soyer trained as a");
    for (const auto& t : texts) {
      if (o.chat) {
        std::vector<ChatMessage> msgs;
        if (!o.system_prompt.empty()) msgs.push_back({"system", o.system_prompt});
        msgs.push_back({"user", t});
        prompts.push_back(tok->encode_chat(msgs, true));
      } else {
        prompts.push_back(tok->encode(t, !o.no_add_special_tokens));
      }
      prompt_texts.push_back(t);
    }
  }
  std::vector<std::vector<int32_t>> stop_words;
  for (const auto& w : o.stop_words) stop_words.push_back(tok->encode(w, false));

  std::vector<GenerationResult> results;
  for (size_t i = 0; i < prompts.size(); ++i) {
    GenerationRequest req;
    req.prompt = prompts[i];
    req.max_new_tokens = o.max_output_len;
    req.sampling = o.sampling;
    req.end_ids = end_ids;
    req.stop_words = stop_words;
    req.return_context_logits = !o.output_context_logits_npy.empty();
    req.return_generation_logits = !o.output_logits_npy.empty();
    const std::string in_text = tok ? tok->decode(prompts[i]) : "";
    if (tok) std::printf("Input [Text %zu]: %s\n", i, quoted(in_text).c_str());
    std::fflush(stdout);
    GenerationResult r;
    if (o.streaming && tok) {
      StreamingDetokenizer detok(*tok, true);
      std::printf("Output [Text %zu Beam 0]: ", i);
      std::fflush(stdout);
      r = generate(*engine, req, [&](int32_t t) {
        const std::string piece = detok.push(t);
        std::fwrite(piece.data(), 1, piece.size(), stdout);
        std::fflush(stdout);
        return true;
      });
      const std::string rest = detok.flush();
      std::fwrite(rest.data(), 1, rest.size(), stdout);
      std::printf("\n");
    } else {
      r = generate(*engine, req);
      if (tok) std::printf("Output [Text %zu Beam 0]: %s\n", i, quoted(tok->decode(r.output_ids, true)).c_str());
    }
    if (!tok) {  // no tokenizer: the ids are the output
      std::string ids;
      for (int32_t t : r.output_ids) ids += (ids.empty() ? "" : ", ") + std::to_string(t);
      std::printf("Output ids [Text %zu Beam 0]: [%s] (finish_reason: %s)\n", i, ids.c_str(),
                  finish_reason_name(r.finish_reason));
    }
    std::fflush(stdout);
    results.push_back(std::move(r));
  }

  // run.py's outputs: ids [batch, beams, input + output] padded with the end id; logits float32.
  const int32_t pad = end_ids.empty() ? 0 : end_ids[0];
  if (!o.output_npy.empty()) {
    size_t width = 0;
    for (size_t i = 0; i < prompts.size(); ++i) width = std::max(width, prompts[i].size() + results[i].output_ids.size());
    std::vector<int32_t> out(prompts.size() * width, pad);
    for (size_t i = 0; i < prompts.size(); ++i) {
      std::copy(prompts[i].begin(), prompts[i].end(), out.begin() + long(i * width));
      std::copy(results[i].output_ids.begin(), results[i].output_ids.end(), out.begin() + long(i * width + prompts[i].size()));
    }
    write_npy_i32(o.output_npy, {int64_t(prompts.size()), 1, int64_t(width)}, out.data());
  }
  const int64_t V = cfg.vocab_size;
  auto write_logits = [&](const std::string& path, auto member) {
    if (path.empty()) return;
    if (results.size() == 1) {
      const std::vector<float>& l = results[0].*member;
      write_npy_f32(path, {int64_t(l.size()) / V, V}, l.data());
      return;
    }
    size_t rows = 0;
    for (const auto& r : results) rows = std::max(rows, (r.*member).size() / size_t(V));
    std::vector<float> all(results.size() * rows * size_t(V), 0.0f);
    for (size_t i = 0; i < results.size(); ++i)
      std::copy((results[i].*member).begin(), (results[i].*member).end(), all.begin() + long(i * rows * size_t(V)));
    write_npy_f32(path, {int64_t(results.size()), int64_t(rows), V}, all.data());
  };
  write_logits(o.output_logits_npy, &GenerationResult::generation_logits);
  write_logits(o.output_context_logits_npy, &GenerationResult::context_logits);
}

}  // namespace

void register_run(CLI::App& app) {
  auto* sub = app.add_subcommand("run", "Generate text with an engine");
  auto o = std::make_shared<RunOptions>();
  sub->add_option("--engine_dir", o->engine_dir, "Output of lamina build")->required();
  sub->add_option("--input_text", o->input_text, "Prompt text (several allowed)");
  sub->add_option("--input_file", o->input_file, "Token ids: .csv (one prompt per line) or .npy");
  sub->add_option("--max_output_len", o->max_output_len, "Most tokens to generate")->capture_default_str();
  sub->add_option("--tokenizer_dir", o->tokenizer_dir, "Tokenizer files (default: the engine dir)");
  sub->add_flag("--streaming", o->streaming, "Print text as it is generated");
  sub->add_flag("--chat", o->chat, "Wrap the input in the model's chat template");
  sub->add_option("--system_prompt", o->system_prompt, "System message for --chat");
  sub->add_flag("--no_add_special_tokens", o->no_add_special_tokens, "Do not add BOS to --input_text");
  sub->add_option("--device", o->device, "cuda or cpu (default: cuda when a GPU is present)")
      ->check(CLI::IsMember({"auto", "cuda", "gpu", "cpu"}));
  sub->add_option("--temperature", o->sampling.temperature)->capture_default_str();
  sub->add_option("--top_k", o->sampling.top_k, "1 = greedy (default)")->capture_default_str();
  sub->add_option("--top_p", o->sampling.top_p, "0 = off")->capture_default_str();
  sub->add_option("--repetition_penalty", o->sampling.repetition_penalty)->capture_default_str();
  sub->add_option("--presence_penalty", o->sampling.presence_penalty)->capture_default_str();
  sub->add_option("--frequency_penalty", o->sampling.frequency_penalty)->capture_default_str();
  sub->add_option("--random_seed", o->sampling.seed)->capture_default_str();
  sub->add_option("--stop_words", o->stop_words, "Strings that end generation");
  sub->add_option("--end_id", o->end_id, "Token ids that end generation (default: the model's eos list)");
  sub->add_option("--output_npy", o->output_npy, "Write prompt + generated ids [batch, 1, len] (int32)");
  sub->add_option("--output_logits_npy", o->output_logits_npy, "Write generation logits [generated, vocab] (float32)");
  sub->add_option("--output_context_logits_npy", o->output_context_logits_npy,
                  "Write context logits [prompt_len, vocab] (float32)");
  sub->add_flag("--skip_checksum", o->skip_checksum, "Do not verify engine checksums at load");
  sub->callback([o] { run(*o); });
}

}  // namespace lamina::cli
