// Shared pieces of the tessera command line: the tour registry and helpers for common flags.
// Each subcommand group lives in cmd_<layer>.cpp and defines
//   void register_<layer>(CLI::App& app, tessera::cli::Tour& tour);
// which CMake finds and calls from main.cpp (see CMakeLists.txt).
#pragma once

#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace tessera::cli {

/// What `tessera tour` hands each system's quick demo.
struct TourContext {
  std::string data_dir;  ///< Fashion-MNIST directory (--data)
  std::string work_dir;  ///< scratch directory for model files and reports of this tour run
  uint64_t seed = 0;
};

/// One row of the tour's closing table: system, what was measured here, the paper's figure.
struct TourRow {
  std::string system;
  std::string measured;
  std::string paper;
};

/// The ordered list of tour steps; each system's register_<layer>() adds its own.
class Tour {
 public:
  using Step = std::function<std::vector<TourRow>(const TourContext&)>;
  void add(std::string name, Step step) { steps_.push_back({std::move(name), std::move(step)}); }
  struct Entry {
    std::string name;
    Step step;
  };
  const std::vector<Entry>& steps() const { return steps_; }

 private:
  std::vector<Entry> steps_;
};

/// --seed with the documented default.
inline CLI::Option* add_seed_option(CLI::App* app, uint64_t& seed) {
  return app->add_option("--seed", seed, "random seed")->capture_default_str();
}
/// --json FILE: where the command writes its JSON report (nothing written when empty).
inline CLI::Option* add_json_option(CLI::App* app, std::string& path) {
  return app->add_option("--json", path, "write a JSON report (config, seed, commit, results)");
}
/// --data DIR for Fashion-MNIST.
CLI::Option* add_data_option(CLI::App* app, std::string& dir);

}  // namespace tessera::cli
