// The ops must neither allocate nor synchronize, so that a decode step can be captured into a CUDA
// graph. Capture a step-like sequence (norm, GEMV and GEMM matmuls, rope + KV write, decode and
// prefill attention, SwiGLU, the gate_up GEMV with its SwiGLU) on the backend's stream, replay it,
// and compare with direct launches.
#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "op_test_util.h"
#include "paged_kv_util.h"

namespace lamina::optest {
namespace {

class GraphCapture : public OpTest {};

TEST_P(GraphCapture, StepReplayMatchesDirectLaunches) {
  const int H = 512, F = 384, T = 2, Tp = 40;
  const PagedKV pk = make_paged_kv(rng_, 8, 2, 64, 128, 2, 32, /*shuffled=*/true);
  const AttentionShape& s = pk.shape;
  const size_t row = size_t(s.num_q_heads + 2 * s.num_kv_heads) * s.head_dim;
  const size_t cache_n = pk.pool_elems();
  Backend& g = *gpu_;
  auto w_norm = upload_weight(g, rnd(H, 0.5f, 1.5f));
  auto w_mat = upload_weight(g, rnd(size_t(F) * H));
  auto x = upload_act(g, rnd(size_t(Tp) * H));
  const auto qkv0 = rnd(size_t(Tp) * row, -2.0f, 2.0f);
  const auto k0 = rnd(cache_n), v0 = rnd(cache_n);
  auto gate_up = upload_act(g, rnd(size_t(T) * 2 * F, -3.0f, 3.0f));
  std::vector<float> inv_freq(s.head_dim / 2);
  for (size_t i = 0; i < inv_freq.size(); ++i) inv_freq[i] = 1.0f / float(1 + i);
  auto f = upload_f32(g, inv_freq);
  std::vector<int32_t> pos(Tp), slot(Tp, 1);
  for (int t = 0; t < Tp; ++t) pos[t] = 50 + t;  // decode uses tokens 0..1 (T=2), prefill all 40
  auto d_pos = upload_i32(g, pos), d_slot = upload_i32(g, slot), d_tables = upload_i32(g, pk.tables);

  auto qkv = poisoned_act(g, qkv0.size()), k = poisoned_act(g, cache_n), v = poisoned_act(g, cache_n);
  auto normed = poisoned_act(g, size_t(Tp) * H), mm1 = poisoned_act(g, size_t(T) * F),
       mm2 = poisoned_act(g, size_t(Tp) * F), att1 = poisoned_act(g, size_t(T) * s.num_q_heads * s.head_dim),
       att2 = poisoned_act(g, size_t(Tp) * s.num_q_heads * s.head_dim), act = poisoned_act(g, size_t(T) * F),
       swiglu = poisoned_act(g, size_t(T) * (F / 2));
  auto reset_inputs = [&] {
    const DType dt = g.activation_dtype();
    for (auto [buf, vals] : {std::pair{&qkv, &qkv0}, std::pair{&k, &k0}, std::pair{&v, &v0}}) {
      std::vector<char> raw(vals->size() * dtype_size(dt));
      convert_from_f32(vals->data(), raw.data(), dt, vals->size());
      g.copy_to_device(buf->get(), raw.data(), raw.size());
    }
  };
  const KVCacheLayer cache{k.get(), v.get(), d_tables.as<int32_t>()};
  auto step = [&] {
    g.rms_norm(normed.get(), x.get(), w_norm.get(), Tp, H, 1e-5f);
    g.matmul(mm1.get(), normed.get(), w_mat.get(), T, F, H);   // GEMV
    g.matmul(mm2.get(), normed.get(), w_mat.get(), Tp, F, H);  // cuBLASLt
    g.rope_kv_write(qkv.get(), d_pos.as<int32_t>(), d_slot.as<int32_t>(), f.as<float>(), cache, s, Tp);
    g.attention(att1.get(), qkv.get(), d_pos.as<int32_t>(), d_slot.as<int32_t>(), cache, s, T);
    g.attention(att2.get(), qkv.get(), d_pos.as<int32_t>(), d_slot.as<int32_t>(), cache, s, Tp);
    g.silu_mul(act.get(), gate_up.get(), T, F);
    ASSERT_TRUE(g.gate_up_swiglu(swiglu.get(), normed.get(), w_mat.get(), T, F / 2, H));  // w_mat as [gate; up]
  };
  auto outputs = [&] {
    std::vector<std::vector<float>> o;
    for (auto* b : {&mm1, &mm2, &att1, &att2, &act, &swiglu, &k}) o.push_back(read_act(g, *b, b->bytes() / dtype_size(dt())));
    return o;
  };

  reset_inputs();
  step();  // direct launches (also creates the GEMM plan and the shared-memory opt-ins)
  const auto direct = outputs();

  reset_inputs();
  cudaStream_t stream = cuda_stream_of(g);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  bool threw = false;
  try {
    step();
  } catch (const std::exception& e) {
    threw = true;
    ADD_FAILURE() << "an op failed under capture: " << e.what();
  }
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess) << "an op broke the capture (allocation or sync?)";
  ASSERT_FALSE(threw);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
  ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
  g.synchronize();
  const auto replay = outputs();
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);

