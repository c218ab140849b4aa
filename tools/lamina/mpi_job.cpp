#include "mpi_job.h"

#include <pthread.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/error.h"
#include "runtime/mpi_launch.h"
#include "runtime/mpi_session.h"

namespace lamina::cli {

void join_mpi_job_if_launched(int argc, char** argv) {
  const MpiLaunch launch = detect_mpi_launch();
  if (!launch.multi_process()) return;
  // The subcommand is the first word that is not a flag (the app's own flags take no values).
  std::string command;
  for (int i = 1; i < argc && command.empty(); ++i)
    if (argv[i][0] != '-') command = argv[i];
  if (command != "run" && command != "serve" && command != "bench") {
    if (command.empty()) return;  // --help, --version: every process prints them, then exits
    fail("lamina ", command, " runs as one process, but it was started by an MPI launcher (", launch.source,
         "): run it without mpirun (mpirun -n N is for run, serve and bench of a tp_size N engine)");
  }
  MpiSession& mpi = MpiSession::join(launch);
  if (mpi.rank() != 0) {
    // Only the leader prints results; followers keep stderr for errors.
    if (!std::freopen("/dev/null", "w", stdout)) fail("cannot redirect a follower's stdout to /dev/null");
    setenv("LAMINA_QUIET", "1", 1);
  }
}

std::unique_ptr<Engine> load_engine_or_follow(const std::string& engine_dir, EngineOptions eo) {
  eo.mpi = MpiSession::joined();
  auto engine = Engine::load(engine_dir, eo);
  if (!engine->is_follower()) return engine;
  // The leader decides when the job ends (serve drains on SIGINT/SIGTERM, and its steps need
  // every rank): mpirun's forwarded signals must not end a follower first. Should the leader die
  // instead, mpirun kills the followers.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  engine->run_follower();
  return nullptr;
}

int end_mpi_job(int code, const std::string& error) {
  MpiSession* mpi = MpiSession::joined();
  if (code != 0) {
    if (mpi) mpi->abort_after_error(error);
    std::fprintf(stderr, "[lamina] error: %s\n", error.c_str());
    return code;
  }
  if (mpi) mpi->finalize();
  return 0;
}

}  // namespace lamina::cli
