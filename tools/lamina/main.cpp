// lamina: convert → build → run | serve | bench for LLaMA 3 checkpoints.
#include <cstdio>

#include "commands.h"
#include "common/error.h"
#include "mpi_job.h"

int main(int argc, char** argv) {
  CLI::App app{"Lamina: a C++/CUDA inference engine for LLaMA 3 checkpoints\n"
               "  lamina convert --model_dir HF_DIR --output_dir CKPT\n"
               "  lamina build --checkpoint_dir CKPT --output_dir ENGINE\n"
               "  lamina run --engine_dir ENGINE --input_text \"...\"",
               "lamina"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "lamina 0.1.0");
  lamina::cli::register_convert(app);
  lamina::cli::register_build(app);
  lamina::cli::register_run(app);
  lamina::cli::register_inspect(app);
  lamina::cli::register_bench(app);
  lamina::cli::register_tokenize(app);
  lamina::cli::register_serve(app);
  lamina::cli::register_bench_serving(app);
  // Under mpirun, every exit goes through end_mpi_job: an error must end the whole job.
  using lamina::cli::end_mpi_job;
  try {
    // Before the MPI check, which then refuses the load test under mpirun as it refuses bench_serving.
    char serving_bench[] = "bench_serving";
    if (lamina::cli::bench_asks_for_serving_load(argc, argv)) argv[1] = serving_bench;
    lamina::cli::join_mpi_job_if_launched(argc, argv);
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);
    return end_mpi_job(code, "invalid command line (see above)");
  } catch (const std::exception& e) {
    return end_mpi_job(1, e.what());
  }
  return end_mpi_job(0, "");
}
