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

#include "tessera/core/tour.h"
#include "tessera/data/image_folder.h"
#include "tessera/train/cache.h"

namespace tessera::cli {

using TourContext = tessera::TourContext;
using TourRow = tessera::TourRow;

/// What the systems register besides their commands: the ordered tour steps, and the cached
/// reference models and files that `tessera models train-reference` builds. Each system's
/// register_<layer>() adds its own.
class Tour {
 public:
  using Step = std::function<std::vector<TourRow>(const TourContext&)>;
  struct Entry {
    std::string name;
    Step step;
  };
  /// One row of `tessera models`: where its file is or will be, and how to build it.
  struct Reference {
    std::string name, description;
    std::function<std::string()> path;
    std::function<void(const std::string& data_dir)> build;
  };

  void add(std::string name, Step step) { steps_.push_back({std::move(name), std::move(step)}); }
  void add_references(const std::vector<train::ReferenceModel>& models) {
    for (const auto& m : models) {
      add_reference({m.name, m.description, [m] { return train::cached_path(m.recipe()); },
                     [m](const std::string& data_dir) { m.build(data_dir); }});
    }
  }
  void add_references(const std::vector<train::ReferenceFile>& files) {
    for (const auto& f : files) add_reference({f.name, f.description, f.path, f.build});
  }
  const std::vector<Entry>& steps() const { return steps_; }
  const std::vector<Reference>& references() const { return references_; }

 private:
  void add_reference(Reference r) {
    for (const auto& known : references_)
      if (known.name == r.name) return;  // systems may share a foundation model
    references_.push_back(std::move(r));
  }
  std::vector<Entry> steps_;
  std::vector<Reference> references_;
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
/// --data DIR (Fashion-MNIST or CIFAR-10/100, by content), --mean and --std: the test images of a
/// model file, which may come from elsewhere (docs/import.md).
void add_image_data_options(CLI::App* app, data::ImageData& source);
/// --svg FILE: where the command writes its plot (nothing written when empty).
inline CLI::Option* add_svg_option(CLI::App* app, std::string& path) {
  return app->add_option("--svg", path, "write the result's curve as an SVG plot");
}

/// Where a default output goes: `tessera-out/<name>` (git-ignored; check_writable creates the
/// folder on first use).
std::string default_output(const std::string& name);
/// Refuses, before any work starts, an output path whose directory does not exist or is not
/// writable (so a long run cannot fail at its last step). Empty paths are skipped.
void check_writable(const std::vector<std::string>& paths);

/// The subcommand group `name` of `app`, created (requiring one subcommand) by whichever
/// cmd_*.cpp file registers first, so that several files add commands to one group.
CLI::App* subcommand_group(CLI::App& app, const std::string& name, const std::string& help);

}  // namespace tessera::cli
