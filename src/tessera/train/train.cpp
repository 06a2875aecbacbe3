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
  TESSERA_CHECK(optimizer == "sgd" || optimizer == "adam",
                "unknown optimizer '{}' (expected sgd or adam)", optimizer);
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
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(std::vector<torch::Tensor> parameters,
                                                        const TrainOptions& options) {
  options.validate();
  if (options.optimizer == "adam") {
    return std::make_unique<torch::optim::Adam>(
        std::move(parameters),
        torch::optim::AdamOptions(options.lr).weight_decay(options.weight_decay));
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
    loss_sum +=
        torch::nn::functional::cross_entropy(
            logits, labels, torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum))
            .item<double>();
    correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
  }
  const double n = static_cast<double>(dataset.size());
  return {static_cast<double>(correct) / n, loss_sum / n, dataset.size()};
}

std::vector<EpochStats> fit(torch::nn::Module& module,
                            const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                            const data::Dataset& train_set, const data::Dataset* test_set,
                            const TrainOptions& options, const EpochCallback& on_epoch) {
  options.validate();
  TESSERA_CHECK(train_set.size() > 0, "cannot train on the empty data set '{}'", train_set.name);
  auto optimizer = make_optimizer(module.parameters(), options);
  auto rng = make_rng(options.seed, /*stream=*/1);
  data::BatchIterator batches(train_set, options.batch_size, /*shuffle=*/true, options.seed);
  const auto loss_options =
      torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(options.label_smoothing);

  std::vector<EpochStats> history;
  for (int64_t epoch = 0; epoch < options.epochs; ++epoch) {
    EpochStats stats;
    stats.epoch = epoch + 1;
    stats.lr = learning_rate(options, epoch);
    set_learning_rate(*optimizer, stats.lr);
    module.train();
    batches.reset();
    Timer timer;
    ProgressBar bar(fmt::format("{} {}/{}", options.progress_label, epoch + 1, options.epochs),
                    batches.n_batches());
    double loss_sum = 0.0;
    int64_t correct = 0, seen = 0;
    torch::Tensor images, labels;
    while (batches.next(images, labels)) {
      if (options.augment_pad > 0 || options.augment_flip)
        images = data::augment(images, options.augment_pad, options.augment_flip, rng);
      optimizer->zero_grad();
      auto logits = forward(images);
      auto loss = torch::nn::functional::cross_entropy(logits, labels, loss_options);
      TESSERA_CHECK(std::isfinite(loss.item<double>()),
                    "training diverged at epoch {} (loss is {}); lower --lr", epoch + 1,
                    loss.item<double>());
      loss.backward();
      optimizer->step();
      const int64_t b = labels.size(0);
      loss_sum += loss.item<double>() * static_cast<double>(b);
      correct += logits.argmax(1).eq(labels).sum().item<int64_t>();
      seen += b;
      bar.update();
      bar.set_postfix(fmt::format("loss {:.3f}", loss_sum / static_cast<double>(seen)));
    }
    bar.finish();
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
    if (on_epoch && !on_epoch(stats)) break;
  }
  module.eval();
  return history;
}

}  // namespace tessera::train
