// `mpirun -n 2 lamina run` (one process per rank, docs/tensor-parallel.md) gives what the
// one-process engine gives, on the CPU (MPI all-reduce) and, with 2 GPUs, on GPUs (NCCL
// bootstrapped over MPI). Skips when mpirun or libmpi is missing, the GPU test without 2 GPUs.
#include <gtest/gtest.h>

#include <algorithm>

#include "io/npy.h"
#include "test_support.h"

namespace lamina {
namespace {

using test::CommandResult;
using test::run_lamina;
using test::run_shell;
using test::ScratchDir;

class MpiRun : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (run_shell("command -v mpirun").exit_code != 0) {
      skip_ = "mpirun is not installed (apt-get install openmpi-bin libopenmpi3)";
      return;
    }
    // Open MPI refuses root and more processes than cores unless told (CI runs as root on 2 cores).
    const bool open_mpi = run_shell("mpirun --version").output.find("Open MPI") != std::string::npos;
    launcher_ = "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 LAMINA_QUIET=1 timeout 300 mpirun" +
                std::string(open_mpi ? " --oversubscribe" : "");
    scratch_ = new ScratchDir("mpi_run");
    const auto model = test::source_dir() / "models/lamina-tiny-llama";
    for (int tp : {1, 2}) {
      const std::string ckpt = (*scratch_ / ("ckpt" + std::to_string(tp))).string();
      auto r = run_lamina("convert --model_dir " + model.string() + " --output_dir " + ckpt +
                          " --dtype float32 --tp_size " + std::to_string(tp));
      ASSERT_EQ(r.exit_code, 0) << r.output;
      r = run_lamina("build --checkpoint_dir " + ckpt + " --output_dir " + engine(tp) +
                     " --max_batch_size 2 --max_input_len 32 --max_seq_len 64");
      ASSERT_EQ(r.exit_code, 0) << r.output;
    }
  }
  static void TearDownTestSuite() { delete scratch_; }
  void SetUp() override {
    if (!skip_.empty()) GTEST_SKIP() << skip_;
  }

  static std::string engine(int tp) { return (*scratch_ / ("engine" + std::to_string(tp))).string(); }

  struct Run {
    std::vector<int64_t> ids;   // prompt + generated
    std::vector<float> logits;  // [generated, vocab]
  };
  // `lamina run ARGS` on engine(tp), in one process or as `mpirun -n procs`; its ids and logits.
  static Run run(int tp, int procs, const std::string& args, const std::string& tag) {
    const std::string ids = (*scratch_ / (tag + "_ids.npy")).string(), logits = (*scratch_ / (tag + "_logits.npy")).string();
    const std::string cmd = "run --engine_dir " + engine(tp) + " --max_output_len 12 --output_npy " + ids +
                            " --output_logits_npy " + logits + " " + args;
    const CommandResult r = procs == 1 ? run_lamina(cmd)
                                       : run_shell(launcher_ + " -n " + std::to_string(procs) + " " +
                                                   test::lamina_binary().string() + " " + cmd);
    if (r.output.find("libmpi was not found") != std::string::npos) {
      skip_ = "libmpi is not installed (apt-get install libopenmpi3)";
      return {};
    }
    EXPECT_NE(r.exit_code, 124) << tag << " hung: " << r.output;
    EXPECT_EQ(r.exit_code, 0) << tag << ": " << r.output;
    if (r.exit_code != 0) return {};
    return {read_npy(ids).as_i64(), read_npy(logits).as_f32()};
  }

  // `lamina run ARGS` on the tp 2 engine under `mpirun -n 2` and in one process (rank threads):
  // the same ids, and logits within `tol` (on the CPU both sum the ranks as a + b: the same
  // numbers). Returns the mpirun run; empty, with skip_ set, where mpirun cannot run.
  static Run expect_mpi_equals_one_process(const std::string& args, const std::string& tag, double tol) {
    const Run mpi = run(2, 2, args, tag + "_mpi");
    if (!skip_.empty()) return {};
    const Run tp2 = run(2, 1, args, tag + "_tp2");
    EXPECT_FALSE(mpi.ids.empty()) << tag;
    EXPECT_EQ(mpi.ids, tp2.ids) << tag;
    EXPECT_LE(test::rel_l2(mpi.logits, tp2.logits), tol) << tag;
    return mpi;
  }

