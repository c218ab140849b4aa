// The device-neutral op set the Llama forward is written over (src/model/llama_forward.cpp).
// A backend owns its memory and runs each op on its device: the CPU backend is the readable
// fp32 reference; the CUDA backend is the fast one. Every op is checked against the CPU
// backend on random inputs in tests/ops.
//
// Conventions:
//  - "act" buffers hold activations in activation_dtype() (CPU: F32; CUDA: the engine dtype).
//  - "weight" buffers come from upload_weight() and are in the backend's weight layout.
//  - Shapes are given in the comments as [rows, cols], row-major. T = tokens in this step.
//  - Each token t carries a position (its index in its sequence) and a sequence row (which row
//    of the block tables lists its sequence's KV blocks: the `slots` arguments below); both are
//    device int32 arrays of length T.
//  - The KV cache is paged: each layer's k and v are a pool of fixed-size blocks, and the cache
//    row of (seq, pos) is block_tables[seq][pos / tokens_per_block] * tokens_per_block
//    + pos % tokens_per_block (see docs/runtime.md). Shared blocks are only read.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/dtype.h"
#include "common/error.h"
#include "ops/l2_prefetch.h"
#include "common/quant.h"
#include "ops/token_choice.h"

namespace lamina {

enum class DeviceKind { CPU, CUDA };

struct AttentionShape {
  int num_q_heads = 0;         // local to this rank
  int num_kv_heads = 0;        // local to this rank
  int head_dim = 0;
  int tokens_per_block = 32;   // cache rows per KV block
  int max_blocks_per_seq = 0;  // columns of the block tables
  int num_blocks = 0;          // blocks in the pool
  int num_seq_rows = 1;        // rows of the block tables (sequences of one step at most)
  // The caller's promise that a step's inputs (positions, sequence rows, block tables) and the
  // cache rows of earlier steps are complete before the step's first kernel runs (LlamaForward
  // uploads the inputs before every step, ordered before its first op). A step appends at most
  // T rows to a sequence, so rows below position - (T - 1) are earlier steps'. With it the
  // one-token decode kernel starts reading them while the qkv projection before it still runs.
  bool inputs_ready_before_step = false;
  // The step's prompt tiles, where the caller knows them (describe_prompt_tiles): tile i is tokens
  // [64i, 64i + 64) of the step (the last one may be shorter), a prompt tile one whose tokens all
  // carry one sequence row (a backend may give those to a prefill kernel). Every prompt tile lies
  // below tile prompt_tiles_end (-1: not known), and tiles 0 .. leading_prompt_tiles - 1 all are.
  int prompt_tiles_end = -1;
  int leading_prompt_tiles = 0;
  // A hint: the bytes the kernel after the attention reads first (the attention-out projection's
  // weights). A backend whose attention leaves DRAM idle may ask L2 for them meanwhile (the CUDA
  // one-token decode's split reduce does). {nullptr, 0}: none.
  L2Prefetch next;
  // Positions a sequence can hold: max_blocks_per_seq * tokens_per_block.
  int max_seq_len() const { return max_blocks_per_seq * tokens_per_block; }
};

inline constexpr int kAttentionTileTokens = 64;  // AttentionShape's prompt tiles

// Sets s.prompt_tiles_end and s.leading_prompt_tiles from the sequence rows of a step's T tokens.
inline void describe_prompt_tiles(AttentionShape& s, const int32_t* seq_rows, int T) {
  s.prompt_tiles_end = 0;
  s.leading_prompt_tiles = 0;
  bool leading = true;
  for (int tile = 0; tile * kAttentionTileTokens < T; ++tile) {
    const int begin = tile * kAttentionTileTokens, end = std::min(T, begin + kAttentionTileTokens);
    const bool prompt = std::all_of(seq_rows + begin, seq_rows + end, [&](int32_t r) { return r == seq_rows[begin]; });
    if (prompt) s.prompt_tiles_end = tile + 1;
    leading = leading && prompt;
    if (leading) s.leading_prompt_tiles = tile + 1;
  }
}

// One layer's paged KV cache.
//   k, v:          [num_blocks, tokens_per_block, num_kv_heads, head_dim] in kv_dtype (the pool)
//   block_tables:  device int32 [num_seq_rows, max_blocks_per_seq]: row s lists, in order, the
//                  blocks of the sequence whose tokens carry sequence row s (-1 = no block).
// Every layer has its own pool; all layers share the block tables.
struct KVCacheLayer {
  void* k = nullptr;
  void* v = nullptr;
  const int32_t* block_tables = nullptr;
  // FP8 KV cache (kv_cache_quant_algo FP8): the pools hold float8 e4m3 (kv_dtype(true)); a k or
  // v value x is stored as e4m3(x / scale) and read back as e4m3 * scale (this layer's scales).
  bool fp8_e4m3 = false;
  float k_scale = 1.0f, v_scale = 1.0f;
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual DeviceKind kind() const = 0;
  virtual std::string name() const = 0;
  virtual DType activation_dtype() const = 0;
  // Element type of the KV pools: of an FP8 KV cache (KVCacheLayer::fp8_e4m3) when fp8_cache.
  // The CPU reference keeps float32 either way (an FP8 cache's values rounded through e4m3).
  virtual DType kv_dtype(bool fp8_cache) const = 0;

