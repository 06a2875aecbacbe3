// The model cache: a trained reference model is trained once and reused, keyed by a hash of its
// architecture and its whole recipe (data, training options, anything else that changes the
// weights). Files live under $TESSERA_CACHE_DIR, else $XDG_CACHE_HOME/tessera/models, else
// ~/.cache/tessera/models (`tessera --cache-dir DIR` sets it for one run). Models shipped in the
// repository (models/reference/) are found there first, so a fresh checkout needs no training.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>

#include "tessera/data/dataset.h"
#include "tessera/models/model.h"
#include "tessera/train/train.h"

namespace tessera::train {

/// Everything that determines a trained model's weights.
struct TrainRecipe {
  models::ModelConfig arch;
  TrainOptions options;
  std::string data = "fashion-mnist";  ///< data set name (its directory is not part of the key)
  int64_t train_images = 0;            ///< the first N training images (0 = all)
  /// Anything else the caller's training does (BN re-estimation, a teacher, a second phase).
  nlohmann::json extra = nlohmann::json::object();

  nlohmann::json to_json() const;
  /// "<arch name>-<16 hex digits of a 64-bit FNV-1a hash of to_json()>": stable across runs,
  /// machines and standard libraries.
  std::string key() const;
};

/// The directory model files are cached in (created on first write).
std::string cache_dir();
/// Overrides cache_dir() for this process (`--cache-dir`); an empty string restores the default.
void set_cache_dir(const std::string& dir);
/// The directory of the models shipped with the source tree (models/reference).
std::string shipped_dir();

/// "<prefix>-<16 hex digits of a 64-bit FNV-1a hash of recipe.dump()>": a cache key that is the
/// same on every machine and standard library (nlohmann::json keeps object keys sorted).
std::string hash_key(const std::string& prefix, const nlohmann::json& recipe);

/// Where the cached file `file_name` is, or would be: shipped_dir()/file_name when that exists,
/// else cache_dir()/file_name.
std::string cached_file_path(const std::string& file_name);

/// The path of the cached file `file_name`, made first by `make(path)` when it is missing (the
/// cache directory is created; `make` must write `path` atomically). For artifacts that are not
/// vision models: an LLM and its tokenizer, a distilled LLM.
std::string cached_file(const std::string& file_name,
                        const std::function<void(const std::string& path)>& make);

/// Where a recipe's model is, or would be, cached: shipped_dir()/KEY.safetensors when that file
/// exists, else cache_dir()/KEY.safetensors.
std::string cached_path(const TrainRecipe& recipe);

/// The cached model for `recipe` when its file exists (the file's architecture must equal the
/// recipe's); otherwise `train_model()` builds it, it is saved atomically, and returned. The
/// caller promises that train_model() is a deterministic function of the recipe.
models::Model cached_model(const TrainRecipe& recipe,
                           const std::function<models::Model()>& train_model);

/// cached_model with the plain recipe: create the architecture, seed, fit() on the first
/// `train_images` of `train_set` with `options`, no test set.
models::Model cached_fit(const TrainRecipe& recipe, const data::Dataset& train_set);

/// A named reference model that a benchmark or the tour uses: `tessera models train-reference`
/// builds each one that is missing from the cache (or all of them). Each system's bench lists its
/// own (`<system>::reference_models()`).
struct ReferenceModel {
  std::string name;         ///< e.g. "resnet20-fmnist"
  std::string description;  ///< architecture, data, recipe, expected accuracy
  /// The recipe (for its cache key and file), given the Fashion-MNIST directory.
  std::function<TrainRecipe()> recipe;
  /// Returns the cached model, training it first when it is missing: (data directory) -> model.
  std::function<models::Model(const std::string& data_dir)> build;
};

/// A cached reference artifact that is not a vision model (an LLM file): `tessera models` lists
/// it and `tessera models train-reference` builds it like a ReferenceModel.
struct ReferenceFile {
  std::string name;
  std::string description;
  std::function<std::string()> path;                       ///< cached_file_path(...)
  std::function<void(const std::string& data_dir)> build;  ///< makes the file when missing
};

}  // namespace tessera::train
