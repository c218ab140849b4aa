// The qkv GEMV's rope + KV-write epilogue, shared by the float GEMV (gemv.cu) and the quantized
// one (gemv_quant.cu): a block owns rows j, j + 1, j + D/2, j + D/2 + 1 of one head of the qkv
// projection [(Hq + 2 Hkv) D, K] (R = 4, two rotate-half pairs); once its sums are reduced, thread
// (m, r) rotates q and k rows by positions[m] * inv_freq (angles in double precision, as
// rope_kv_write.cu), writes its output and, for k and v rows, the token's KV-cache element.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "attention_common.cuh"
#include "cuda_types.cuh"

namespace lamina::cuda {

// The epilogue's inputs: per token m < M its position and block-table row, the
// rotary frequencies [D/2] and the layer's KV pools (elements of the GEMV's type, or e4m3 when
// p.kv_fp8).
struct RopeKvArgs {
  const int32_t* positions = nullptr;
  const int32_t* slots = nullptr;
  const float* inv_freq = nullptr;
  void* k_cache = nullptr;
  void* v_cache = nullptr;
  const int32_t* block_tables = nullptr;
  AttnParams p;
};

// The qkv row that row r (0..3) of block b reads and writes: head b / (D/4), pair
// dims j = 2 (b % (D/4)), rows j, j + 1, j + D/2, j + D/2 + 1 of the head.
__device__ __forceinline__ int rope_row(int b, int r, int D) {
  const int pairs_blocks = D / 4, head = b / pairs_blocks, j = 2 * (b % pairs_blocks);
  return head * D + j + (r & 1) + (r >= 2 ? D / 2 : 0);
}

// The epilogue of thread (m, r) holding row r's sum s; `partner` is the sum of row r ^ 2 (the
// other half of its rotate-half pair).
template <typename T>
__device__ __forceinline__ void rope_kv_store(T* out, int N, int m, int r, float s, float partner,
                                              const RopeKvArgs& a) {
  const int D = a.p.head_dim, half = D / 2, Hq = a.p.Hq, Hkv = a.p.Hkv;
  const int row = rope_row(blockIdx.x, r, D), head = row / D, dim = row % D;
  const int pos = a.positions[m];
  float v = s;
  if (head < Hq + Hkv) {  // q or k: rotate (x_i, x_{i+D/2}) by pos * inv_freq[i]
    double sn, cs;
    sincos(static_cast<double>(pos) * static_cast<double>(a.inv_freq[dim % half]), &sn, &cs);
    const float c = static_cast<float>(cs), sf = static_cast<float>(sn);
    v = r < 2 ? s * c - partner * sf : s * c + partner * sf;
  }
  out[static_cast<size_t>(m) * N + row] = from_float<T>(v);
  if (head >= Hq) {  // k or v: the cache row of (slot, position); none when out of range
    const long long cache_row = kv_cache_row(a.block_tables, a.slots[m], pos, a.p);
    if (cache_row >= 0) {
      const bool is_k = head < Hq + Hkv;
      const int kv_head = head - Hq - (is_k ? 0 : Hkv);
      const size_t at = (static_cast<size_t>(cache_row) * Hkv + kv_head) * D + dim;
      if (a.p.kv_fp8) {  // an FP8 cache: e4m3(v / scale)
        const float x[1] = {v};
        store_kv<KvFp8, 1>(static_cast<KvFp8*>(is_k ? a.k_cache : a.v_cache) + at, x,
                           is_k ? a.p.k_scale : a.p.v_scale);
      } else {
        static_cast<T*>(is_k ? a.k_cache : a.v_cache)[at] = from_float<T>(v);
      }
    }
  }
}

}  // namespace lamina::cuda
