// Paged KV layouts for the op tests: block tables whose blocks come from a shuffled pool (so a
// sequence's blocks are neither contiguous nor in order, and spare blocks no table uses sit in
// between), and the host-side lookup the reference computations use.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

#include "ops/backend.h"

namespace lamina::optest {

struct PagedKV {
  AttentionShape shape;
  std::vector<int32_t> tables;  // [num_seq_rows, max_blocks_per_seq]

  size_t pool_elems() const {  // elements of one k (or v) pool
    return size_t(shape.num_blocks) * shape.tokens_per_block * shape.num_kv_heads * shape.head_dim;
  }
  // Pool row of (seq, pos): the formula of docs/runtime.md, written out independently of the backends.
  size_t row(int seq, int pos) const {
    const int block = tables[size_t(seq) * shape.max_blocks_per_seq + pos / shape.tokens_per_block];
    return size_t(block) * shape.tokens_per_block + pos % shape.tokens_per_block;
  }
};

// num_seqs sequences of up to max_seq positions in blocks of tpb tokens. shuffled: every
// sequence's blocks are a random draw from a pool with `spare` extra blocks; else sequence s
// holds blocks s * max_blocks_per_seq ... in order (the contiguous layout).
inline PagedKV make_paged_kv(std::mt19937_64& rng, int Hq, int Hkv, int D, int max_seq, int num_seqs, int tpb,
                             bool shuffled, int spare = 5) {
  PagedKV p;
  p.shape.num_q_heads = Hq;
  p.shape.num_kv_heads = Hkv;
  p.shape.head_dim = D;
  p.shape.tokens_per_block = tpb;
  p.shape.max_blocks_per_seq = (max_seq + tpb - 1) / tpb;
  p.shape.num_seq_rows = num_seqs;
  const int used = num_seqs * p.shape.max_blocks_per_seq;
  p.shape.num_blocks = used + (shuffled ? spare : 0);
  std::vector<int32_t> ids(size_t(p.shape.num_blocks));
  std::iota(ids.begin(), ids.end(), 0);
  if (shuffled) std::shuffle(ids.begin(), ids.end(), rng);
  p.tables.assign(ids.begin(), ids.begin() + used);
  return p;
}

// Llama 3's rotary frequencies (base 500000) for head_dim D: the rope the cache tests rotate with.
inline std::vector<float> llama3_inv_freq(int D) {
  std::vector<float> f(size_t(D / 2));
  for (int i = 0; i < D / 2; ++i) f[size_t(i)] = float(std::pow(500000.0, -2.0 * i / D));
  return f;
}

}  // namespace lamina::optest
