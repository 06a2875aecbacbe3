// The foundation's experiments: `tessera train` as a library call (train a registry model on
// Fashion-MNIST, per-epoch statistics, the loss/accuracy curve), the cached reference models the
// systems share, and the foundation's tour step.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/table.h"
#include "tessera/core/tour.h"
#include "tessera/data/dataset.h"
#include "tessera/models/model.h"
#include "tessera/train/cache.h"
#include "tessera/train/train.h"

namespace tessera::train {

struct TrainRunOptions {
  models::ModelConfig arch;  ///< default: resnet20, 1 channel, 32x32, 10 classes
  TrainOptions train;        ///< default: 15 epochs, SGD lr 0.05 cosine (see TrainOptions)
  std::string data_dir = data::kFashionMnistDir;  ///< Fashion-MNIST directory
  int64_t train_subset = 0;                       ///< the first N training images (0 = all 60k)
  /// When non-empty, the model is saved (atomically) here after every epoch.
  std::string checkpoint_path;

  TrainRunOptions();
  /// Throws tessera::Error naming the first bad field.
  void validate() const;
  nlohmann::json to_json() const;
};

struct TrainRunResult {
  models::Model model{nullptr};  ///< the trained model, in eval mode
  std::vector<EpochStats> epochs;
  EvalResult test;  ///< final evaluation on the whole test set
  int64_t train_images = 0;
  int64_t parameters = 0;
  double seconds = 0.0;  ///< wall time of the training

  /// One row per epoch: epoch, lr, train loss, train acc %, test acc %, s, img/s.
  Table table() const;
  nlohmann::json to_json() const;
  /// Training loss and train/test accuracy per epoch, side by side.
  std::string svg() const;
};

/// Trains `options.arch` on Fashion-MNIST; evaluates on the test set after every epoch.
TrainRunResult run_training(const TrainRunOptions& options);

/// What `tessera info` prints of a model: its units, its weighted layers, the totals.
struct ModelInfo {
  Table units{{"#", "unit", "kind", "output shape"}};
  Table layers{
      {"layer", "op", "in", "out", "kernel", "stride", "groups", "output", "weights", "MACs"}};
  int64_t parameters = 0;
  int64_t macs = 0;       ///< per image
  nlohmann::json report;  ///< arch, parameters, MACs and workload, for --json
  /// "parameters: N (1.2M)   MACs per image: N (3.4M)"
  std::string summary() const;
};
ModelInfo describe_model(models::Model& model);

/// The foundation's reference models (cached; shipped in models/reference when small).
std::vector<ReferenceModel> reference_models();
/// The recipe of a foundation reference model by name ("resnet20-fmnist").
TrainRecipe reference_recipe(const std::string& name);

/// Tour row: the cached ResNet-20 reference model's test accuracy.
std::vector<TourRow> tour(const TourContext& context);

}  // namespace tessera::train
