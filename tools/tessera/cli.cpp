// Common flag helpers for the subcommands.
#include "cli.h"

#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>

#include "tessera/core/error.h"
#include "tessera/data/dataset.h"

namespace tessera::cli {

CLI::Option* add_data_option(CLI::App* app, std::string& dir) {
  if (dir.empty()) dir = data::kFashionMnistDir;
  return app->add_option("--data", dir, "Fashion-MNIST directory (IDX files, plain or .gz)")
      ->capture_default_str();
}

void add_image_data_options(CLI::App* app, data::ImageData& source) {
  app->add_option("--data", source.dir,
                  "image directory: Fashion-MNIST IDX files or CIFAR-10/100 binaries")
      ->capture_default_str();
  app->add_option("--mean", source.mean, "per-channel mean subtracted from [0, 1] pixels")
      ->delimiter(',');
  app->add_option("--std", source.std, "per-channel divisor applied after --mean")->delimiter(',');
}

namespace {
constexpr const char* kDefaultOutputDir = "tessera-out";
}

std::string default_output(const std::string& name) {
  return std::string(kDefaultOutputDir) + "/" + name;
}

void check_writable(const std::vector<std::string>& paths) {
  std::set<std::string> seen;
  for (const auto& path : paths) {
    if (path.empty()) continue;
    // Two outputs on one path: the second would replace the first after it was reported.
    TESSERA_CHECK(seen.insert(std::filesystem::absolute(path).lexically_normal().string()).second,
                  "output '{}' is given twice", path);
    const auto parent = std::filesystem::path(path).parent_path();
    const std::string dir = parent.empty() ? "." : parent.string();
    if (dir == kDefaultOutputDir) std::filesystem::create_directories(dir);  // made on first use
    TESSERA_CHECK(std::filesystem::is_directory(dir), "output '{}': directory '{}' does not exist",
                  path, dir);
    TESSERA_CHECK(::access(dir.c_str(), W_OK) == 0, "output '{}': directory '{}' is not writable",
                  path, dir);
    TESSERA_CHECK(!std::filesystem::is_directory(path), "output '{}' is a directory", path);
    // access() says yes to root everywhere; only creating a file shows that the atomic write
    // (a temporary file in `dir`, then a rename) will work, e.g. on a read-only mount.
    std::string probe = dir + "/.tessera-probe-XXXXXX";
    const int fd = ::mkstemp(probe.data());
    TESSERA_CHECK(fd >= 0, "output '{}': cannot create a file in directory '{}': {}", path, dir,
                  std::strerror(errno));
    ::close(fd);
    ::unlink(probe.c_str());
  }
}

CLI::App* subcommand_group(CLI::App& app, const std::string& name, const std::string& help) {
  for (auto* sub : app.get_subcommands([&](CLI::App* s) { return s->get_name() == name; }))
    return sub;
  auto* group = app.add_subcommand(name, help);
  group->require_subcommand(1);
  return group;
}

}  // namespace tessera::cli
