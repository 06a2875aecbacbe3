// Common flag helpers for the subcommands.
#include "cli.h"

#include "tessera/data/dataset.h"

namespace tessera::cli {

CLI::Option* add_data_option(CLI::App* app, std::string& dir) {
  if (dir.empty()) dir = data::kFashionMnistDir;
  return app->add_option("--data", dir, "Fashion-MNIST directory (IDX files, plain or .gz)")
      ->capture_default_str();
}

}  // namespace tessera::cli
