// tessera: one binary, one subcommand group per system. Global flags: --threads, --quiet,
// --log-level, --cache-dir, --version. This is the only place that catches tessera::Error: it
// prints one `error:` line and exits 1; usage errors (bad flags) exit 2.
#include <CLI/CLI.hpp>

#include <iostream>

#include "cli.h"
#include "commands.inc"
#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/runtime.h"
#include "tessera/train/cache.h"
#include "tour.h"

int main(int argc, char** argv) {
  CLI::App app{
      "Tessera: ten systems for efficient and secure deep learning on one C++ core.\n"
      "Run `tessera tour` for a quick demo of every system, or `tessera <command> --help`."};
  app.require_subcommand(1);
  app.fallthrough();
  int threads = 0;
  bool quiet = false;
  std::string log_level = "info";
  app.add_option("--threads", threads, "LibTorch threads (0 = one per core)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_flag("-q,--quiet", quiet, "only warnings and errors; no progress bars");
  app.add_option("--log-level", log_level, "debug, info, warn or error")->capture_default_str();
  std::string cache_dir;
  app.add_option("--cache-dir", cache_dir,
                 "model cache directory (default $XDG_CACHE_HOME/tessera/models)");
  app.set_version_flag("--version", std::string("tessera " TESSERA_VERSION " (commit ") +
                                        tessera::git_commit() + ")");

  tessera::cli::Tour tour;
  register_all_commands(app, tour);
  tessera::cli::add_tour_command(app, tour);

  // Runtime set-up happens before any subcommand callback runs.
  app.parse_complete_callback([&] {
    tessera::log::set_level(log_level);
    if (quiet) tessera::log::set_quiet(true);
    tessera::init_runtime(threads);
    tessera::train::set_cache_dir(cache_dir);
  });

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // A command's own status (CLI::RuntimeError(code), e.g. `bitflip verify` exits 3 on a
    // mismatch): it has printed its report already.
    if (e.get_name() == "RuntimeError") return e.get_exit_code();
    const int code = app.exit(e);  // prints help, the version, or the usage error
    return code == 0 ? 0 : 2;
  } catch (const tessera::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  } catch (const c10::Error& e) {
    // LibTorch's own checks (shape mismatches deep in a kernel): keep the first line only.
    std::string message = e.what();
    std::cerr << "error: " << message.substr(0, message.find('\n')) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
