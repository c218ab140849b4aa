// The CLI's side of `mpirun -n N lamina run|serve|bench` (docs/tensor-parallel.md): process 0
// leads and prints; every other process runs its rank for it and prints only errors.
#pragma once
#include <memory>
#include <string>

#include "runtime/engine.h"

namespace lamina::cli {

// Called by main before the command line is parsed. Launched by an MPI launcher with several
// processes, run, serve and bench join the job (the other commands refuse: they run as one
// process), and the followers' stdout goes to /dev/null.
void join_mpi_job_if_launched(int argc, char** argv);

// Engine::load for run, serve and bench. In an mpirun job, process 0 gets the engine it leads;
// the other processes run their rank until the leader shuts down, then get nullptr: the command
// then returns without doing anything else.
std::unique_ptr<Engine> load_engine_or_follow(const std::string& engine_dir, EngineOptions eo);

// main's last word. An error (code != 0) is printed; in an mpirun job it also ends every process
// (MPI_Abort), which may be waiting for this one. A success finalizes MPI. Returns the exit code.
int end_mpi_job(int code, const std::string& error);

}  // namespace lamina::cli
