#include "convert/convert.h"

#include <filesystem>
#include <functional>
#include <vector>

#include "common/error.h"
#include "common/json.h"
#include "common/paths.h"
#include "common/progress.h"
#include "convert/sharding.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "io/tensor_source.h"
#include "io/tokenizer_files.h"
#include "common/quant.h"
#include "model/weight_names.h"

namespace lamina {

namespace {

// One output tensor: its declaration and how to fill it (the filler gets a buffer in the
// source dtype and fills it; conversion to the target dtype happens after).
struct Job {
  TensorDecl decl;  // in the output dtype
  std::function<void(std::vector<uint8_t>&, DType&)> fill;
  bool linear = false;  // a linear layer's weight: quantized under --quant_algo
};


class RankWriter {
 public:
  RankWriter(const ModelConfig& cfg, const TensorSource& src, DType out_dtype, int rank)
      : cfg_(cfg), src_(src), out_(out_dtype), rank_(rank) {}

  std::vector<Job> jobs() {
    std::vector<Job> js;
    const int64_t H = cfg_.hidden_size, D = cfg_.head_size;
    js.push_back(whole(names::kCkptEmbedding, "model.embed_tokens.weight", {cfg_.vocab_size, H}));
    for (int i = 0; i < int(cfg_.num_hidden_layers); ++i) {
      js.push_back(whole(names::ckpt_layer(i, "input_layernorm.weight"), names::hf_layer(i, "input_layernorm.weight"), {H}));
      js.push_back(linear(qkv(i)));
      js.push_back(linear(cols(names::ckpt_layer(i, "attention.dense.weight"), names::hf_layer(i, "self_attn.o_proj.weight"),
                               H, cfg_.num_attention_heads * D, cfg_.q_heads_per_rank() * D)));
      js.push_back(whole(names::ckpt_layer(i, "post_layernorm.weight"), names::hf_layer(i, "post_attention_layernorm.weight"), {H}));
      js.push_back(linear(rows(names::ckpt_layer(i, "mlp.fc.weight"), names::hf_layer(i, "mlp.gate_proj.weight"),
                               cfg_.intermediate_size, H, cfg_.intermediate_per_rank())));
      js.push_back(linear(rows(names::ckpt_layer(i, "mlp.gate.weight"), names::hf_layer(i, "mlp.up_proj.weight"),
                               cfg_.intermediate_size, H, cfg_.intermediate_per_rank())));
      js.push_back(linear(cols(names::ckpt_layer(i, "mlp.proj.weight"), names::hf_layer(i, "mlp.down_proj.weight"), H,
                               cfg_.intermediate_size, cfg_.intermediate_per_rank())));
    }
    js.push_back(whole(names::kCkptFinalNorm, "model.norm.weight", {H}));
    // Tied models have no lm_head in the HF file: the embedding serves as the output projection.
    const std::string head = cfg_.tie_word_embeddings || !src_.has("lm_head.weight") ? "model.embed_tokens.weight"
                                                                                      : "lm_head.weight";
    Job lm_head = rows(names::kCkptLmHead, head, cfg_.vocab_size, H, cfg_.vocab_per_rank());
    js.push_back(cfg_.quantize_lm_head ? linear(std::move(lm_head)) : std::move(lm_head));
    return js;
  }

 private:
  static Job linear(Job j) {
    j.linear = true;
    return j;
  }

  const TensorView& hf(const std::string& name, const std::vector<int64_t>& shape) {
    const TensorView& t = src_.get(name);
    if (t.shape != shape) {
      std::string want = TensorView{"", DType::F32, shape, nullptr, 0}.shape_str();
      fail("tensor '", name, "' has shape ", t.shape_str(), " but config.json implies ", want,
           ": the weights do not match config.json");
    }
    if (!dtype_is_float(t.dtype) || t.dtype == DType::F8_E4M3)
      fail("tensor '", name, "' has dtype ", dtype_safetensors_name(t.dtype), "; expected F32, F16 or BF16");
    return t;
  }

  Job whole(const std::string& out, const std::string& in, std::vector<int64_t> shape) {
    return {{out, out_, shape}, [this, in, shape](std::vector<uint8_t>& buf, DType& dt) {
              const TensorView& t = hf(in, shape);
              buf.assign(t.data, t.data + t.bytes);
              dt = t.dtype;
            }};
  }

  // Column-parallel: this rank's rows [rank*per, (rank+1)*per) of a [total_rows, cols] matrix.
  Job rows(const std::string& out, const std::string& in, int64_t total_rows, int64_t ncols, int64_t per) {
    return {{out, out_, {per, ncols}}, [=, this](std::vector<uint8_t>& buf, DType& dt) {
              const TensorView& t = hf(in, {total_rows, ncols});
              dt = t.dtype;
              buf.resize(size_t(per * ncols) * dtype_size(dt));
              copy_rows(t.data, total_rows, ncols, dtype_size(dt), rank_ * per, per, buf.data());
            }};
  }

