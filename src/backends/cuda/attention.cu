// Attention dispatch. The op gets only device arrays (positions, sequence rows, block tables), so the plan is made from
// shapes alone, with no read-back (the step stays graph-capturable):
//   T <= kAttentionDecodeMaxTokens: the split-K decode kernel takes every token.
//   larger T: the tiled prefill kernel takes the tiles of 64 consecutive tokens of one sequence, and
//   the decode kernel (told to skip those tiles) takes the rest; both run, each skips the other's.
//   Where the caller described the step's prompt tiles (AttentionShape), the prefill kernel's grid
//   ends after the last that may be uniform (a step with none runs no prefill kernel, and its
//   decode blocks check no tiles), and the decode kernel's grid starts after the leading ones.
// T <= kAttentionLatencyMaxTokens: the latency kernel (attention_decode_latency.cu: split lengths
// fixed for max_seq, a separate reduce); more tokens: over an FP8 cache with at least 2 tokens an
// SM, the bulk-copy kernel (attention_decode_bulk.cu, no splits); else the tensor-core kernel
// (attention_decode_mma.cu) when the step has at least 2 blocks an SM and the kernel applies
// (16-bit activations, head_dim 64/128, GQA), else the pipelined kernel (attention_decode.cu);
// those two take the same split plan and workspace.
// Split-K of the pipelined kernel: Z split slots per token, enough to give ~4 blocks per SM, no more than the cache's full
// length holds splits of kDecodeMinSplitLen rows, capped by the workspace (after its arrival
// counters, partials are [T, Hq, Z, head_dim + 2] fp32). The decode kernel picks each token's split
// length from its own length, so only blocks with rows run; the last block of a token merges.
#include <cmath>
#include <algorithm>
#include <string>
#include <cstdlib>
#include <mutex>
#include <set>
#include <utility>

#include "ab_switch.h"
#include "attention_common.cuh"
#include "cuda_check.h"
#include "cuda_types.cuh"
#include "kernels.h"

namespace lamina::cuda {

void allow_dynamic_smem(const void* kernel, size_t smem_bytes, bool max_carveout) {
  static std::mutex mu;
  static std::set<std::pair<const void*, int>> opted_in;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  std::lock_guard<std::mutex> lock(mu);
  if (opted_in.count({kernel, device})) return;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_bytes)));
  if (max_carveout)
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout,
                                    static_cast<int>(cudaSharedmemCarveoutMaxShared)));
  opted_in.insert({kernel, device});
}

namespace {
// LAMINA_ATTN_DECODE=latency / pipelined / mma / bulk forces one decode kernel for every T where
// it applies (benchmarks, A/B, tests; bulk falls back to mma, mma to pipelined where it does not).
enum class DecodeKernel { Auto, Latency, Pipelined, Mma, Bulk };
DecodeKernel forced_decode_kernel() {
  static const DecodeKernel k = [] {
    const char* e = std::getenv("LAMINA_ATTN_DECODE");
    if (e == nullptr || *e == 0 || std::string(e) == "auto") return DecodeKernel::Auto;
    if (std::string(e) == "latency") return DecodeKernel::Latency;
    if (std::string(e) == "pipelined") return DecodeKernel::Pipelined;
    if (std::string(e) == "mma") return DecodeKernel::Mma;
    if (std::string(e) == "bulk") return DecodeKernel::Bulk;
    fail("LAMINA_ATTN_DECODE must be auto, latency, pipelined, mma or bulk, not '", e, "'");
  }();
  return k;
}
// LAMINA_ATTN_READ_BEFORE_WAIT=0 turns AttentionShape::inputs_ready_before_step off (A/B).
bool reads_before_wait_allowed() {
  static const bool allowed = ab_switch_on("LAMINA_ATTN_READ_BEFORE_WAIT");
  return allowed;
}
// LAMINA_ATTN_CONCURRENT=0: a mixed step's prefill and decode kernels run one after the other (A/B).
bool concurrent_kernels_allowed() {
  static const bool on = ab_switch_on("LAMINA_ATTN_CONCURRENT");
  return on;
}
// LAMINA_ATTN_STEP_LAYOUT=0 ignores AttentionShape's prompt tiles: the kernels find them (A/B).
bool step_layout_hints_enabled() {
  static const bool on = ab_switch_on("LAMINA_ATTN_STEP_LAYOUT");
  return on;
}
}  // namespace

