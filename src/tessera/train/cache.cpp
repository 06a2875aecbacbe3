// Model cache: recipe hashing, cache directories and train-once-then-reuse.
#include "tessera/train/cache.h"

#include <fmt/format.h>

#include <cstdlib>
#include <filesystem>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/log.h"
#include "tessera/core/seed.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"

namespace tessera::train {
namespace {

std::string& cache_dir_override() {
  static std::string dir;
  return dir;
}

uint64_t fnv1a64(const std::string& bytes) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    hash ^= c;
    hash *= 0x100000001b3ull;
  }
  return hash;
}

}  // namespace

nlohmann::json TrainRecipe::to_json() const {
  return {{"arch", arch.to_json()},
          {"train", train::to_json(options)},
          {"data", data},
          {"train_images", train_images},
          {"extra", extra}};
}

std::string hash_key(const std::string& prefix, const nlohmann::json& recipe) {
  return fmt::format("{}-{:016x}", prefix, fnv1a64(recipe.dump()));
}

std::string TrainRecipe::key() const { return hash_key(arch.name, to_json()); }

std::string cache_dir() {
  if (!cache_dir_override().empty()) return cache_dir_override();
  if (const char* dir = std::getenv("TESSERA_CACHE_DIR"); dir != nullptr && *dir != '\0')
    return dir;
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg != nullptr && *xdg != '\0')
    return std::string(xdg) + "/tessera/models";
  const char* home = std::getenv("HOME");
  TESSERA_CHECK(home != nullptr && *home != '\0',
                "model cache: neither XDG_CACHE_HOME nor HOME is set; pass --cache-dir DIR");
  return std::string(home) + "/.cache/tessera/models";
}

void set_cache_dir(const std::string& dir) { cache_dir_override() = dir; }

std::string shipped_dir() { return TESSERA_SOURCE_DIR "/models/reference"; }

std::string cached_file_path(const std::string& file_name) {
  const std::string shipped = shipped_dir() + "/" + file_name;
  if (file_exists(shipped)) return shipped;
  return cache_dir() + "/" + file_name;
}

std::string cached_file(const std::string& file_name,
                        const std::function<void(const std::string& path)>& make) {
  const std::string path = cached_file_path(file_name);
  if (file_exists(path)) {
    log::info("model cache: reusing {}", path);
    return path;
  }
  log::info("model cache: making {} (not in {})", file_name, cache_dir());
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  make(path);
  TESSERA_CHECK(file_exists(path), "model cache: making '{}' wrote no file", path);
  log::info("model cache: saved {}", path);
  return path;
}

std::string cached_path(const TrainRecipe& recipe) {
  return cached_file_path(recipe.key() + ".safetensors");
}

models::Model cached_model(const TrainRecipe& recipe,
                           const std::function<models::Model()>& train_model) {
  const std::string path = cached_path(recipe);
  if (file_exists(path)) {
    models::Model model = models::load(path);
    TESSERA_CHECK(model->config().to_json() == recipe.arch.to_json(),
                  "model cache: '{}' holds architecture {} but the recipe asks for {}; delete it",
                  path, model->config().to_json().dump(), recipe.arch.to_json().dump());
    log::info("model cache: reusing {}", path);
    model->eval();
    return model;
  }
  log::info("model cache: training {} (not in {})", recipe.key(), cache_dir());
  models::Model model = train_model();
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  models::save(path, model);
  log::info("model cache: saved {}", path);
  model->eval();
  return model;
}

models::Model cached_fit(const TrainRecipe& recipe, const data::Dataset& train_set) {
  return cached_model(recipe, [&] {
    seed_everything(recipe.options.seed);
    models::Model model = models::create(recipe.arch);
    const bool subset = recipe.train_images > 0 && recipe.train_images < train_set.size();
    fit(model, subset ? train_set.head(recipe.train_images) : train_set, nullptr, recipe.options);
    return model;
  });
}

}  // namespace tessera::train
