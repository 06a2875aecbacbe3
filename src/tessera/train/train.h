// Supervised training and evaluation of the vision models on an in-memory data set:
// SGD with momentum or Adam, step / multi-step / cosine schedules, weight decay, augmentation,
// progress, and per-epoch statistics. Used by `tessera train` and by every system that needs a
// trained model.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tessera/data/dataset.h"

namespace tessera::train {

struct TrainOptions {
  int64_t epochs = 10;
  int64_t batch_size = 128;
  std::string optimizer = "sgd";  ///< "sgd" (momentum, nesterov off) or "adam"
  double lr = 0.05;
  double momentum = 0.9;
  double weight_decay = 5e-4;
  std::string schedule = "cosine";  ///< "constant", "step", "multistep", "cosine"
  int64_t step_size = 30;           ///< "step": decay every step_size epochs
  std::vector<int64_t> milestones;  ///< "multistep": epochs at which lr *= gamma
  double gamma = 0.1;
  int64_t warmup_epochs = 0;  ///< linear warm-up from lr/10 (0 = none)
  int64_t augment_pad = 2;    ///< random-crop padding; 0 disables cropping
  bool augment_flip = true;   ///< random horizontal flip
  double label_smoothing = 0.0;
  uint64_t seed = 0;
  std::string progress_label = "train";

  /// Throws tessera::Error naming the first bad field (non-positive epochs, unknown optimizer...).
  void validate() const;
};

struct EvalResult {
  double accuracy = 0.0;  ///< top-1, in [0, 1]
  double loss = 0.0;      ///< mean cross-entropy
  int64_t n = 0;
};

struct EpochStats {
  int64_t epoch = 0;  ///< 1-based
  double lr = 0.0;
  double train_loss = 0.0;
  double train_accuracy = 0.0;
  double test_accuracy = -1.0;  ///< -1 when no test set was given
  double test_loss = -1.0;
  double seconds = 0.0;
  double images_per_second = 0.0;
};

/// Builds an optimizer over `parameters` from the options.
std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::Tensor> parameters,
                                                        const TrainOptions& options);
/// Learning rate for epoch `epoch` (0-based) under the options' schedule and warm-up.
double learning_rate(const TrainOptions& options, int64_t epoch);
/// Sets every param group's lr.
void set_learning_rate(torch::optim::Optimizer& optimizer, double lr);

/// Top-1 accuracy and mean loss of `forward` (a model in eval mode) over the data set.
/// forward: images [B, C, H, W] -> logits [B, K].
EvalResult evaluate(const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                    const data::Dataset& dataset, int64_t batch_size = 512);
/// Same for a module holder with forward(Tensor) (sets eval mode, restores train mode afterwards).
/// (Enabled only for module holders, so a lambda picks the std::function overload.)
template <typename ModuleHolder, typename = decltype(std::declval<ModuleHolder&>()->is_training())>
EvalResult evaluate(ModuleHolder& model, const data::Dataset& dataset, int64_t batch_size = 512) {
  const bool was_training = model->is_training();
  model->eval();
  torch::NoGradGuard no_grad;
  auto result =
      evaluate([&](const torch::Tensor& x) { return model->forward(x); }, dataset, batch_size);
  model->train(was_training);
  return result;
}

/// Called after every epoch; returning false stops training early.
using EpochCallback = std::function<bool(const EpochStats&)>;

/// Trains `module` (whose forward maps images to logits) on `train_set`; evaluates on `test_set`
/// after each epoch when it is non-null. Returns one EpochStats per epoch run.
std::vector<EpochStats> fit(torch::nn::Module& module,
                            const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                            const data::Dataset& train_set, const data::Dataset* test_set,
                            const TrainOptions& options, const EpochCallback& on_epoch = {});

/// Convenience overload for a module holder with forward(Tensor).
template <typename ModuleHolder, typename = decltype(std::declval<ModuleHolder&>()->is_training())>
std::vector<EpochStats> fit(ModuleHolder& model, const data::Dataset& train_set,
                            const data::Dataset* test_set, const TrainOptions& options,
                            const EpochCallback& on_epoch = {}) {
  return fit(
      *model, [&](const torch::Tensor& x) { return model->forward(x); }, train_set, test_set,
      options, on_epoch);
}

}  // namespace tessera::train
