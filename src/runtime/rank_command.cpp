#include "runtime/rank_command.h"

#include "common/error.h"

namespace lamina {

namespace {

// 'LRC1': changes whenever the layout below does.
constexpr int32_t kMagic = 0x4C524331;

void put_list(std::vector<int32_t>& out, const std::vector<int32_t>& v) {
  out.push_back(int32_t(v.size()));
  out.insert(out.end(), v.begin(), v.end());
}

class Reader {
 public:
  Reader(const int32_t* p, size_t n) : p_(p), n_(n) {}
  int32_t next() {
    if (i_ >= n_) fail("a tensor-parallel step command is truncated (", n_, " int32 values)");
    return p_[i_++];
  }
  std::vector<int32_t> list() {
    const int32_t len = next();
    if (len < 0 || size_t(len) > n_ - i_)
      fail("a tensor-parallel step command is malformed: a list of ", len, " values with ", n_ - i_, " left");
    std::vector<int32_t> v(p_ + i_, p_ + i_ + len);
    i_ += size_t(len);
    return v;
  }
  bool done() const { return i_ == n_; }

 private:
  const int32_t* p_;
  size_t n_, i_ = 0;
};

}  // namespace

// Layout: magic, call, rows, row_list, ids, positions, seq_rows, logit_rows, S, S block tables
// (each list is its length, then its values).
std::vector<int32_t> pack_rank_command(const RankCommand& c) {
  const StepBatch& b = c.batch;
  std::vector<int32_t> out{kMagic, int32_t(c.call), c.rows};
  put_list(out, c.row_list);
  put_list(out, b.ids);
  put_list(out, b.positions);
  put_list(out, b.seq_rows);
  put_list(out, b.logit_rows);
  out.push_back(int32_t(b.block_tables.size()));
  for (const auto& t : b.block_tables) put_list(out, t);
  return out;
}

RankCommand unpack_rank_command(const int32_t* data, size_t n) {
  Reader r(data, n);
  if (r.next() != kMagic)
    fail("a tensor-parallel step command has the wrong magic: every process of the job must run the same lamina");
  RankCommand c;
  const int32_t call = r.next();
  if (call < int32_t(RankCall::Shutdown) || call > int32_t(RankCall::SliceArgmax))
    fail("a tensor-parallel step command names call ", call, ", which this lamina does not know");
  c.call = RankCall(call);
  c.rows = r.next();
  c.row_list = r.list();
  c.batch.ids = r.list();
  c.batch.positions = r.list();
  c.batch.seq_rows = r.list();
  c.batch.logit_rows = r.list();
  const int32_t S = r.next();
  if (S < 0 || size_t(S) > n) fail("a tensor-parallel step command is malformed: ", S, " block tables");
  for (int32_t s = 0; s < S; ++s) c.batch.block_tables.push_back(r.list());
  if (!r.done()) fail("a tensor-parallel step command has trailing data");
  return c;
}

}  // namespace lamina