void launch_attention(DType dt, void* out, const void* qkv, const int32_t* positions, const int32_t* slots,
                      KVCacheLayer cache, const AttentionShape& s, int T, const AttentionLaunch& how,
                      cudaStream_t stream) {
  if (T <= 0) return;
  LAMINA_CHECK(s.num_kv_heads > 0 && s.num_q_heads % s.num_kv_heads == 0, "q heads ", s.num_q_heads,
               " are not a multiple of kv heads ", s.num_kv_heads);
  LAMINA_CHECK(attention_decode_supports(s.head_dim), "head_dim ", s.head_dim,
               " is not supported by the CUDA attention kernels (16, 32, 64, 128 or 256)");
  LAMINA_CHECK(is_aligned16(out) && is_aligned16(qkv) && is_aligned16(cache.k) && is_aligned16(cache.v),
               "attention buffers must be 16-byte aligned");
  LAMINA_CHECK(cache.block_tables != nullptr && s.tokens_per_block > 0 && s.max_blocks_per_seq > 0,
               "attention needs the KV block tables and their shape");
  AttnParams p = make_attn_params(s, T, cache);
  p.scale_log2 = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(s.head_dim)));
  // A step the caller described (AttentionShape::prompt_tiles_end) runs the prefill kernel only
  // over the tiles that may be uniform (none: not at all, and the decode kernel checks no tiles),
  // and the decode kernel from the first token past the leading prompt tiles.
  const int tiles = (T + kPrefillTileTokens - 1) / kPrefillTileTokens;
  const bool described = s.prompt_tiles_end >= 0 && step_layout_hints_enabled();
  p.prefill_takes_uniform_tiles = T > kAttentionDecodeMaxTokens && attention_prefill_supports(s.head_dim) &&
                                  !(described && s.prompt_tiles_end == 0);
  if (p.prefill_takes_uniform_tiles) {
    p.prefill_tiles = described ? std::min(tiles, s.prompt_tiles_end) : tiles;
    p.decode_t0 = described ? std::min(T, s.leading_prompt_tiles * kPrefillTileTokens) : 0;
  }
  p.read_before_wait = p.read_before_wait && !p.prefill_takes_uniform_tiles && reads_before_wait_allowed();
  const int decode_T = T - p.decode_t0;  // tokens the decode kernel looks at

  const size_t per_split = static_cast<size_t>(T) * p.Hq * (s.head_dim + 2) * sizeof(float);
  const bool have_workspace = how.workspace != nullptr && how.workspace_bytes > kAttentionCounterBytes &&
                              static_cast<size_t>(T) * p.Hq <= kAttentionCounterBytes / sizeof(int);
  const size_t fit = have_workspace ? (how.workspace_bytes - kAttentionCounterBytes) / per_split : 0;
  auto* counters = static_cast<int*>(how.workspace);
  auto* partials = have_workspace ? reinterpret_cast<float*>(static_cast<char*>(how.workspace) + kAttentionCounterBytes)
                                  : nullptr;
  const DecodeKernel forced = forced_decode_kernel();
  if (decode_T == 0) {  // every token in a prompt tile
    launch_attention_prefill(dt, out, qkv, positions, slots, cache, p, stream);
    return;
  }
  if (forced == DecodeKernel::Latency || (forced == DecodeKernel::Auto && T <= kAttentionLatencyMaxTokens)) {
    p.decode_t0 = 0;  // the latency kernel and its reduce take every token (skipping uniform tiles)
    // Latency kernel: Z split slots, enough for ~4 blocks per SM, no more than the cache's full
    // length holds splits of its shortest length; each token spreads its own rows over them.
    int splits = static_cast<int>(ceil_div_ll(4LL * how.num_sms, static_cast<long long>(T) * p.Hkv));
    splits = static_cast<int>(std::min<long long>(splits, ceil_div_ll(p.max_seq, kLatencyShortSplitLen)));
    splits = std::min(splits, kMaxSplits);
    if (static_cast<size_t>(splits) > fit) splits = static_cast<int>(fit);
    if (splits < 1) splits = 1;
    launch_attention_decode_latency(dt, out, qkv, positions, slots, cache, p, splits, partials, s.next, stream);
    if (p.prefill_takes_uniform_tiles) launch_attention_prefill(dt, out, qkv, positions, slots, cache, p, stream);
    return;
  }

  // Split-K plan for the decode kernel: Z split slots per token, sized for the cache's full
  // length; the kernel spreads each token's actual rows over them (split_len from len).
  const long long blocks_per_split = static_cast<long long>(decode_T) * p.Hkv;
  int splits = static_cast<int>(ceil_div_ll(4LL * how.num_sms, blocks_per_split));
  const long long max_useful = ceil_div_ll(p.max_seq, kDecodeMinSplitLen);
  if (splits > max_useful) splits = static_cast<int>(max_useful);
  if (splits > kMaxSplits) splits = kMaxSplits;
  if (static_cast<size_t>(splits) > fit) splits = static_cast<int>(fit);
  if (splits < 1) splits = 1;

  // The tensor-core kernel wins once the step fills the GPU (bench_kernels, H200, Llama-3-8B heads:
  // 1024 tokens x 256 rows 0.358 against 0.377 ms, with an FP8 cache 0.260 against 0.351); with
  // few tokens each block's short run is latency-bound and the pipelined kernel is ahead (8 tokens
  // x 512 rows: 0.022 against 0.017 ms).
  const bool step_fills_gpu = blocks_per_split * ((p.G + 7) / 8) >= 2LL * how.num_sms;
  const bool use_mma = forced == DecodeKernel::Mma || forced == DecodeKernel::Bulk ||
                       (forced == DecodeKernel::Auto && step_fills_gpu);
  // Over an FP8 cache, once every SM gets 2 tokens (the bulk kernel's blocks a token, 2 an SM),
  // the kernel whose rows are staged by bulk copies; it takes no splits.
  const bool use_bulk = (forced == DecodeKernel::Bulk ||
                         (forced == DecodeKernel::Auto && decode_T >= 2LL * how.num_sms)) &&
                        attention_decode_bulk_supports(dt, p, how.cc_major);
  // A step with prompt tiles and decode tokens: the memory-bound decode kernel and the
  // tensor-core prefill kernel write disjoint tokens' outputs and read only what came before, so
  // they may run side by side (AttentionLaunch::side_stream; LAMINA_ATTN_CONCURRENT=0: in turn).
  const bool side_by_side = p.prefill_takes_uniform_tiles && how.side_stream != nullptr && concurrent_kernels_allowed();
  if (side_by_side) {
    CUDA_CHECK(cudaEventRecord(how.fork, stream));
    CUDA_CHECK(cudaStreamWaitEvent(how.side_stream, how.fork, 0));
    launch_attention_prefill(dt, out, qkv, positions, slots, cache, p, how.side_stream);
    CUDA_CHECK(cudaEventRecord(how.join, how.side_stream));
  }
  if (use_bulk) {
    launch_attention_decode_bulk(dt, out, qkv, positions, slots, cache, p, how.num_sms, stream);
  } else if (use_mma && attention_decode_mma_supports(dt, p)) {
    launch_attention_decode_mma(dt, out, qkv, positions, slots, cache, p, splits, partials, counters, stream);
  } else {
    launch_attention_decode(dt, out, qkv, positions, slots, cache, p, splits, partials, counters, stream);
  }
  if (side_by_side) {
    CUDA_CHECK(cudaStreamWaitEvent(stream, how.join, 0));
  } else if (p.prefill_takes_uniform_tiles) {
    launch_attention_prefill(dt, out, qkv, positions, slots, cache, p, stream);
  }
}

}  // namespace lamina::cuda
