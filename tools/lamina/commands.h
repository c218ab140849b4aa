// Each subcommand lives in its own cmd_*.cpp and registers itself on the CLI app.
#pragma once
#include <CLI/CLI.hpp>

namespace lamina::cli {

void register_convert(CLI::App& app);
void register_build(CLI::App& app);
void register_run(CLI::App& app);
void register_inspect(CLI::App& app);
void register_bench(CLI::App& app);
void register_tokenize(CLI::App& app);  // tokenize + detokenize
void register_serve(CLI::App& app);
void register_bench_serving(CLI::App& app);

// Whether `lamina bench ...` asks for the serving load test: a flag of bench_serving that bench
// lacks (--concurrency, --request_rate, --num_requests, --isl, --osl, --server). main() then runs
// bench_serving with the same arguments, so `lamina bench --concurrency 64 --isl 128 --osl 128
// --engine_dir E` works as `lamina bench_serving ...` does.
bool bench_asks_for_serving_load(int argc, char** argv);

}  // namespace lamina::cli