  // ---- memory ----
  virtual void* alloc(size_t bytes) = 0;  // zero-filled is not promised
  virtual void free(void* p) = 0;
  // Returns once the bytes are in place and every op issued before it has finished (LlamaForward's
  // steps rely on it: AttentionShape::inputs_ready_before_step).
  virtual void copy_to_device(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void copy_to_host(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void synchronize() = 0;

  // ---- copies ordered with the ops (pipelined decoding: Engine::enqueue_step_and_choose) ----
  // copy_to_device without the wait: the bytes land after every op issued before it and before
  // every op issued after it. The backend keeps its own copy of host_src, which the caller may
  // reuse at once. The CPU reference, whose ops run as they are issued, copies at once.
  virtual void copy_to_device_ordered(void* dst, const void* host_src, size_t bytes) {
    copy_to_device(dst, host_src, bytes);
  }
  // dst = src (both device buffers), ordered like an op.
  virtual void copy_on_device(void* dst, const void* src, size_t bytes) {
    std::vector<char> tmp(bytes);
    copy_to_host(tmp.data(), src, bytes);
    copy_to_device(dst, tmp.data(), bytes);
  }
  // Starts bringing `bytes` from src to the host once the ops issued before it are done, without
  // waiting; returns a ticket (never 0). finish_copy_to_host(ticket, dst) waits for those bytes
  // and writes them to dst. Every ticket must be finished once.
  virtual uint64_t start_copy_to_host(const void* src, size_t bytes) {
    std::vector<char> bytes_now(bytes);
    copy_to_host(bytes_now.data(), src, bytes);
    early_copies_.emplace_back(next_copy_ticket_, std::move(bytes_now));
    return next_copy_ticket_++;
  }
  virtual void finish_copy_to_host(uint64_t ticket, void* host_dst) {
    for (auto it = early_copies_.begin(); it != early_copies_.end(); ++it)
      if (it->first == ticket) {
        std::copy(it->second.begin(), it->second.end(), static_cast<char*>(host_dst));
        early_copies_.erase(it);
        return;
      }
    fail_unknown_copy(ticket);
  }

  // Device memory free right now, in bytes; 0 where the backend's memory is host memory (CPU).
  virtual size_t free_device_memory() { return 0; }
  // Uploads n host elements of `dtype` as a weight; returns device memory the ops read.
  virtual void* upload_weight(const void* host, DType dtype, size_t n) = 0;
  // Uploads a quantized linear weight (common/quant.h); returns a weight handle that matmul()
  // takes as `w` and free() releases. A backend with kernels for the format keeps it quantized and
  // dispatches on it in matmul(); this default (the CPU reference) dequantizes it on the host.
  virtual void* upload_quantized_weight(const QuantizedWeight& w) {
    std::vector<float> f(size_t(w.rows) * size_t(w.cols));
    dequantize(w, f.data());
    return upload_weight(f.data(), DType::F32, f.size());
  }
  // Reads n activation elements back to the host as float32.
  virtual void activations_to_host_f32(float* host_dst, const void* src, size_t n) = 0;

  // Runs `ops`: a fixed sequence of op calls (same pointers and sizes every time `key` is used).
  // A backend may record the sequence once and replay the recording afterwards (the CUDA backend
  // captures it into a CUDA graph, removing per-kernel launch overhead from the decode step).
  virtual void run_recorded(uint64_t key, const std::function<void()>& ops) {
    (void)key;
    ops();
  }

  // ---- ops ----
  // out[T,H] = table[ids[t], :]          (table: weight [V,H]; ids: device int32 [T])
  virtual void embedding(void* out, const int32_t* ids, const void* table, int T, int H) = 0;
  // out[T,H] = x / rms(x) * w            (w: weight [H])
  virtual void rms_norm(void* out, const void* x, const void* w, int T, int H, float eps) = 0;
  // residual[T,H] += x; out = rms_norm(residual) * w   (fused residual add + norm)
  virtual void add_rms_norm(void* residual, const void* x, void* out, const void* w, int T, int H, float eps) = 0;
  // add_rms_norm whose `out` goes next into matmul(…, out, next_w, T, N, H) (or, for a few tokens,
  // the one-token op that stands for it) and nowhere else: a backend may prepare that matmul's
  // input in the norm's pass and leave `out` itself unwritten (the CUDA backend over FP8 weights;
  // another matmul of `out` then fails). This default just runs add_rms_norm.
  virtual void add_rms_norm_before_matmul(void* residual, const void* x, void* out, const void* w, int T, int H,
                                          float eps, const void* next_w) {
    (void)next_w;
    add_rms_norm(residual, x, out, w, T, H, eps);
  }
  // rms_norm whose `out` goes next into matmul(…, out, next_w, T, N, H) and nowhere else, as
  // add_rms_norm_before_matmul without the residual add (for a residual the matmul before already
  // added to: matmul_accumulate). This default just runs rms_norm.
  virtual void rms_norm_before_matmul(void* out, const void* x, const void* w, int T, int H, float eps,
                                      const void* next_w) {
    (void)next_w;
    rms_norm(out, x, w, T, H, eps);
  }
  // residual[T,H] += x
  virtual void add(void* residual, const void* x, size_t n) = 0;
  // out[M,N] = x[M,K] · w[N,K]^T          (w: weight, nn.Linear layout)
  virtual void matmul(void* out, const void* x, const void* w, int M, int N, int K) = 0;
  // Readies matmul(…, w, M, N, K) for every M up to max_M ahead of the first step, so that a
  // step's first matmul at a new M does not wait for it (the CUDA backend chooses its GEMM
  // algorithms and loads their kernels here). out [max_M, N] and x [max_M, K] are scratch: out
  // may be overwritten. This default does nothing.
  virtual void prepare_matmul(void* out, const void* x, const void* w, int max_M, int N, int K) {
    (void)out, (void)x, (void)w, (void)max_M, (void)N, (void)K;
  }
  // qkv[T, (Hq + 2*Hkv) * D] holds q, k, v per token. Rotates q and k in place (NeoX
  // rotate-half: dims i and i + D/2 pair) with angle positions[t] * inv_freq[i]
  // (inv_freq: device float [D/2]), then writes k and v into the cache row of
  // (seq = slots[t], pos = positions[t]) (slots[t]: the token's block-table row).
  virtual void rope_kv_write(void* qkv, const int32_t* positions, const int32_t* slots, const float* inv_freq,
                             KVCacheLayer cache, const AttentionShape& s, int T) = 0;
  // out[T, Hq*D]: causal attention of each token's q (inside qkv, after rope) over its own
  // sequence's positions 0..positions[t] (inclusive), read through the block-table row slots[t];
  // GQA: q head h reads kv head h / (Hq/Hkv).
  virtual void attention(void* out, const void* qkv, const int32_t* positions, const int32_t* slots,
                         KVCacheLayer cache, const AttentionShape& s, int T) = 0;
  // out[T,F] = silu(gate_up[:, :F]) * gate_up[:, F:]   (gate_up: [T, 2F])
  virtual void silu_mul(void* out, const void* gate_up, int T, int F) = 0;
  // out[T,N] = (silu(gate_up[:, :F]) * gate_up[:, F:]) · w[N,F]^T: the MLP's SwiGLU and its down
  // projection. mlp [T,F] is room for the product: this default writes it there (silu_mul), then
  // multiplies. A backend may reach the same result another way and leave mlp unwritten (the CUDA
  // backend, over FP8 weights, quantizes the product for its FP8 GEMM as it forms it).
  virtual void silu_mul_matmul(void* out, void* mlp, const void* gate_up, const void* w, int T, int N, int F) {
    silu_mul(mlp, gate_up, T, F);
    matmul(out, mlp, w, T, N, F);
  }
  // residual[M,N] += x[M,K] · w[N,K]^T with the product added to the residual before it is
  // rounded to the activation dtype (one rounding where matmul then add round twice), in the
  // matmul itself (a GEMM's C input), where the backend does that for this M and weight; returns
  // false without doing anything otherwise, and the caller runs matmul then adds. The residual
  // stream of a one-rank model: the norm after it then reads the residual only.
  virtual bool matmul_accumulate(void* residual, const void* x, const void* w, int M, int N, int K) {
    (void)residual, (void)x, (void)w, (void)M, (void)N, (void)K;
    return false;
  }
  // silu_mul_matmul whose product is added to residual[T,N] as matmul_accumulate adds it; false
  // without doing anything where the backend does not (the caller runs silu_mul_matmul then adds).
  virtual bool silu_mul_matmul_accumulate(void* residual, void* mlp, const void* gate_up, const void* w, int T, int N,
                                          int F) {
    (void)residual, (void)mlp, (void)gate_up, (void)w, (void)T, (void)N, (void)F;
    return false;
  }
  // qkv[T, (Hq + 2 Hkv) D] = x[T, K] · w^T followed by rope_kv_write(qkv, ...) in one pass, where
  // the backend has a fused kernel for this T and weight (decode); returns false without doing
  // anything otherwise, and the caller runs matmul then rope_kv_write. The projection is not
  // rounded to the activation dtype before the rotation.
  virtual bool qkv_rope_kv_write(void* qkv, const void* x, const void* w, int T, int K, const int32_t* positions,
                                 const int32_t* slots, const float* inv_freq, KVCacheLayer cache,
                                 const AttentionShape& s) {
    (void)qkv, (void)x, (void)w, (void)T, (void)K, (void)positions, (void)slots, (void)inv_freq, (void)cache, (void)s;
    return false;
  }
  // out[T,F] = silu(x · w[:F]^T) * (x · w[F:]^T) in one pass (x: [T, K], w: an MLP's gate_up
  // [2F, K]), where the backend has a fused kernel for this T and weight (decode); returns false
  // without doing anything otherwise, and the caller runs matmul then silu_mul. The gate and up
  // values are not rounded to the activation dtype in between.
  virtual bool gate_up_swiglu(void* out, const void* x, const void* w, int T, int F, int K) {
    (void)out, (void)x, (void)w, (void)T, (void)F, (void)K;
    return false;
  }
  // out[i,H] = x[rows[i], :] for i < num_rows (rows: device int32), e.g. each sequence's last token.
  virtual void gather_rows(void* out, const void* x, const int32_t* rows, int num_rows, int H) = 0;
  // ids[r] = the token choices[r] picks from logits[r, 0:V] (activations; ids and choices are
  // device arrays [R]). See ops/token_choice.h for the definition.
  virtual void select_tokens(int32_t* ids, const void* logits, int R, int V, const TokenChoice* choices) = 0;
  // out[r] (device [R]) = the greedy argmax of logits row r (row r starts row_stride elements after
  // row r - 1; its first V count) and that logit as float32: choose_token's greedy (lowest index on
  // ties, NaN never wins; index 0 with a NaN value when every logit is NaN). A tensor-parallel
  // rank's share of a greedy choice (SliceArgmax), found in one pass so one copy brings it back.
  virtual void slice_argmax_rows(SliceArgmax* out, const void* logits, int R, int V, int64_t row_stride) = 0;
  // The greedy argmax of logits = x · lm_head^T without those logits (decode at a few tokens reads
  // lm_head, 1.05 GB for Llama 3 8B, once a token; here an int8 copy of it, half the bytes, screens
  // the rows, and only the few rows that could be the argmax are multiplied in full).
  // lm_head_screen_bytes: the device bytes of lm_head's screen (lm_head: [V, H] uploaded weight),
  // 0 where the backend has none (the caller then computes the logits). make_lm_head_screen fills
  // it (once, at load). screened_argmax: for x [R, H] (R <= 8), out[r] is exactly what
  // slice_argmax_rows gives over the logits that matmul(x, lm_head) writes (same bits), and, where
  // ids is not null, ids[r] = out[r].index; scratch holds [R, V] activations.
  virtual size_t lm_head_screen_bytes(const void* lm_head, int V, int H) {
    (void)lm_head, (void)V, (void)H;
    return 0;
  }
  virtual void make_lm_head_screen(void* screen, const void* lm_head, int V, int H) {
    (void)screen, (void)lm_head, (void)V, (void)H;
    fail(name(), " has no lm_head screen");
  }
  virtual void screened_argmax(SliceArgmax* out, int32_t* ids, const void* x, const void* lm_head, const void* screen,
                               void* scratch, int R, int V, int H) {
    (void)out, (void)ids, (void)x, (void)lm_head, (void)screen, (void)scratch, (void)R, (void)V, (void)H;
    fail(name(), " has no lm_head screen");
  }
  // A fed decode step's inputs from the last step's, in place (device int32 arrays; T <= 1024):
  // ids[t] = chosen[t], positions[t] = positions[logit_rows[t]] + 1, every read before any write.
  virtual void advance_fed_inputs(int32_t* ids, int32_t* positions, const int32_t* logit_rows, const int32_t* chosen,
                                  int T) = 0;
  // A fed step's ids, in place (device int32 [T]): ids[t] < 0 names the last choice's row
  // -ids[t] - 1, which takes its place; other ids stay (a prompt token of the same step).
  virtual void resolve_fed_ids(int32_t* ids, const int32_t* chosen, int T) = 0;
  // A greedy choice over a vocabulary split across tp ranks, made on every rank's device, as an
  // all-gather over the all-reduce. gathered: device float32 [R, tp, 2]. spread_slice_argmax
  // writes row r's pair of `mine` (this rank's slice_argmax_rows) as (value, float(index)) into
  // slot `rank` and zeros into the other slots, so Communicator::all_reduce_sum holds every rank's
  // pair (adding zeros changes no value; indices below 2^24 are exact); mine null: the slice has
  // no candidate (NaN value). join_slice_argmax: ids[r] = combine_slice_argmax of row r's pairs.
  virtual void spread_slice_argmax(float* gathered, const SliceArgmax* mine, int R, int rank, int tp) = 0;
  virtual void join_slice_argmax(int32_t* ids, const float* gathered, int R, int tp, int64_t vocab_per_rank) = 0;

 protected:
  [[noreturn]] static void fail_unknown_copy(uint64_t ticket) {
    fail("no copy to the host has ticket ", ticket, ": each ticket of start_copy_to_host is finished once");
  }

 private:
  // start_copy_to_host's default: the bytes, copied at once, until their ticket is finished.
  std::vector<std::pair<uint64_t, std::vector<char>>> early_copies_;
  uint64_t next_copy_ticket_ = 1;
};

std::unique_ptr<Backend> make_cpu_backend();

// Owns one device allocation of a backend.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  DeviceBuffer(Backend* b, size_t bytes) : backend_(b), ptr_(bytes ? b->alloc(bytes) : nullptr), bytes_(bytes) {}
  ~DeviceBuffer() { reset(); }
  DeviceBuffer(DeviceBuffer&& o) noexcept : backend_(o.backend_), ptr_(o.ptr_), bytes_(o.bytes_) { o.ptr_ = nullptr; }
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      reset();
      backend_ = o.backend_;
      ptr_ = o.ptr_;
      bytes_ = o.bytes_;
      o.ptr_ = nullptr;
    }
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  // Takes ownership of memory the backend allocated (e.g. from upload_weight).
  static DeviceBuffer adopt(Backend* b, void* p, size_t bytes) {
    DeviceBuffer d;
    d.backend_ = b;
    d.ptr_ = p;
    d.bytes_ = bytes;
    return d;
  }
  void reset() {
    if (ptr_ && backend_) backend_->free(ptr_);
    ptr_ = nullptr;
  }
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t bytes() const { return bytes_; }

 private:
  Backend* backend_ = nullptr;
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace lamina
