#include "runtime/engine.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>

#include "common/error.h"
#include "common/progress.h"
#include "io/hf_config.h"
#include "common/quant.h"
#include "model/weight_names.h"
#include "runtime/follower_ranks.h"
#include "runtime/host_communicator.h"
#include "runtime/mpi_communicator.h"
#include "runtime/mpi_session.h"
#include "runtime/rank_workers.h"
#if LAMINA_HAVE_CUDA
#include "backends/cuda/cuda_backend.h"
#endif
#if LAMINA_HAVE_NCCL
#include "backends/cuda/nccl_communicator.h"
#endif

namespace lamina {

namespace fs = std::filesystem;

Device parse_device(const std::string& s) {
  if (s == "cuda" || s == "gpu") return Device::CUDA;
  if (s == "cpu") return Device::CPU;
  if (s == "auto" || s.empty()) return Device::Auto;
  fail("unknown --device '", s, "': use cuda or cpu");
}

bool cuda_available() {
#if LAMINA_HAVE_CUDA
  return cuda_device_count() > 0;
#else
  return false;
#endif
}

namespace {

// An engine tensor in a quantized format (docs/formats.md), with its "<name>.scale" tensor:
//   I8 [N, K] + scale [N]                                 int8 per-channel (W8A16)
//   F8_E4M3 [N, K] + scale [1]                            fp8 per-tensor (FP8)
//   U8 [N, K/2], layout "int4_packed" + scale [N, K/G]    int4 group-wise (W4A16_AWQ)
// Anything else (float tensors) → nullopt.
std::optional<QuantizedWeight> quantized_view(const EngineFile& file, const EngineTensor& t) {
  const bool int4 = t.layout == kInt4PackedLayout;
  if (t.dtype != DType::I8 && t.dtype != DType::F8_E4M3 && !int4) return std::nullopt;
  const std::string sname = names::engine_scale_name(t.name);
  if (t.shape.size() != 2 || !file.has(sname))
    fail("engine tensor '", t.name, "' is quantized (", dtype_safetensors_name(t.dtype), ", layout ", t.layout,
         ") but is not [rows, cols] with a '", sname, "' tensor: rebuild the engine with lamina build");
  const EngineTensor& s = file.get(sname);
  QuantizedWeight q;
  q.data = t.data;
  q.scales = reinterpret_cast<const float*>(s.data);
  q.rows = t.shape[0];
  q.cols = t.shape[1];
  if (int4) {
    q.format = WeightFormat::Int4Group;
    q.cols = 2 * t.shape[1];
    if (t.dtype != DType::U8 || s.shape.size() != 2 || s.shape[0] != q.rows || s.shape[1] <= 0 || q.cols % s.shape[1])
      fail("engine tensor '", t.name, "' (int4) has a bad shape or scale shape: rebuild the engine");
    q.group_size = int(q.cols / s.shape[1]);
  } else {
    q.format = t.dtype == DType::I8 ? WeightFormat::Int8PerChannel : WeightFormat::Fp8PerTensor;
  }
  if (s.dtype != DType::F32 || size_t(s.bytes) != q.num_scales() * sizeof(float))
    fail("engine tensor '", sname, "' has ", s.bytes, " bytes of ", dtype_safetensors_name(s.dtype), "; expected ",
         q.num_scales(), " float32 scales for ", weight_format_name(q.format));
  q.validate();
  return q;
}

// Under mpirun, process r runs rank r: the job needs one process per rank, and every process the
// same device kind (the all-reduces would not meet otherwise).
void check_mpi_job(MpiSession& mpi, int tp, Device device) {
  if (mpi.world_size() != tp)
    fail("launched by mpirun with ", mpi.world_size(), " processes but the engine has tp_size ", tp,
         ": start one process per rank (mpirun -n ", tp, " ...)");
  int32_t leader = int32_t(device);
  mpi.broadcast(&leader, sizeof(leader));
  auto name = [](int32_t d) { return d == int32_t(Device::CUDA) ? "CUDA GPUs" : "the CPU"; };
  if (leader != int32_t(device))
    fail("rank ", mpi.rank(), " would run on ", name(int32_t(device)), " but rank 0 runs on ", name(leader),
         ": give every process the same --device, and GPUs to each when it is cuda");
}

#if !LAMINA_HAVE_NCCL
[[noreturn]] void fail_without_nccl(int tp) {
  fail("engine has tp_size ", tp, ": running it on GPUs needs NCCL, and this lamina was built without it ",
       "(install NCCL, e.g. libnccl-dev, and rebuild; CMake reports 'NCCL: ...' when it finds it), ",
       "or run it with --device cpu");
}
#endif

}  // namespace

struct Engine::Rank {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Communicator> comm;
  std::unique_ptr<EngineFile> file;
  std::vector<DeviceBuffer> weights;
  std::unique_ptr<LlamaForward> forward;
};

Engine::~Engine() {
  followers_.reset();  // the followers leave their loop first (a shutdown command), then exit
  // Backends first: their CUDA graphs captured the NCCL all-reduces of the group, which goes last.
  ranks_.clear();
  comm_group_.reset();
}

std::string Engine::device_name() const { return ranks_.empty() ? "none" : ranks_[0]->backend->name(); }

std::unique_ptr<Engine> Engine::load(const std::string& engine_dir, const EngineOptions& opts) {
  const fs::path dir(engine_dir);
  if (!fs::is_directory(dir)) fail("engine directory '", engine_dir, "' does not exist: build one with lamina build");
  const fs::path cfg_path = dir / "config.json";
  if (!fs::exists(cfg_path)) fail("'", cfg_path.string(), "' is missing: --engine_dir must be the output of lamina build");
  const Json j = read_json_file(cfg_path.string());
  const int fmt = json_get_or<int>(j, "format_version", -1);
  if (fmt != int(kEngineFormatVersion))
    fail("engine '", engine_dir, "' has format version ", fmt, " but this lamina reads version ", kEngineFormatVersion,
         ": rebuild it from its checkpoint with `lamina build`");
  std::unique_ptr<Engine> e(new Engine());
  e->dir_ = engine_dir;
  e->cfg_ = model_config_from_json(json_get<Json>(j, "pretrained_config", cfg_path.string()), cfg_path.string());
  const Json bc = json_get<Json>(j, "build_config", cfg_path.string());
  e->lim_.max_batch_size = json_get<int>(bc, "max_batch_size", cfg_path.string());
  e->lim_.max_input_len = json_get<int>(bc, "max_input_len", cfg_path.string());
  e->lim_.max_seq_len = json_get<int>(bc, "max_seq_len", cfg_path.string());
  e->lim_.max_num_tokens = json_get<int>(bc, "max_num_tokens", cfg_path.string());
  e->num_slots_ = std::max(1, std::min(opts.num_slots, e->lim_.max_batch_size));
  if (opts.tokens_per_block < 1 || (opts.tokens_per_block & (opts.tokens_per_block - 1)) != 0)
    fail("--tokens_per_block must be a power of two (8, 16, 32, 64, ...; got ", opts.tokens_per_block, ")");
  if (opts.max_tokens_in_paged_kv_cache < 0)
    fail("--max_tokens_in_paged_kv_cache must not be negative (got ", opts.max_tokens_in_paged_kv_cache, ")");
  const ModelConfig& cfg = e->cfg_;
  const int tp = cfg.mapping.tp_size;

  Device device = opts.device;
  if (device == Device::Auto) device = cuda_available() ? Device::CUDA : Device::CPU;
  if (device == Device::CUDA && !cuda_available())
    fail("--device cuda was asked for but no CUDA GPU is available", 
#if LAMINA_HAVE_CUDA
         ""
#else
         " (this lamina was built without CUDA)"
#endif
         , ": use --device cpu");
  // The ranks this process runs, and rank r's GPU: every rank, r on GPU r; or, as one process of
  // an mpirun job, its own rank only, on the GPU of its index among the job's processes on this
  // host (docs/tensor-parallel.md).
  MpiSession* mpi = opts.mpi;
  std::vector<int> local_ranks;
  if (mpi) {
    check_mpi_job(*mpi, tp, device);
    local_ranks = {mpi->rank()};
  } else {
    for (int r = 0; r < tp; ++r) local_ranks.push_back(r);
  }
  [[maybe_unused]] auto gpu_of = [&](int r) { return mpi ? mpi->local_rank() : r; };
  // Ranks talk through NCCL on GPUs (bootstrapped over MPI under mpirun), through host memory on
  // the CPU (MPI_Allreduce under mpirun).
  std::shared_ptr<HostCommGroup> host_group;
#if LAMINA_HAVE_NCCL
  std::shared_ptr<NcclGroup> nccl_group;
#endif
  if (mpi && device == Device::CUDA) {
#if LAMINA_HAVE_NCCL
    const int gpus = cuda_device_count();
    if (gpus < mpi->local_size())
      fail("this host runs ", mpi->local_size(), " processes of the mpirun job but only ", gpus,
           " GPUs are visible: one process per GPU (check CUDA_VISIBLE_DEVICES and mpirun's -n / hostfile slots)");
    NcclId id{};
    if (mpi->rank() == 0) id = nccl_unique_id();
    mpi->broadcast(id.data(), id.size());
    nccl_group = NcclGroup::create_rank(id, tp, mpi->rank(), gpu_of(mpi->rank()));
    e->comm_group_ = nccl_group;
#else
    fail_without_nccl(tp);
#endif
  } else if (mpi) {
    // One MPI communicator per process, made with the rank below.
  } else if (device == Device::CUDA && tp > 1) {
#if LAMINA_HAVE_NCCL
    const int gpus = cuda_device_count();
    if (gpus < tp)
      fail("engine has tp_size ", tp, " but only ", gpus, " GPUs are visible: it runs one rank per GPU ",
           "(check CUDA_VISIBLE_DEVICES), or run it with --device cpu");
    std::vector<int> devices(static_cast<size_t>(tp));
    for (int r = 0; r < tp; ++r) devices[size_t(r)] = r;
    nccl_group = NcclGroup::create_local(devices);
    e->comm_group_ = nccl_group;
#else
    fail_without_nccl(tp);
#endif
  } else if (tp > 1) {
    host_group = std::make_shared<HostCommGroup>(tp);
    e->comm_group_ = host_group;
  }
  // The ranks of this process run at once, each on its own thread (rank 0 on the caller's).
  e->workers_ = std::make_unique<RankWorkers>(local_ranks.size());
  Progress progress("load", local_ranks.size());
  for (size_t local = 0; local < local_ranks.size(); ++local) {
    const int r = local_ranks[local];
    auto rank = std::make_unique<Rank>();
    const fs::path path = dir / ("rank" + std::to_string(r) + ".engine");
    if (!fs::exists(path)) fail("engine '", engine_dir, "' is incomplete: ", path.filename().string(), " is missing");
    rank->file = std::make_unique<EngineFile>(path.string());
    if (opts.verify_checksums) rank->file->verify();
#if LAMINA_HAVE_CUDA
    if (device == Device::CUDA) rank->backend = make_cuda_backend(gpu_of(r), dtype_from_user_name(cfg.dtype));
#endif
    if (!rank->backend) rank->backend = make_cpu_backend();
    if (tp == 1) rank->comm = std::make_unique<SoloCommunicator>();
    else if (host_group) rank->comm = host_group->make(r);
#if LAMINA_HAVE_NCCL
    else if (nccl_group) rank->comm = nccl_group->make(local, *rank->backend);
#endif
    else if (mpi) rank->comm = make_mpi_communicator(*mpi);
    LAMINA_CHECK(rank->comm, "no communicator for rank ", r);

    Backend* be = rank->backend.get();
    auto upload = [&](const std::string& name) -> const void* {
      const EngineTensor& t = rank->file->get(name);
      size_t n = 1;
      for (auto d : t.shape) n *= size_t(d);
      void* p = nullptr;
      size_t bytes = t.bytes;
      if (auto q = quantized_view(*rank->file, t)) {
        // Quantized linear weights stay quantized: the backend dispatches matmul on their format
        // (the CPU backend dequantizes them here, as the readable reference).
        p = be->upload_quantized_weight(*q);
      } else {
        p = be->upload_weight(t.data, t.dtype, n);
        bytes = n * dtype_size(t.dtype);
      }
      rank->weights.push_back(DeviceBuffer::adopt(be, p, bytes));
      return p;
    };
    RankWeights w;
    w.embedding = upload(names::kEngEmbedding);
    for (int i = 0; i < int(cfg.num_hidden_layers); ++i) {
      LayerWeights lw;
      lw.input_norm = upload(names::engine_layer(i, names::kEngInputNorm));
      lw.qkv = upload(names::engine_layer(i, names::kEngQkv));
      lw.attn_out = upload(names::engine_layer(i, names::kEngAttnOut));
      lw.post_norm = upload(names::engine_layer(i, names::kEngPostNorm));
      lw.gate_up = upload(names::engine_layer(i, names::kEngGateUp));
      lw.down = upload(names::engine_layer(i, names::kEngDown));
      w.layers.push_back(lw);
    }
    w.final_norm = upload(names::kEngFinalNorm);
    w.lm_head = upload(names::kEngLmHead);
    // The KV pool comes after the weights and activations (allocate_kv_pool below).
    ForwardLimits fl{e->lim_.max_num_tokens, e->lim_.max_seq_len, e->num_slots_, opts.tokens_per_block, 0,
                     opts.screen_lm_head};
    rank->forward = std::make_unique<LlamaForward>(cfg, be, rank->comm.get(), std::move(w), fl);
    e->ranks_.push_back(std::move(rank));
    progress.advance(1);
  }
  progress.finish();
  if (device == Device::CUDA && tp > 1) {
    // NCCL connects peers and allocates its buffers on a communicator's first collectives: run
    // them now (one token's and a full step's size), before the KV pool takes the memory left
    // and before any decode step is captured into a CUDA graph.
    const size_t big = size_t(e->lim_.max_num_tokens) * size_t(cfg.hidden_size);
    e->workers_->run([&](size_t r) {
      Rank& rk = *e->ranks_[r];
      const DType act = rk.backend->activation_dtype();
      DeviceBuffer buf(rk.backend.get(), big * dtype_size(act));
      const std::vector<char> zeros(big * dtype_size(act), 0);
      rk.backend->copy_to_device(buf.get(), zeros.data(), zeros.size());
      rk.comm->all_reduce_sum(buf.get(), size_t(cfg.hidden_size), act);
      rk.comm->all_reduce_sum(buf.get(), big, act);
      rk.backend->synchronize();
    });
  }

  // KV pool size (EngineOptions): the same block count on every rank.
  const LlamaForward& f0 = *e->ranks_[0]->forward;
  KVCacheLayout& kv = e->kv_;
  kv.tokens_per_block = opts.tokens_per_block;
  kv.max_blocks_per_seq = f0.max_blocks_per_seq();
  kv.block_bytes = f0.kv_block_bytes();
  const int64_t tpb = opts.tokens_per_block;
  const int64_t cap = opts.max_tokens_in_paged_kv_cache > 0 ? (opts.max_tokens_in_paged_kv_cache + tpb - 1) / tpb : 0;
  int64_t blocks = cap > 0 ? cap : int64_t(e->num_slots_) * kv.max_blocks_per_seq;
  if (device == Device::CUDA && opts.kv_cache_free_gpu_memory_fraction > 0) {
    LAMINA_CHECK(opts.kv_cache_free_gpu_memory_fraction <= 1, "kv_cache_free_gpu_memory_fraction must be in (0, 1]");
    size_t free_b = SIZE_MAX;
    for (auto& r : e->ranks_) free_b = std::min(free_b, r->backend->free_device_memory());
    const auto by_memory = int64_t(double(free_b) * opts.kv_cache_free_gpu_memory_fraction / double(kv.block_bytes));
    if (by_memory < 1)
      fail("no device memory is left for the KV cache (", free_b >> 20, " MiB free after weights and activations",
           "): build with smaller --max_batch_size/--max_num_tokens or use a larger GPU");
    blocks = cap > 0 ? std::min(cap, by_memory) : by_memory;
  }
  if (mpi) blocks = mpi->min_over_ranks(blocks);  // processes may have different free memory
  LAMINA_CHECK(blocks >= 1 && blocks <= INT32_MAX, "bad KV pool size: ", blocks, " blocks");
  kv.num_blocks = int(blocks);
  for (auto& r : e->ranks_) r->forward->allocate_kv_pool(kv.num_blocks);
  if (mpi && mpi->rank() == 0) e->followers_ = std::make_unique<FollowerRanks>(*mpi);
  if (mpi && mpi->rank() != 0) e->follower_mpi_ = mpi;
  return e;
}


void Engine::forward(const StepBatch& batch) {
  if (followers_) followers_->step(batch);  // they run theirs while this process runs rank 0
  const size_t tp = ranks_.size();
  if (tp == 1) return ranks_[0]->forward->step(batch);
  // Ranks run in lockstep on their own threads; their all-reduces meet in the communicator.
  workers_->run([&](size_t r) { ranks_[r]->forward->step(batch); });
}

namespace {
// [rows, V] from every rank's [rows, V_rank] vocab slice, dropping the padding of the last slice.
std::vector<float> join_vocab_slices(const std::vector<std::vector<float>>& parts, size_t rows, size_t V, size_t Vr) {
  std::vector<float> logits(rows * V);
  for (size_t r = 0; r < parts.size(); ++r)
    for (size_t i = 0; i < rows; ++i)
      for (size_t v = 0; v < Vr && r * Vr + v < V; ++v) logits[i * V + r * Vr + v] = parts[r][i * Vr + v];
  return logits;
}
}  // namespace

std::vector<float> Engine::gather_logits(size_t rows) const {
  const size_t tp = tp_size(), V = size_t(cfg_.vocab_size), Vr = size_t(cfg_.vocab_per_rank());
  if (tp == 1) return ranks_[0]->forward->logits_f32(int(rows));  // one slice, no padding: as is
  return join_vocab_slices(rank_logits(rows), rows, V, Vr);
}

// ---- Every rank's output: the in-process ranks', then (leader of an mpirun job) the followers'.
std::vector<std::vector<float>> Engine::rank_logits(size_t rows) const {
  if (followers_) return followers_->logits(int(rows), ranks_[0]->forward->logits_f32(int(rows)));
  std::vector<std::vector<float>> parts;
  for (auto& rk : ranks_) parts.push_back(rk->forward->logits_f32(int(rows)));
  return parts;
}

std::vector<std::vector<float>> Engine::rank_logit_rows(const std::vector<int32_t>& rows) const {
  if (followers_) return followers_->logit_rows(rows, ranks_[0]->forward->logit_rows_f32(rows));
  std::vector<std::vector<float>> parts;
  for (auto& rk : ranks_) parts.push_back(rk->forward->logit_rows_f32(rows));
  return parts;
}

std::vector<std::vector<SliceArgmax>> Engine::step_and_slice_argmax(const StepBatch& batch, int rows) {
  LAMINA_CHECK(followers_, "the host joins slice argmaxes for an mpirun job only (in-process ranks join on the GPUs)");
  forward(batch);  // rank 0 here, the followers theirs
  return followers_->slice_argmax(rows, ranks_[0]->forward->slice_argmax(rows));
}

template <class Fn>
auto Engine::lead(const StepBatch& batch, Fn&& fn) -> decltype(fn()) {
  LAMINA_CHECK(!follower_mpi_, "process ", follower_mpi_->rank(), " of an mpirun job follows: it calls run_follower()");
  if (!followers_) return fn();
  ranks_[0]->forward->check_step(batch);  // a bad batch fails here, before the followers hear of it
  try {
    return fn();
  } catch (const std::exception& e) {
    followers_->mpi().abort_after_error(e.what());
  }
}

void Engine::run_follower() {
  LAMINA_CHECK(follower_mpi_, "run_follower() is for the processes r > 0 of an mpirun job");
  follow_leader(*follower_mpi_, *ranks_[0]->forward);
}
// ----

std::vector<float> Engine::step(const StepBatch& batch) {
  return lead(batch, [&] {
    forward(batch);
    return gather_logits(batch.logit_rows.size());
  });
}

ChosenTokens Engine::step_and_choose(const StepBatch& batch, const std::vector<TokenChoice>& choices,
                                     const std::vector<int32_t>& host_rows) {
  const std::vector<int32_t>& logit_rows = batch.logit_rows;
  LAMINA_CHECK(choices.size() == logit_rows.size(), "one token choice per logit row is needed (",
               choices.size(), " for ", logit_rows.size(), " rows)");
  for (int32_t r : host_rows)
    LAMINA_CHECK(r >= 0 && size_t(r) < logit_rows.size(), "host row ", r, " is not a logit row");
  ChosenTokens out = lead(batch, [&] {
    if (tp_size() > 1 && greedy_rows(choices, host_rows)) {
      // An mpirun job's ranks join on the host; in-process ranks on their devices, where the
      // ids stay for a fed step (a host row's sampled id then differs from the device's).
      if (followers_) return join_greedy(step_and_slice_argmax(batch, int(choices.size())), choices, host_rows);
      ChosenTokens c;
      // The logits stay, as at tp 1 (host rows read them): no lm_head screen here.
      const uint64_t ticket = run_split_greedy(batch, false, /*keep_logits=*/true);
      c.ids = ranks_[0]->forward->finish_choose(ticket, int(choices.size()));
      add_host_rows(c, choices, host_rows);
      return c;
    }
    // At tp 1 the choices go to the device before the step's ops (LlamaForward::prepare_choices).
    if (tp_size() == 1) ranks_[0]->forward->prepare_choices(choices);
    forward(batch);
    return choose(choices, host_rows);
  });
  last_chosen_ = out.ids;
  choice_on_device_ = tp_size() == 1 || (!followers_ && greedy_rows(choices, {}));
  return out;
}

uint64_t Engine::run_split_greedy(const StepBatch& batch, bool feed_previous, bool keep_logits) {
  // Each rank thread queues its step and its part of the choice (one job, no second hand-off);
  // only rank 0 copies the ids back.
  std::vector<uint64_t> tickets(tp_size());
  workers_->run([&](size_t r) {
    tickets[r] = ranks_[r]->forward->step_and_start_split_greedy(batch, feed_previous, r == 0, keep_logits);
  });
  return tickets[0];
}

uint64_t Engine::enqueue_step_and_choose(const StepBatch& batch, const std::vector<TokenChoice>& choices,
                                         bool feed_previous) {
  LAMINA_CHECK(!choices.empty() && choices.size() == batch.logit_rows.size(), "one token choice per logit row is ",
               "needed (", choices.size(), " for ", batch.logit_rows.size(), " rows)");
  const int R = int(choices.size());
  StepBatch b = batch;
  bool fed = feed_previous;
  if (fed && !choice_on_device_) {
    // The last ids were chosen on the host (sampled rows at tp > 1, an mpirun job): send them in.
    if (b.fed_rows.empty()) {
      LAMINA_CHECK(b.ids.size() <= last_chosen_.size(), "a step of ", b.ids.size(), " tokens fed by the previous ",
                   "choice needs as many chosen ids (", last_chosen_.size(), " were chosen)");
      std::copy(last_chosen_.begin(), last_chosen_.begin() + long(b.ids.size()), b.ids.begin());
    } else {
      check_fed_rows(b, int(last_chosen_.size()));
      for (size_t t = 0; t < b.ids.size(); ++t)
        if (b.fed_rows[t] >= 0) b.ids[t] = last_chosen_[size_t(b.fed_rows[t])];
      b.fed_rows.clear();
    }
    fed = false;
  }
  PendingChoice p;
  p.rows = R;
  if (!followers_ && !follower_mpi_ && (tp_size() == 1 || greedy_rows(choices, {}))) {
    // Queue the step (fed from the devices' last choice) and its choice behind whatever runs
    // now; only the ids' copy back is waited for, in collect_chosen.
    if (tp_size() == 1) {
      p.copy_ticket = ranks_[0]->forward->step_and_start_choose(b, fed, choices);
    } else {
      p.copy_ticket = run_split_greedy(b, fed, false);
    }
    choice_on_device_ = true;
  } else if (fed) {
    // Sampled rows at tp > 1: the step is fed on the devices, its rows chosen on the host from
    // the gathered logits.
    workers_->run([&](size_t r) { ranks_[r]->forward->step_fed(b); });
    p.ids = choose(choices, {}).ids;
    last_chosen_ = p.ids;
    choice_on_device_ = false;
  } else {
    p.ids = step_and_choose(b, choices, {}).ids;
  }
  pending_.emplace_back(next_ticket_, std::move(p));
  return next_ticket_++;
}

std::vector<int32_t> Engine::collect_chosen(uint64_t ticket) {
  const auto it = std::find_if(pending_.begin(), pending_.end(), [&](const auto& e) { return e.first == ticket; });
  LAMINA_CHECK(it != pending_.end(), "no step was enqueued with ticket ", ticket, " (or it was collected already)");
  PendingChoice p = std::move(it->second);
  pending_.erase(it);
  if (p.copy_ticket == 0) return p.ids;
  return ranks_[0]->forward->finish_choose(p.copy_ticket, p.rows);
}

bool Engine::greedy_rows(const std::vector<TokenChoice>& choices, const std::vector<int32_t>& host_rows) {
  // Host rows come back whole anyway: their ids are chosen from those rows, whatever their choice.
  std::vector<char> on_host(choices.size(), 0);
  for (int32_t r : host_rows) on_host[size_t(r)] = 1;
  bool all_greedy = true;
  for (size_t i = 0; i < choices.size(); ++i) all_greedy &= on_host[i] || !(choices[i].temperature > 0.0f);
  return all_greedy;
}

// Vocabulary split over ranks, greedy rows: each rank found its slice's argmax where its logits
// are (parts[rank][row]); the host joins the (value, index) pairs, exactly as a whole-row argmax.
ChosenTokens Engine::join_greedy(const std::vector<std::vector<SliceArgmax>>& parts,
                                 const std::vector<TokenChoice>& choices, const std::vector<int32_t>& host_rows) {
  ChosenTokens out;
  const size_t tp = tp_size(), Vr = size_t(cfg_.vocab_per_rank());
  std::vector<SliceArgmax> row(tp);
  out.ids.resize(choices.size());
  for (size_t i = 0; i < choices.size(); ++i) {
    for (size_t r = 0; r < tp; ++r) row[r] = parts[r][i];
    out.ids[i] = combine_slice_argmax(row.data(), int(tp), int64_t(Vr));
  }
  add_host_rows(out, choices, host_rows);
  return out;
}

void Engine::add_host_rows(ChosenTokens& out, const std::vector<TokenChoice>& choices,
                           const std::vector<int32_t>& host_rows) const {
  if (host_rows.empty()) return;
  const size_t V = size_t(cfg_.vocab_size), Vr = size_t(cfg_.vocab_per_rank());
  out.host_logits = join_vocab_slices(rank_logit_rows(host_rows), host_rows.size(), V, Vr);
  for (size_t j = 0; j < host_rows.size(); ++j) {
    const size_t i = size_t(host_rows[j]);
    out.ids[i] = choose_token(out.host_logits.data() + j * V, int(V), choices[i]);
  }
}

// The tokens of the step forward() just ran, one per logit row (choices.size() of them): on the
// device at tp 1; over a split vocabulary (some row sampled; all-greedy steps are joined from the
// ranks' slice argmaxes instead) from whole rows gathered on the host.
ChosenTokens Engine::choose(const std::vector<TokenChoice>& choices, const std::vector<int32_t>& host_rows) {
  ChosenTokens out;
  const size_t V = size_t(cfg_.vocab_size);
  if (tp_size() == 1) {
    LlamaForward& f = *ranks_[0]->forward;
    out.ids = f.choose_tokens(choices);
    if (!host_rows.empty()) out.host_logits = f.logit_rows_f32(host_rows);
    return out;
  }
  // Sampled rows: gather whole rows on the host and choose there, by the same definition.
  const std::vector<float> logits = gather_logits(choices.size());
  out.ids.resize(choices.size());
  for (size_t i = 0; i < choices.size(); ++i) out.ids[i] = choose_token(logits.data() + i * V, int(V), choices[i]);
  for (int32_t r : host_rows)
    out.host_logits.insert(out.host_logits.end(), logits.begin() + long(size_t(r) * V),
                           logits.begin() + long(size_t(r + 1) * V));
  return out;
}

}  // namespace lamina