  // Row-parallel: this rank's columns of a [nrows, total_cols] matrix.
  Job cols(const std::string& out, const std::string& in, int64_t nrows, int64_t total_cols, int64_t per) {
    return {{out, out_, {nrows, per}}, [=, this](std::vector<uint8_t>& buf, DType& dt) {
              const TensorView& t = hf(in, {nrows, total_cols});
              dt = t.dtype;
              buf.resize(size_t(nrows * per) * dtype_size(dt));
              copy_cols(t.data, nrows, total_cols, dtype_size(dt), rank_ * per, per, buf.data());
            }};
  }

  // Fused qkv for this rank: its q heads, then its k heads, then its v heads (KV heads
  // duplicated across ranks when tp_size > num_key_value_heads).
  Job qkv(int layer) {
    const int64_t H = cfg_.hidden_size, D = cfg_.head_size;
    const int64_t hq = cfg_.q_heads_per_rank(), hkv = cfg_.kv_heads_per_rank();
    return {{names::ckpt_layer(layer, "attention.qkv.weight"), out_, {(hq + 2 * hkv) * D, H}},
            [=, this](std::vector<uint8_t>& buf, DType& dt) {
              const TensorView& q = hf(names::hf_layer(layer, "self_attn.q_proj.weight"), {cfg_.num_attention_heads * D, H});
              const TensorView& k = hf(names::hf_layer(layer, "self_attn.k_proj.weight"), {cfg_.num_key_value_heads * D, H});
              const TensorView& v = hf(names::hf_layer(layer, "self_attn.v_proj.weight"), {cfg_.num_key_value_heads * D, H});
              if (k.dtype != q.dtype || v.dtype != q.dtype) fail("q/k/v projections of layer ", layer, " differ in dtype");
              dt = q.dtype;
              const size_t e = dtype_size(dt), head_bytes = size_t(D * H) * e;
              buf.resize(size_t((hq + 2 * hkv) * D * H) * e);
              uint8_t* dst = buf.data();
              copy_rows(q.data, cfg_.num_attention_heads * D, H, e, rank_ * hq * D, hq * D, dst);
              dst += size_t(hq) * head_bytes;
              for (const TensorView* kv : {&k, &v})
                for (int64_t j = 0; j < hkv; ++j, dst += head_bytes)
                  copy_rows(kv->data, cfg_.num_key_value_heads * D, H, e, cfg_.kv_head_for_rank(rank_, j) * D, D, dst);
            }};
  }

