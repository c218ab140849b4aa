// lamina: convert → build → run | serve | bench for LLaMA 3 checkpoints.
#include <cstdio>

#include "commands.h"
#include "common/error.h"

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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const lamina::Error& e) {
    std::fprintf(stderr, "[lamina] error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "[lamina] error: %s\n", e.what());
    return 1;
  }
  return 0;
}
