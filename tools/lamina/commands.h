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

}  // namespace lamina::cli