  static ScratchDir* scratch_;
  static std::string launcher_, skip_;
};
ScratchDir* MpiRun::scratch_ = nullptr;
std::string MpiRun::launcher_, MpiRun::skip_;

const char* kPrompt = "--input_text 'Born in north-east France, Soyer trained as a'";

// Top-1 minus top-2 of each [V] row: where greedy ids of two summation orders may part.
std::vector<double> top2_margins(const std::vector<float>& logits, size_t V) {
  std::vector<double> m;
  for (size_t i = 0; i + V <= logits.size(); i += V) {
    std::vector<float> row(logits.begin() + long(i), logits.begin() + long(i + V));
    std::partial_sort(row.begin(), row.begin() + 2, row.end(), std::greater<float>());
    m.push_back(double(row[0]) - row[1]);
  }
  return m;
}

TEST_F(MpiRun, CpuGreedyMatchesOneProcess) {
  const Run mpi = expect_mpi_equals_one_process(std::string("--device cpu ") + kPrompt, "cpu", 1e-6);
  if (!skip_.empty()) GTEST_SKIP() << skip_;
  ASSERT_FALSE(mpi.ids.empty());
  const Run tp1 = run(1, 1, std::string("--device cpu ") + kPrompt, "cpu_tp1");
  // Against one rank (another summation order), greedy ids agree while the margin is clear.
  ASSERT_EQ(mpi.ids.size(), tp1.ids.size());
  const size_t gen = 12, V = tp1.logits.size() / gen, prompt = tp1.ids.size() - gen;
  const std::vector<int32_t> got(mpi.ids.begin() + long(prompt), mpi.ids.end());
  const std::vector<int32_t> want(tp1.ids.begin() + long(prompt), tp1.ids.end());
  test::expect_greedy_agrees(got, want, top2_margins(tp1.logits, V), 1e-3, "mpirun -n 2 vs tp 1");
  EXPECT_LE(test::rel_l2(mpi.logits, tp1.logits), 1e-4);
}

TEST_F(MpiRun, CpuSampledAndPenalizedRowsMatchOneProcess) {
  // Sampled rows gather whole logit rows to the leader; penalized rows come back as host rows.
  const std::string args = std::string("--device cpu ") + kPrompt +
                           " --temperature 0.8 --top_k 20 --random_seed 7 --repetition_penalty 1.3";
  expect_mpi_equals_one_process(args, "cpu_sampled", 1e-6);
  if (!skip_.empty()) GTEST_SKIP() << skip_;
}

TEST_F(MpiRun, WrongProcessCountStopsEveryProcess) {
  const CommandResult r = run_shell(launcher_ + " -n 3 " + test::lamina_binary().string() + " run --engine_dir " +
                                    engine(2) + " --device cpu --max_output_len 2");
  if (r.output.find("libmpi was not found") != std::string::npos) GTEST_SKIP() << "libmpi is not installed";
  EXPECT_NE(r.exit_code, 124) << "hung: " << r.output;
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("launched by mpirun with 3 processes but the engine has tp_size 2"), std::string::npos)
      << r.output;
}

TEST_F(MpiRun, OneProcessCommandsRefuseMpirun) {
  const CommandResult r = run_shell(launcher_ + " -n 2 " + test::lamina_binary().string() + " inspect " + engine(2));
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("lamina inspect runs as one process"), std::string::npos) << r.output;
}

// On a machine with 2 GPUs: NCCL bootstrapped over MPI against the one-process NCCL engine.
TEST_F(MpiRun, GpuGreedyMatchesOneProcess) {
  const std::string args = std::string("--device cuda ") + kPrompt;
  const CommandResult probe = run_lamina("run --engine_dir " + engine(2) + " --max_output_len 1 " + args);
  if (probe.exit_code != 0) GTEST_SKIP() << "no 2-GPU NCCL engine here: " << probe.output.substr(0, 300);
  expect_mpi_equals_one_process(args, "gpu", 1e-5);
  if (!skip_.empty()) GTEST_SKIP() << skip_;
}

}  // namespace
}  // namespace lamina
