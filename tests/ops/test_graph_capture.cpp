// The ops must neither allocate nor synchronize, so that a decode step can be captured into a CUDA
// graph. Capture a step-like sequence (norm, GEMV and GEMM matmuls, rope + KV write, decode and
// prefill attention, SwiGLU) on the backend's stream, replay it, and compare with direct launches.
#include <cuda_runtime_api.h>

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
       att2 = poisoned_act(g, size_t(Tp) * s.num_q_heads * s.head_dim), act = poisoned_act(g, size_t(T) * F);
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
  };
  auto outputs = [&] {
    std::vector<std::vector<float>> o;
    for (auto* b : {&mm1, &mm2, &att1, &att2, &act, &k}) o.push_back(read_act(g, *b, b->bytes() / dtype_size(dt())));
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

  const char* names[] = {"gemv", "gemm", "decode attention", "prefill attention", "silu_mul", "k cache"};
  for (size_t i = 0; i < direct.size(); ++i) expect_close(replay[i], direct[i], 1e-6, names[i]);
}

LAMINA_INSTANTIATE_DTYPES(GraphCapture);

}  // namespace
}  // namespace lamina::optest
