// The one training loop of Tessera, and evaluation: SGD with momentum or Adam, step / multi-step /
// cosine schedules per epoch or per step, warm-up, weight decay, augmentation, progress, per-epoch
// statistics, and hooks (before the step, after backward, after the step, at epoch end, a custom
// loss) through which quantization-aware training, pruning masks, gating, noise ranking and
// min-max games run without a copy of the loop. Used by `tessera train` and by every system.
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
  std::string optimizer = "sgd";  ///< "sgd" (momentum, nesterov off), "adam" or "adamw"
  double lr = 0.05;
  double momentum = 0.9;
  double beta2 = 0.999;  ///< Adam/AdamW second-moment decay (0.95 for the LLMs)
  double weight_decay = 5e-4;
  std::string schedule = "cosine";  ///< "constant", "step", "multistep", "cosine"
  int64_t step_size = 30;           ///< "step": decay every step_size epochs
  std::vector<int64_t> milestones;  ///< "multistep": epochs at which lr *= gamma
  double gamma = 0.1;
  int64_t warmup_epochs = 0;  ///< linear warm-up from lr/10 (0 = none)
  /// Total optimizer steps (0: epochs x batches per epoch). When set, `epochs` is ignored and the
  /// data set is cycled, reshuffled at each pass.
  int64_t steps = 0;
  /// Change the learning rate every step instead of every epoch: linear warm-up from lr/10 over
  /// `warmup_steps`, then the schedule over the remaining steps (only "constant" and "cosine").
  /// A per-epoch schedule is too coarse for the one to three epochs a fine-tune can afford.
  bool per_step_schedule = false;
  int64_t warmup_steps = 0;
  double min_lr_ratio = 0.0;    ///< a per-step cosine decays to lr * this (0: to zero)
  double clip_grad_norm = 0.0;  ///< > 0: clip the global gradient norm before each step
  double max_seconds = 0.0;     ///< > 0: stop after this wall time (a time-budgeted run)
  int64_t augment_pad = 2;      ///< random-crop padding; 0 disables cropping
  bool augment_flip = true;     ///< random horizontal flip
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
/// Learning rate for step `step` (0-based) of `total_steps` under a per-step schedule.
double learning_rate_at_step(const TrainOptions& options, int64_t step, int64_t total_steps);
/// nlohmann JSON of every field (reports and model-cache keys).
nlohmann::json to_json(const TrainOptions& options);
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

/// The loss of one batch and the logits its accuracy is counted on.
struct StepLoss {
  torch::Tensor loss;    ///< scalar, differentiable
  torch::Tensor logits;  ///< [B, K]
};

/// What a method adds to the loop. Every member is optional. `step` counts optimizer steps from 0
/// over the whole run.
struct TrainHooks {
  /// Before the forward pass (quantization-aware training swaps in quantized weights here).
  std::function<void(int64_t step)> before_step;
  /// Replaces cross-entropy of forward(images): several forwards (nested sub-nets), extra terms
  /// (a sparsity regularizer, an adversary's penalty). images are already augmented.
  std::function<StepLoss(const torch::Tensor& images, const torch::Tensor& labels)> loss;
  /// After backward, before the optimizer step (the straight-through estimator restores the float
  /// weights here; pruning masks gradients here).
  std::function<void(int64_t step)> after_backward;
  /// After the optimizer step (re-apply masks, clamp gates, update an adversary).
  std::function<void(int64_t step)> after_step;
  /// After every epoch; returning false stops training early.
  EpochCallback on_epoch;
};

/// Trains `module` (whose forward maps images to logits) on `train_set`; evaluates on `test_set`
/// after each epoch when it is non-null. Returns one EpochStats per epoch run (a step budget
/// counts a partial last pass as an epoch). Leaves the module in eval mode.
std::vector<EpochStats> fit(torch::nn::Module& module,
                            const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                            const data::Dataset& train_set, const data::Dataset* test_set,
                            const TrainOptions& options, const TrainHooks& hooks = {});

/// The loss of step `step` (0-based): the caller draws its own batch. For data that is not an
/// image data set (token sequences, trajectories).
using StepLossFn = std::function<torch::Tensor(int64_t step)>;

struct StepRunResult {
  int64_t steps = 0;           ///< steps run (fewer than options.steps after max_seconds)
  std::vector<double> losses;  ///< one per step
  double seconds = 0.0;
};

/// The same loop as fit() over `options.steps` steps whose batches the caller makes: optimizer,
/// per-step schedule (always, whatever per_step_schedule says), hooks (all but `loss` and
/// `on_epoch`), gradient clipping, divergence check, progress, time budget. Leaves the module in
/// eval mode.
StepRunResult run_steps(torch::nn::Module& module, const TrainOptions& options,
                        const StepLossFn& step_loss, const TrainHooks& hooks = {});

/// One optimizer step on a loss the caller computed: zero_grad, backward, clipping, step.
/// Returns the loss value.
using StepFn = std::function<double(const torch::Tensor& loss)>;
/// One epoch whose batches the caller draws (an attacker's queries, (feature, image) pairs):
/// it calls step(loss) once per batch.
using EpochFn = std::function<void(int64_t epoch, const StepFn& step)>;

/// The same loop as fit() over `options.epochs` epochs of batches that `run_epoch` draws:
/// optimizer, per-epoch schedule, clipping, divergence check, time budget, `on_epoch` after every
/// epoch (EpochStats with epoch, lr, mean step loss, seconds; no accuracies). Per-step schedules
/// and the step hooks need fit() or run_steps(), which own the forward pass.
std::vector<EpochStats> fit_epochs(torch::nn::Module& module, const TrainOptions& options,
                                   const EpochFn& run_epoch, const EpochCallback& on_epoch = {});

/// Convenience overload for a module holder with forward(Tensor).
template <typename ModuleHolder, typename = decltype(std::declval<ModuleHolder&>()->is_training())>
std::vector<EpochStats> fit(ModuleHolder& model, const data::Dataset& train_set,
                            const data::Dataset* test_set, const TrainOptions& options,
                            const TrainHooks& hooks = {}) {
  return fit(
      *model, [&](const torch::Tensor& x) { return model->forward(x); }, train_set, test_set,
      options, hooks);
}

}  // namespace tessera::train
