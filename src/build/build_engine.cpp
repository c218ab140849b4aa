#include "build/build_engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <vector>

#include "common/error.h"
#include "common/paths.h"
#include "common/progress.h"
#include "common/quant.h"
#include "io/engine_file.h"
#include "io/hf_config.h"
#include "io/tensor_source.h"
#include "io/tokenizer_files.h"
#include "model/weight_names.h"

namespace lamina {

namespace {

BuildLimits resolve_limits(const BuildOptions& o, const ModelConfig& cfg) {
  BuildLimits l{};
  if (o.max_batch_size < 1) fail("--max_batch_size must be at least 1");
  if (o.max_input_len < 1) fail("--max_input_len must be at least 1");
  l.max_batch_size = o.max_batch_size;
  l.max_input_len = o.max_input_len;
  if (o.max_seq_len && o.max_output_len && *o.max_seq_len != o.max_input_len + *o.max_output_len)
    fail("--max_seq_len ", *o.max_seq_len, " contradicts --max_input_len + --max_output_len = ",
         o.max_input_len + *o.max_output_len, ": give one of --max_seq_len or --max_output_len");
  if (o.max_seq_len) l.max_seq_len = *o.max_seq_len;
  else if (o.max_output_len) l.max_seq_len = o.max_input_len + *o.max_output_len;
  else l.max_seq_len = static_cast<int>(cfg.max_position_embeddings);
  if (l.max_seq_len <= l.max_input_len)
    fail("max_seq_len (", l.max_seq_len, ") must exceed max_input_len (", l.max_input_len,
         ") to leave room for output tokens");
  if (l.max_seq_len > cfg.max_position_embeddings)
    log_warn("max_seq_len " + std::to_string(l.max_seq_len) + " exceeds the model's max_position_embeddings " +
             std::to_string(cfg.max_position_embeddings) + "; quality past it is not guaranteed");
  l.max_num_tokens = o.max_num_tokens ? *o.max_num_tokens : std::min(8192, std::max(l.max_input_len, l.max_batch_size));
  if (l.max_num_tokens < l.max_batch_size)
    fail("--max_num_tokens (", l.max_num_tokens, ") must be at least --max_batch_size (", l.max_batch_size, ")");
  return l;
}

// A TensorRT-LLM FP8 weight's per-tensor scale ([] or [1] float32).
float fp8_scale(const TensorSource& ckpt, const std::string& weight) {
  const std::string name = names::ckpt_weights_scaling_factor_name(weight);
  if (!ckpt.has(name)) fail("checkpoint tensor ", weight, " is FP8 but ", name, " is missing");
  const TensorView& s = ckpt.get(name);
  if (s.dtype != DType::F32 || s.numel() != 1)
    fail("checkpoint tensor ", name, " must be one float32 (a per-tensor FP8 scale), got ",
         dtype_safetensors_name(s.dtype), " ", s.shape_str());
  float v;
  std::memcpy(&v, s.data, sizeof(v));
  if (!(v > 0.0f) || !std::isfinite(v)) fail("checkpoint tensor ", name, " holds ", v, ", not a positive scale");
  return v;
}

// Writes one rank's engine file: each tensor converted to `dt`, gate/up fused.
void write_rank(const ModelConfig& cfg, const TensorSource& ckpt, DType dt, const std::string& path, Progress& progress) {
  EngineFileWriter w(path);
  std::vector<uint8_t> buf;
  // W8A16: int8 rows are concatenated as they are, and so are their per-channel scales.
  auto put_int8 = [&](const std::string& engine_name, const std::vector<std::string>& sources) {
    std::vector<int64_t> shape;
    std::vector<uint8_t> scales;
    buf.clear();
    for (const auto& s : sources) {
      const TensorView& t = ckpt.get(s);
      const TensorView& sc = ckpt.get(names::ckpt_scale_name(s));
      if (t.dtype != DType::I8 || t.shape.size() != 2 || sc.dtype != DType::F32 || sc.shape != std::vector<int64_t>{t.shape[0]})
        fail("checkpoint tensors ", s, " and its per_channel_scale are not an int8 [rows, cols] weight with float32 [rows] scales");
      if (shape.empty()) shape = t.shape;
      else shape[0] += t.shape[0];
      buf.insert(buf.end(), t.data, t.data + t.bytes);
      scales.insert(scales.end(), sc.data, sc.data + sc.bytes);
    }
    w.add(engine_name, DType::I8, shape, buf.data(), buf.size());
    w.add(names::engine_scale_name(engine_name), DType::F32, {shape[0]}, scales.data(), scales.size());
    progress.advance(1, engine_name);
  };
  // FP8: e4m3 rows are concatenated; fused tensors of different scales (gate and up) are
  // re-encoded at the larger scale, so the engine tensor keeps one per-tensor scale.
  auto put_fp8 = [&](const std::string& engine_name, const std::vector<std::string>& sources) {
    float scale = 0.0f;
    for (const auto& s : sources) scale = std::max(scale, fp8_scale(ckpt, s));
    std::vector<int64_t> shape;
    buf.clear();
    for (const auto& s : sources) {
      const TensorView& t = ckpt.get(s);
      if (t.dtype != DType::F8_E4M3 || t.shape.size() != 2)
        fail("checkpoint tensor ", s, " is not an F8_E4M3 [rows, cols] weight (quant_algo FP8)");
      if (shape.empty()) shape = t.shape;
      else shape[0] += t.shape[0];
      const size_t at = buf.size();
      buf.insert(buf.end(), t.data, t.data + t.bytes);
      requantize_fp8(buf.data() + at, t.bytes, fp8_scale(ckpt, s), scale);
    }
    w.add(engine_name, DType::F8_E4M3, shape, buf.data(), buf.size());
    w.add(names::engine_scale_name(engine_name), DType::F32, {1}, &scale, sizeof(scale));
    progress.advance(1, engine_name);
  };
  // W4A16_AWQ: packed int4 rows [rows, K/2] and their group scales [rows, K/G] are concatenated.
  auto put_int4 = [&](const std::string& engine_name, const std::vector<std::string>& sources) {
    std::vector<int64_t> shape, scale_shape;
    std::vector<uint8_t> scales;
    buf.clear();
    for (const auto& s : sources) {
      const TensorView& t = ckpt.get(s);
      const TensorView& sc = ckpt.get(names::ckpt_weights_scaling_factor_name(s));
      const int64_t K = t.shape.size() == 2 ? 2 * t.shape[1] : 0;
      if (t.dtype != DType::I8 || t.shape.size() != 2 || sc.dtype != DType::F32 ||
          sc.shape != std::vector<int64_t>{t.shape[0], K / cfg.group_size} || K % cfg.group_size != 0)
        fail("checkpoint tensors ", s, " and its weights_scaling_factor are not a packed int4 [rows, K/2] weight with "
             "float32 [rows, K/", cfg.group_size, "] scales (quant_algo W4A16_AWQ)");
      if (shape.empty()) shape = t.shape, scale_shape = sc.shape;
      else shape[0] += t.shape[0], scale_shape[0] += sc.shape[0];
      buf.insert(buf.end(), t.data, t.data + t.bytes);
      scales.insert(scales.end(), sc.data, sc.data + sc.bytes);
    }
    w.add(engine_name, DType::U8, shape, buf.data(), buf.size(), kInt4PackedLayout);
    w.add(names::engine_scale_name(engine_name), DType::F32, scale_shape, scales.data(), scales.size());
    progress.advance(1, engine_name);
  };
  auto put = [&](const std::string& engine_name, const std::vector<std::string>& sources) {
    const DType src = ckpt.get(sources[0]).dtype;
    if (cfg.quant_algo == "W4A16_AWQ" && src == DType::I8) return put_int4(engine_name, sources);
    if (src == DType::I8) return put_int8(engine_name, sources);
    if (src == DType::F8_E4M3) return put_fp8(engine_name, sources);
    std::vector<int64_t> shape;
    size_t total = 0;
    for (const auto& s : sources) {
      const TensorView& t = ckpt.get(s);
      if (!dtype_is_float(t.dtype) || t.dtype == DType::F8_E4M3)
        fail("checkpoint tensor '", s, "' has dtype ", dtype_safetensors_name(t.dtype),
             "; expected F32, F16 or BF16 (only linear layers are quantized)");
      if (shape.empty()) shape = t.shape;
      else {
        if (t.shape.size() != 2 || shape.size() != 2 || t.shape[1] != shape[1])
          fail("checkpoint tensors ", sources[0], " and ", s, " cannot be fused: shapes differ");
        shape[0] += t.shape[0];
      }
      total += size_t(t.numel());
    }
    buf.resize(total * dtype_size(dt));
    uint8_t* dst = buf.data();
    for (const auto& s : sources) {
      const TensorView& t = ckpt.get(s);
      convert_dtype(t.data, t.dtype, dst, dt, size_t(t.numel()));
      dst += size_t(t.numel()) * dtype_size(dt);
    }
    w.add(engine_name, dt, shape, buf.data(), buf.size());
    progress.advance(1, engine_name);
  };
  auto expect = [&](const std::string& name, std::vector<int64_t> shape) {
    const TensorView& t = ckpt.get(name);
    if (t.shape != shape)
      fail("checkpoint tensor '", name, "' has shape ", t.shape_str(), " but config.json implies ",
           TensorView{"", DType::F32, shape, nullptr, 0}.shape_str(), ": the checkpoint does not match its config");
  };
  // A linear weight [N, K]; W4A16_AWQ stores it packed as [N, K/2].
  auto expect_linear = [&](const std::string& name, int64_t N, int64_t K) {
    const bool packed = cfg.quant_algo == "W4A16_AWQ" && ckpt.get(name).dtype == DType::I8;
    expect(name, {N, packed ? K / 2 : K});
  };
  const int64_t H = cfg.hidden_size, D = cfg.head_size;
  expect(names::kCkptEmbedding, {cfg.vocab_size, H});
  put(names::kEngEmbedding, {names::kCkptEmbedding});
  for (int i = 0; i < int(cfg.num_hidden_layers); ++i) {
    using names::ckpt_layer;
    using names::engine_layer;
    expect(ckpt_layer(i, "input_layernorm.weight"), {H});
    expect_linear(ckpt_layer(i, "attention.qkv.weight"), cfg.qkv_rows_per_rank(), H);
    expect_linear(ckpt_layer(i, "attention.dense.weight"), H, cfg.q_heads_per_rank() * D);
    expect(ckpt_layer(i, "post_layernorm.weight"), {H});
    expect_linear(ckpt_layer(i, "mlp.fc.weight"), cfg.intermediate_per_rank(), H);
    expect_linear(ckpt_layer(i, "mlp.gate.weight"), cfg.intermediate_per_rank(), H);
    expect_linear(ckpt_layer(i, "mlp.proj.weight"), H, cfg.intermediate_per_rank());
    put(engine_layer(i, names::kEngInputNorm), {ckpt_layer(i, "input_layernorm.weight")});
    put(engine_layer(i, names::kEngQkv), {ckpt_layer(i, "attention.qkv.weight")});
    put(engine_layer(i, names::kEngAttnOut), {ckpt_layer(i, "attention.dense.weight")});
    put(engine_layer(i, names::kEngPostNorm), {ckpt_layer(i, "post_layernorm.weight")});
    put(engine_layer(i, names::kEngGateUp), {ckpt_layer(i, "mlp.fc.weight"), ckpt_layer(i, "mlp.gate.weight")});
    put(engine_layer(i, names::kEngDown), {ckpt_layer(i, "mlp.proj.weight")});
  }
  expect(names::kCkptFinalNorm, {H});
  put(names::kEngFinalNorm, {names::kCkptFinalNorm});
  // A TensorRT-LLM checkpoint of a tied model may omit lm_head: use the (whole) embedding then.
  if (ckpt.has(names::kCkptLmHead)) {
    // A quantized lm_head (convert --quantize_lm_head) is stored as the other linear weights are.
    const bool quantized = ckpt.get(names::kCkptLmHead).dtype == DType::I8;
    if (quantized != cfg.quantize_lm_head)
      fail("checkpoint tensor '", names::kCkptLmHead, "' is ", quantized ? "" : "not ", "quantized but config.json says ",
           "lm_head is ", cfg.quantize_lm_head ? "" : "not ", "(quantization.exclude_modules): the checkpoint does not ",
           "match its config; re-convert it with lamina convert");
    expect_linear(names::kCkptLmHead, cfg.vocab_per_rank(), H);
    put(names::kEngLmHead, {names::kCkptLmHead});
  } else if (cfg.quantize_lm_head) {
    fail("checkpoint has no lm_head.weight but its config says lm_head is quantized; re-convert it with lamina convert");
  } else if (cfg.mapping.tp_size == 1) {
    put(names::kEngLmHead, {names::kCkptEmbedding});
  } else {
    fail("checkpoint has no lm_head.weight; re-convert it with lamina convert");
  }
  w.finish();
}

}  // namespace

void build_engine(const BuildOptions& opts) {
  const fs::path ckpt_dir(opts.checkpoint_dir);
  if (!fs::is_directory(ckpt_dir)) fail("checkpoint directory '", opts.checkpoint_dir, "' does not exist");
  const fs::path cfg_path = ckpt_dir / "config.json";
  if (!fs::exists(cfg_path))
    fail("'", cfg_path.string(), "' is missing: --checkpoint_dir must be the output of lamina convert");
  const Json ckpt_json = read_json_file(cfg_path.string());
  const ModelConfig cfg = model_config_from_json(ckpt_json, cfg_path.string());
  const BuildLimits lim = resolve_limits(opts, cfg);
  const DType dt = opts.dtype ? *opts.dtype : dtype_from_user_name(cfg.dtype);
  const int tp = cfg.mapping.tp_size;
  for (int r = 0; r < tp; ++r)
    if (!fs::exists(ckpt_dir / ("rank" + std::to_string(r) + ".safetensors")))
      fail("checkpoint '", opts.checkpoint_dir, "' has tp_size ", tp, " but rank", r, ".safetensors is missing");

  ModelConfig engine_cfg = cfg;
  engine_cfg.dtype = dtype_user_name(dt);
  if (!kv_cache_quant_algo_supported(opts.kv_cache_quant_algo))
    fail("unknown --kv_cache_quant_algo '", opts.kv_cache_quant_algo, "' (supported: ", kSupportedKvCacheQuantAlgos, ")");
  if (!opts.kv_cache_quant_algo.empty()) engine_cfg.kv_cache_quant_algo = opts.kv_cache_quant_algo;
  if (!kv_cache_quant_algo_fits_dtype(engine_cfg.kv_cache_quant_algo, engine_cfg.dtype))
    fail("an FP8 KV cache needs a float16 or bfloat16 engine: build with --dtype bfloat16 (or float16)");
  StagedDir staged(opts.output_dir);
  Json config = {
      {"version", "0.1.0"},
      {"format_version", kEngineFormatVersion},
      {"pretrained_config", model_config_to_json(engine_cfg)},
      {"build_config",
       {{"max_batch_size", lim.max_batch_size}, {"max_input_len", lim.max_input_len}, {"max_seq_len", lim.max_seq_len},
        {"max_num_tokens", lim.max_num_tokens}, {"dtype", dtype_user_name(dt)}}},
  };
  write_json_file((staged.path() / "config.json").string(), config);
  const fs::path tok_dir = opts.tokenizer_dir.empty() ? ckpt_dir : fs::path(opts.tokenizer_dir);
  if (!opts.tokenizer_dir.empty() && !fs::exists(tok_dir / "tokenizer.json"))
    fail("--tokenizer_dir '", opts.tokenizer_dir, "' has no tokenizer.json");
  copy_tokenizer_files(tok_dir, staged.path());

  Progress progress("build", size_t(tp) * size_t(3 + 6 * cfg.num_hidden_layers));
  for (int r = 0; r < tp; ++r) {
    const TensorSource ckpt = TensorSource::open_file((ckpt_dir / ("rank" + std::to_string(r) + ".safetensors")).string());
    write_rank(engine_cfg, ckpt, dt, (staged.path() / ("rank" + std::to_string(r) + ".engine")).string(), progress);
  }
  progress.finish();
  staged.commit();
  log_info("wrote engine to " + opts.output_dir + " (" + dtype_user_name(dt) + ", tp_size " + std::to_string(tp) +
           ", max_seq_len " + std::to_string(lim.max_seq_len) + ")");
}

}  // namespace lamina