  const ModelConfig& cfg_;
  const TensorSource& src_;
  DType out_;
  int rank_;
};

DType storage_dtype(const std::string& name) {
  try {
    return dtype_from_user_name(name);
  } catch (const Error&) {
    return DType::BF16;
  }
}

}  // namespace

void convert_checkpoint(const ConvertOptions& opts) {
  if (opts.tp_size < 1) fail("--tp_size must be at least 1");
  if (!opts.quant_algo.empty() && !quant_algo_supported(opts.quant_algo))
    fail("unknown --quant_algo '", opts.quant_algo, "' (supported: ", kSupportedQuantAlgos, ")");
  if (!kv_cache_quant_algo_supported(opts.kv_cache_quant_algo))
    fail("unknown --kv_cache_quant_algo '", opts.kv_cache_quant_algo, "' (supported: ", kSupportedKvCacheQuantAlgos, ")");
  if (opts.quantize_lm_head && opts.quant_algo != "W8A16" && opts.quant_algo != "W4A16_AWQ")
    fail("--quantize_lm_head needs --quant_algo W8A16 or W4A16_AWQ",
         opts.quant_algo.empty() ? std::string(" (no --quant_algo was given)")
                                 : ", not " + opts.quant_algo + " (FP8 keeps lm_head in the engine dtype)");
  if (opts.pp_size != 1) fail("--pp_size ", opts.pp_size, " is not supported: pipeline parallelism is not implemented; use --pp_size 1");
  ModelConfig cfg = load_hf_config(opts.model_dir);
  cfg.mapping = {opts.tp_size * opts.pp_size, opts.tp_size, opts.pp_size};
  try {
    cfg.validate();
  } catch (const Error& e) {
    fail("cannot convert with --tp_size ", opts.tp_size, ": ", e.what());
  }
  if (opts.quant_algo == "W4A16_AWQ") {
    // Every quantized linear layer's K (input features) must split into whole groups.
    const int64_t G = kInt4GroupSize;
    const std::pair<const char*, int64_t> ks[] = {{"hidden_size", cfg.hidden_size},
                                                   {"attention output (q heads per rank * head_size)",
                                                    cfg.q_heads_per_rank() * cfg.head_size},
                                                   {"intermediate_size per rank", cfg.intermediate_per_rank()}};
    for (const auto& [what, k] : ks)
      if (k % G != 0)
        fail("cannot quantize to W4A16_AWQ: ", what, " = ", k, " is not a multiple of the group size ", G,
             " (use W8A16 or FP8 for this model)");
  }
  const DType out = opts.dtype_given ? opts.dtype : storage_dtype(cfg.dtype);
  cfg.dtype = dtype_user_name(out);
  cfg.quant_algo = opts.quant_algo;
  cfg.quantize_lm_head = opts.quantize_lm_head;
  cfg.kv_cache_quant_algo = opts.kv_cache_quant_algo;
  if (!kv_cache_quant_algo_fits_dtype(cfg.kv_cache_quant_algo, cfg.dtype))
    fail("--kv_cache_quant_algo FP8 needs a float16 or bfloat16 checkpoint (--dtype float16 or bfloat16)");
  const TensorSource src = TensorSource::open_hf_dir(opts.model_dir);

  StagedDir staged(opts.output_dir);
  write_json_file((staged.path() / "config.json").string(), model_config_to_json(cfg));
  copy_tokenizer_files(opts.model_dir, staged.path());

  const size_t per_rank = size_t(2 + 7 * cfg.num_hidden_layers + 1);
  Progress progress("convert", per_rank * size_t(opts.tp_size));
  std::vector<uint8_t> buf, converted;
  for (int r = 0; r < opts.tp_size; ++r) {
    RankWriter rank(cfg, src, out, r);
    std::vector<Job> jobs = rank.jobs();
    // A quantized linear weight is stored as its quantized data followed by its scales
    // (TensorRT-LLM's names; docs/formats.md):
    //   W8A16      int8 [N, K]                 + per_channel_scale [N]
    //   FP8        F8_E4M3 [N, K]              + weights_scaling_factor [1]
    //   W4A16_AWQ  int8 [N, K/2] (packed int4) + weights_scaling_factor [N, K/128]
    const std::string& qa = opts.quant_algo;
    std::vector<TensorDecl> decls;
    for (const auto& j : jobs) {
      if (qa.empty() || !j.linear) {
        decls.push_back(j.decl);
        continue;
      }
      const int64_t N = j.decl.shape[0], K = j.decl.shape[1];
      if (qa == "W8A16") {
        decls.push_back({j.decl.name, DType::I8, {N, K}});
        decls.push_back({names::ckpt_scale_name(j.decl.name), DType::F32, {N}});
      } else if (qa == "FP8") {
        decls.push_back({j.decl.name, DType::F8_E4M3, {N, K}});
        decls.push_back({names::ckpt_weights_scaling_factor_name(j.decl.name), DType::F32, {1}});
      } else {
        decls.push_back({j.decl.name, DType::I8, {N, K / 2}});
        decls.push_back({names::ckpt_weights_scaling_factor_name(j.decl.name), DType::F32, {N, K / kInt4GroupSize}});
      }
    }
    const std::string path = (staged.path() / ("rank" + std::to_string(r) + ".safetensors")).string();
    SafetensorsWriter writer(path, decls, {{"format", "pt"}, {"producer", "lamina convert"}});
    std::vector<float> f32, scales;
    std::vector<uint8_t> q;
    for (auto& j : jobs) {
      DType src_dtype = out;
      j.fill(buf, src_dtype);
      const size_t n = buf.size() / dtype_size(src_dtype);
      if (!qa.empty() && j.linear) {
        const int64_t rows = j.decl.shape[0], cols = j.decl.shape[1];
        f32.resize(n);
        convert_to_f32(buf.data(), src_dtype, f32.data(), n);
        std::string scale_name = names::ckpt_weights_scaling_factor_name(j.decl.name);
        if (qa == "W8A16") {
          q.resize(n);
          scales.resize(size_t(rows));
          quantize_int8_per_channel(f32.data(), rows, cols, reinterpret_cast<int8_t*>(q.data()), scales.data());
          scale_name = names::ckpt_scale_name(j.decl.name);
        } else if (qa == "FP8") {
          q.resize(n);
          scales.assign(1, quantize_fp8_per_tensor(f32.data(), n, q.data()));
        } else {
          q.resize(n / 2);
          scales.resize(size_t(rows * (cols / kInt4GroupSize)));
          quantize_int4_groups(f32.data(), rows, cols, kInt4GroupSize, q.data(), scales.data());
        }
        writer.write(j.decl.name, q.data(), q.size());
        writer.write(scale_name, scales.data(), scales.size() * sizeof(float));
      } else if (src_dtype == out) {
        writer.write(j.decl.name, buf.data(), buf.size());
      } else {
        converted.resize(n * dtype_size(out));
        convert_dtype(buf.data(), src_dtype, converted.data(), out, n);
        writer.write(j.decl.name, converted.data(), converted.size());
      }
      progress.advance(1, j.decl.name);
    }
    writer.close();
  }
  progress.finish();
  staged.commit();
  log_info("wrote checkpoint to " + opts.output_dir + " (tp_size " + std::to_string(opts.tp_size) + ", " +
           dtype_user_name(out) + ")");
}

}  // namespace lamina
