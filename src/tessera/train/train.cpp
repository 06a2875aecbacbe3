// Training loop, optimizers, schedules and evaluation.
#include "tessera/train/train.h"

#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/progress.h"
#include "tessera/core/seed.h"
#include "tessera/core/timer.h"

namespace tessera::train {

void TrainOptions::validate() const {
  TESSERA_CHECK(epochs > 0, "epochs must be positive, got {}", epochs);
  TESSERA_CHECK(batch_size > 0, "batch size must be positive, got {}", batch_size);
  TESSERA_CHECK(optimizer == "sgd" || optimizer == "adam" || optimizer == "adamw",
                "unknown optimizer '{}' (expected sgd, adam or adamw)", optimizer);
  TESSERA_CHECK(beta2 > 0 && beta2 < 1, "beta2 must be in (0, 1), got {}", beta2);
  TESSERA_CHECK(min_lr_ratio >= 0 && min_lr_ratio <= 1, "min lr ratio must be in [0, 1], got {}",
                min_lr_ratio);
  TESSERA_CHECK(clip_grad_norm >= 0, "gradient clip norm must be >= 0, got {}", clip_grad_norm);
  TESSERA_CHECK(max_seconds >= 0, "max seconds must be >= 0, got {}", max_seconds);
  TESSERA_CHECK(lr > 0 && std::isfinite(lr), "learning rate must be positive, got {}", lr);
  TESSERA_CHECK(momentum >= 0 && momentum < 1, "momentum must be in [0, 1), got {}", momentum);
  TESSERA_CHECK(weight_decay >= 0, "weight decay must be >= 0, got {}", weight_decay);
  TESSERA_CHECK(schedule == "constant" || schedule == "step" || schedule == "multistep" ||
                    schedule == "cosine",
                "unknown schedule '{}' (expected constant, step, multistep or cosine)", schedule);
  TESSERA_CHECK(step_size > 0, "step size must be positive, got {}", step_size);
  TESSERA_CHECK(gamma > 0 && gamma <= 1, "gamma must be in (0, 1], got {}", gamma);
  TESSERA_CHECK(warmup_epochs >= 0 && warmup_epochs < epochs,
                "warm-up epochs must be in [0, epochs), got {}", warmup_epochs);
  TESSERA_CHECK(augment_pad >= 0, "augmentation padding must be >= 0, got {}", augment_pad);
  TESSERA_CHECK(label_smoothing >= 0 && label_smoothing < 1,
                "label smoothing must be in [0, 1), got {}", label_smoothing);
  for (int64_t m : milestones)
    TESSERA_CHECK(m > 0, "milestones must be positive epochs, got {}", m);
  TESSERA_CHECK(steps >= 0, "steps must be >= 0, got {}", steps);
  TESSERA_CHECK(!per_step_schedule || schedule == "constant" || schedule == "cosine",
                "a per-step schedule must be constant or cosine, got '{}'", schedule);
  TESSERA_CHECK(warmup_steps >= 0, "warm-up steps must be >= 0, got {}", warmup_steps);
}

nlohmann::json to_json(const TrainOptions& o) {
  return {{"epochs", o.epochs},
          {"steps", o.steps},
          {"batch_size", o.batch_size},
          {"optimizer", o.optimizer},
          {"lr", o.lr},
          {"momentum", o.momentum},
          {"beta2", o.beta2},
          {"min_lr_ratio", o.min_lr_ratio},
          {"clip_grad_norm", o.clip_grad_norm},
          {"max_seconds", o.max_seconds},
          {"weight_decay", o.weight_decay},
          {"schedule", o.schedule},
          {"per_step_schedule", o.per_step_schedule},
          {"step_size", o.step_size},
          {"milestones", o.milestones},
          {"gamma", o.gamma},
          {"warmup_epochs", o.warmup_epochs},
          {"warmup_steps", o.warmup_steps},
          {"augment_pad", o.augment_pad},
          {"augment_flip", o.augment_flip},
          {"label_smoothing", o.label_smoothing},
          {"seed", o.seed}};
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::Tensor> parameters,
                                                        const TrainOptions& options) {
  options.validate();
  if (options.optimizer == "adam") {
    return std::make_unique<torch::optim::Adam>(std::move(parameters),
                                                torch::optim::AdamOptions(options.lr)
                                                    .betas({0.9, options.beta2})
                                                    .weight_decay(options.weight_decay));
  }
  if (options.optimizer == "adamw") {
    return std::make_unique<torch::optim::AdamW>(std::move(parameters),
                                                 torch::optim::AdamWOptions(options.lr)
                                                     .betas({0.9, options.beta2})
                                                     .weight_decay(options.weight_decay));
  }
  return std::make_unique<torch::optim::SGD>(std::move(parameters),
                                             torch::optim::SGDOptions(options.lr)
                                                 .momentum(options.momentum)
                                                 .weight_decay(options.weight_decay));
}

double learning_rate(const TrainOptions& options, int64_t epoch) {
  if (epoch < options.warmup_epochs) {
    // Linear warm-up from lr/10 to lr over the warm-up epochs.
    const double t = static_cast<double>(epoch) / static_cast<double>(options.warmup_epochs);
    return options.lr * (0.1 + 0.9 * t);
  }
  if (options.schedule == "step") {
    return options.lr * std::pow(options.gamma, static_cast<double>(epoch / options.step_size));
  }
  if (options.schedule == "multistep") {
    double lr = options.lr;
    for (int64_t m : options.milestones)
      if (epoch >= m) lr *= options.gamma;
    return lr;
  }
  if (options.schedule == "cosine") {
    // Cosine annealing to zero over the epochs after warm-up (Loshchilov & Hutter, SGDR).
    const double span = static_cast<double>(options.epochs - options.warmup_epochs);
    const double t = static_cast<double>(epoch - options.warmup_epochs) / span;
    return 0.5 * options.lr * (1.0 + std::cos(M_PI * t));
  }
  return options.lr;
}

double learning_rate_at_step(const TrainOptions& options, int64_t step, int64_t total_steps) {
  const int64_t warmup = options.warmup_steps;
  if (step < warmup) {
    return options.lr * (0.1 + 0.9 * static_cast<double>(step) / static_cast<double>(warmup));
  }
  if (options.schedule != "cosine") return options.lr;
  const double t = static_cast<double>(step - warmup) /
                   static_cast<double>(std::max<int64_t>(total_steps - warmup, 1));
  const double m = options.min_lr_ratio;
  return options.lr * (m + (1.0 - m) * 0.5 * (1.0 + std::cos(M_PI * t)));
}

void set_learning_rate(torch::optim::Optimizer& optimizer, double lr) {
  for (auto& group : optimizer.param_groups()) group.options().set_lr(lr);
}

EvalResult evaluate(const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                    const data::Dataset& dataset, int64_t batch_size) {
  TESSERA_CHECK(batch_size > 0, "evaluation batch size must be positive, got {}", batch_size);
  TESSERA_CHECK(dataset.size() > 0, "cannot evaluate on the empty data set '{}'", dataset.name);
  torch::NoGradGuard no_grad;
  int64_t correct = 0;
  double loss_sum = 0.0;
  for (int64_t begin = 0; begin < dataset.size(); begin += batch_size) {
    const int64_t end = std::min(begin + batch_size, dataset.size());
    auto images = dataset.images.slice(0, begin, end);
    auto labels = dataset.labels.slice(0, begin, end);
    auto logits = forward(images);
    // cross_entropy would say only "Target 9 is out of bounds." (e.g. 10-class data, 5 outputs).
    const int64_t top_label = labels.max().item<int64_t>();
    TESSERA_CHECK(logits.dim() == 2 && top_label < logits.size(1),
                  "data set '{}' has label {} but the model gives {} outputs", dataset.name,
                  top_label, logits.dim() == 2 ? logits.size(1) : 0);
    loss_sum +=
        torch::nn::functional::cross_entropy(
            logits, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
            .item<double>();
    correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
  }
  const double n = static_cast<double>(dataset.size());
  return {static_cast<double>(correct) / n, loss_sum / n, dataset.size()};
}

namespace {

StepLoss cross_entropy_step(const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                            const torch::Tensor& images, const torch::Tensor& labels,
                            double label_smoothing) {
  auto logits = forward(images);
  const auto loss_options =
      torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(label_smoothing);
  return {torch::nn::functional::cross_entropy(logits, labels, loss_options), logits};
}

// One optimizer step, the body that fit() and run_steps() share: the per-step learning rate,
// the hooks around forward and backward, the divergence check, clipping. Returns the loss value.
class Stepper {
 public:
  Stepper(torch::nn::Module& module, const TrainOptions& options, const TrainHooks& hooks,
          int64_t total_steps)
      : module_(module),
        options_(options),
        hooks_(hooks),
        total_steps_(total_steps),
        optimizer_(make_optimizer(module.parameters(), options)) {}

  torch::optim::Optimizer& optimizer() { return *optimizer_; }

  /// `loss` runs the forward pass and returns the scalar loss.
  double step(int64_t step, const std::function<torch::Tensor()>& loss) {
    if (options_.per_step_schedule) {
      set_learning_rate(*optimizer_, learning_rate_at_step(options_, step, total_steps_));
    }
    if (hooks_.before_step) hooks_.before_step(step);
    optimizer_->zero_grad();
    const torch::Tensor value = loss();
    const double v = value.item<double>();
    TESSERA_CHECK(std::isfinite(v), "{}: training diverged at step {} (loss is {}); lower the lr",
                  options_.progress_label, step + 1, v);
    value.backward();
    if (hooks_.after_backward) hooks_.after_backward(step);
    if (options_.clip_grad_norm > 0) {
      torch::nn::utils::clip_grad_norm_(module_.parameters(), options_.clip_grad_norm);
    }
    optimizer_->step();
    if (hooks_.after_step) hooks_.after_step(step);
    return v;
  }

 private:
  torch::nn::Module& module_;
  const TrainOptions& options_;
  const TrainHooks& hooks_;
  int64_t total_steps_;
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
};

}  // namespace

std::vector<EpochStats> fit(torch::nn::Module& module,
                            const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                            const data::Dataset& train_set, const data::Dataset* test_set,
                            const TrainOptions& options, const TrainHooks& hooks) {
  options.validate();
  TESSERA_CHECK(train_set.size() > 0, "cannot train on the empty data set '{}'", train_set.name);
  auto rng = make_rng(options.seed, /*stream=*/1);
  data::BatchIterator batches(train_set, options.batch_size, /*shuffle=*/true, options.seed);
  const int64_t per_epoch = batches.n_batches();
  const bool step_budget = options.steps > 0;
  const int64_t total_steps = step_budget ? options.steps : options.epochs * per_epoch;
  const int64_t n_epochs = (total_steps + per_epoch - 1) / per_epoch;
  Stepper stepper(module, options, hooks, total_steps);
  const Timer run_timer;

  std::vector<EpochStats> history;
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < n_epochs; ++epoch) {
    EpochStats stats;
    stats.epoch = epoch + 1;
    stats.lr = options.per_step_schedule ? learning_rate_at_step(options, step, total_steps)
                                         : learning_rate(options, epoch);
    set_learning_rate(stepper.optimizer(), stats.lr);
    module.train();
    // A step budget starts from the iterator's first order, as a plain step loop does; an epoch
    // run reshuffles at every epoch start (the figures of docs/training.md were made that way).
    if (!step_budget || epoch > 0) batches.reset();
    Timer timer;
    const int64_t n_batches = std::min(per_epoch, total_steps - step);
    ProgressBar bar(fmt::format("{} {}/{}", options.progress_label, epoch + 1, n_epochs),
                    n_batches);
    double loss_sum = 0.0;
    int64_t correct = 0, seen = 0;
    torch::Tensor images, labels;
    for (int64_t b = 0; b < n_batches && batches.next(images, labels); ++b, ++step) {
      if (options.max_seconds > 0 && run_timer.elapsed_s() > options.max_seconds) break;
      if (options.augment_pad > 0 || options.augment_flip)
        images = data::augment(images, options.augment_pad, options.augment_flip, rng);
      torch::Tensor logits;
      const double value = stepper.step(step, [&] {
        StepLoss out = hooks.loss
                           ? hooks.loss(images, labels)
                           : cross_entropy_step(forward, images, labels, options.label_smoothing);
        logits = out.logits;
        return out.loss;
      });
      const int64_t n = labels.size(0);
      loss_sum += value * static_cast<double>(n);
      correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
      seen += n;
      bar.update();
      bar.set_postfix(fmt::format("loss {:.3f}", loss_sum / static_cast<double>(seen)));
    }
    bar.finish();
    if (seen == 0) break;  // the time budget ran out before this epoch started
    stats.seconds = timer.elapsed_s();
    stats.images_per_second = static_cast<double>(seen) / std::max(stats.seconds, 1e-9);
    stats.train_loss = loss_sum / static_cast<double>(seen);
    stats.train_accuracy = static_cast<double>(correct) / static_cast<double>(seen);
    if (test_set != nullptr) {
      module.eval();
      auto result = evaluate(forward, *test_set);
      module.train();
      stats.test_accuracy = result.accuracy;
      stats.test_loss = result.loss;
    }
    history.push_back(stats);
    if (hooks.on_epoch && !hooks.on_epoch(stats)) break;
  }
  module.eval();
  return history;
}

StepRunResult run_steps(torch::nn::Module& module, const TrainOptions& step_options,
                        const StepLossFn& step_loss, const TrainHooks& hooks) {
  TrainOptions options = step_options;
  options.per_step_schedule = true;  // there are no epochs to schedule by
  options.validate();
  TESSERA_CHECK(options.steps > 0, "{}: run_steps needs a step budget (steps > 0)",
                options.progress_label);
  TESSERA_CHECK(!hooks.loss && !hooks.on_epoch,
                "run_steps: the loss comes from step_loss and there are no epochs");
  Stepper stepper(module, options, hooks, options.steps);
  set_learning_rate(stepper.optimizer(), learning_rate_at_step(options, 0, options.steps));
  const Timer timer;
  StepRunResult result;
  module.train();
  ProgressBar bar(options.progress_label, options.steps);
  for (int64_t step = 0; step < options.steps; ++step) {
    if (options.max_seconds > 0 && timer.elapsed_s() > options.max_seconds) break;
    result.losses.push_back(stepper.step(step, [&] { return step_loss(step); }));
    result.steps = step + 1;
    bar.set_postfix(fmt::format("loss {:.3f}", result.losses.back()));
    bar.update();
  }
  bar.finish();
  result.seconds = timer.elapsed_s();
  module.eval();
  return result;
}

std::vector<EpochStats> fit_epochs(torch::nn::Module& module, const TrainOptions& options,
                                   const EpochFn& run_epoch, const EpochCallback& on_epoch) {
  options.validate();
  TESSERA_CHECK(!options.per_step_schedule && options.steps == 0,
                "{}: fit_epochs schedules per epoch (no per-step schedule, no step budget)",
                options.progress_label);
  const TrainHooks no_hooks;
  Stepper stepper(module, options, no_hooks, /*total_steps=*/0);
  const Timer run_timer;
  std::vector<EpochStats> history;
  int64_t step = 0;
  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    if (options.max_seconds > 0 && run_timer.elapsed_s() > options.max_seconds) break;
    EpochStats stats;
    stats.epoch = epoch + 1;
    stats.lr = learning_rate(options, epoch);
    set_learning_rate(stepper.optimizer(), stats.lr);
    module.train();
    Timer timer;
    double loss_sum = 0.0;
    int64_t n_steps = 0;
    run_epoch(epoch, [&](const torch::Tensor& loss) {
      const double value = stepper.step(step++, [&] { return loss; });
      loss_sum += value;
      ++n_steps;
      return value;
    });
    stats.seconds = timer.elapsed_s();
    stats.train_loss = loss_sum / static_cast<double>(std::max<int64_t>(n_steps, 1));
    history.push_back(stats);
    if (on_epoch && !on_epoch(stats)) break;
  }
  module.eval();
  return history;
}

}  // namespace tessera::train