  const char* names[] = {"gemv",     "gemm",           "decode attention", "prefill attention",
                         "silu_mul", "gate_up_swiglu", "k cache"};
  for (size_t i = 0; i < direct.size(); ++i) expect_close(replay[i], direct[i], 1e-6, names[i]);
}

// Decode attention captured once and replayed with new positions each time (what a decode step's
// graph does): the split plan follows each replay's lengths, and the arrival counters the kernel
// leaves at zero let every replay merge its splits. Each replay is checked against the CPU.
TEST_P(GraphCapture, DecodeAttentionReplaysWithNewLengths) {
  const int T = 6, max_seq = 2048;
  const PagedKV pk = make_paged_kv(rng_, 32, 8, 128, max_seq, T, 32, /*shuffled=*/true);
  const AttentionShape& s = pk.shape;
  const size_t out_n = size_t(T) * s.num_q_heads * s.head_dim;
  const auto qkv0 = rnd(size_t(T) * (s.num_q_heads + 2 * s.num_kv_heads) * s.head_dim, -3.0f, 3.0f);
  const auto k0 = rnd(pk.pool_elems()), v0 = rnd(pk.pool_elems());
  std::vector<int32_t> slot(T);
  for (int t = 0; t < T; ++t) slot[t] = t;
  Backend& g = *gpu_;
  auto qkv = upload_act(g, qkv0), k = upload_act(g, k0), v = upload_act(g, v0);
  auto d_tables = upload_i32(g, pk.tables), d_slot = upload_i32(g, slot);
  auto d_pos = upload_i32(g, std::vector<int32_t>(T, 0));
  auto out = poisoned_act(g, out_n);
  const KVCacheLayer cache{k.get(), v.get(), d_tables.as<int32_t>()};
  auto attend = [&] { g.attention(out.get(), qkv.get(), d_pos.as<int32_t>(), d_slot.as<int32_t>(), cache, s, T); };
  attend();  // direct launch first: makes the shared-memory opt-in outside the capture
  g.synchronize();

  cudaStream_t stream = cuda_stream_of(g);
  ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
  attend();
  cudaGraph_t graph = nullptr;
  ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
  cudaGraphExec_t exec = nullptr;
  ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);

  auto c_qkv = upload_act(*cpu_, qkv0), c_k = upload_act(*cpu_, k0), c_v = upload_act(*cpu_, v0);
  auto c_tables = upload_i32(*cpu_, pk.tables), c_slot = upload_i32(*cpu_, slot);
  const KVCacheLayer c_cache{c_k.get(), c_v.get(), c_tables.as<int32_t>()};
  const std::vector<std::vector<int32_t>> lengths = {
      {1, 64, 65, 2048, 1000, 129}, {2048, 2047, 1, 1, 300, 64}, {5, 128, 2, 1536, 2048, 777}, {1, 1, 1, 1, 1, 1}};
  for (size_t r = 0; r < lengths.size(); ++r) {
    std::vector<int32_t> pos(T);
    for (int t = 0; t < T; ++t) pos[t] = lengths[r][t] - 1;
    g.copy_to_device(d_pos.get(), pos.data(), pos.size() * 4);
    const std::vector<unsigned char> nan_bytes(out.bytes(), 0xFF);  // a row the replay skips stays NaN
    g.copy_to_device(out.get(), nan_bytes.data(), nan_bytes.size());
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    g.synchronize();
    auto c_pos = upload_i32(*cpu_, pos);
    auto c_out = poisoned_act(*cpu_, out_n);
    cpu_->attention(c_out.get(), c_qkv.get(), c_pos.as<int32_t>(), c_slot.as<int32_t>(), c_cache, s, T);
    expect_close(read_act(g, out, out_n), read_act(*cpu_, c_out, out_n), tol(),
                 "decode attention replay " + std::to_string(r));
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
}

LAMINA_INSTANTIATE_DTYPES(GraphCapture);

}  // namespace
}  // namespace lamina::optest
