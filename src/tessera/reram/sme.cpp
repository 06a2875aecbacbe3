// SME on a whole network: quantize, project, map every step combination, evaluate accuracy.
#include "tessera/reram/sme.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <optional>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/progress.h"
#include "tessera/core/timer.h"
#include "tessera/models/registry.h"
#include "tessera/train/train.h"

namespace tessera::reram {

std::string SmeOptions::describe() const {
  std::string s = bit_sparse ? "bit-sparse(" + quantizer.describe() + ")" : "uniform";
  return s + "+" + mapping().describe();
}

std::vector<quant::QuantizedTensor> quantize_model(models::Model& model,
                                                   const workload::Workload& workload, int bits) {
  std::vector<quant::QuantizedTensor> all = quant::quantize_module(*model, bits);
  const std::vector<workload::Layer> layers = workload.weighted_layers();
  TESSERA_CHECK(all.size() == layers.size(),
                "reram: model '{}' has {} weight tensors but its workload has {} weighted layers",
                workload.model, all.size(), layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const torch::Tensor& v = all[i].values;
    TESSERA_CHECK(v.dim() >= 2 && v.size(0) == layers[i].out_channels &&
                      v.numel() == layers[i].out_channels * layers[i].weight_rows(),
                  "reram: weight '{}' {} does not match workload layer '{}'", all[i].name,
                  c10::str(v.sizes()), layers[i].name);
  }
  return all;
}

WeightDonor weight_donor(models::Model& model) {
  WeightDonor donor;
  donor.layers = model->workload().weighted_layers();
  for (const auto& item : model->named_parameters(/*recurse=*/true)) {
    const std::string& key = item.key();
    if (item.value().dim() >= 2 && key.size() >= 6 &&
        key.compare(key.size() - 6, 6, "weight") == 0) {
      donor.weights.push_back(item.value().detach().clone());
    }
  }
  TESSERA_CHECK(donor.weights.size() == donor.layers.size(),
                "reram: donor model has {} weight tensors for {} weighted layers",
                donor.weights.size(), donor.layers.size());
  return donor;
}

std::vector<quant::QuantizedTensor> bit_sparse_all(
    const workload::Workload& workload, const std::vector<quant::QuantizedTensor>& uniform,
    const BitSparseOptions& options) {
  const std::vector<workload::Layer> layers = workload.weighted_layers();
  TESSERA_CHECK(layers.size() == uniform.size(), "reram: {} weight tensors for {} layers",
                uniform.size(), layers.size());
  std::vector<quant::QuantizedTensor> out;
  out.reserve(uniform.size());
  for (size_t i = 0; i < uniform.size(); ++i) {
    const int64_t groups = layers[i].kind == workload::OpKind::Conv2d ? layers[i].groups : 1;
    out.push_back(bit_sparse_quantize(uniform[i], options, groups));
  }
  return out;
}

std::vector<AblationRow> ablation(const workload::Workload& workload,
                                  const std::vector<quant::QuantizedTensor>& uniform,
                                  const std::vector<quant::QuantizedTensor>& sparse,
                                  const HardwareSpec& spec) {
  std::vector<AblationRow> rows;
  // Order: baseline, single steps, pairs, all three.
  const int order[8] = {0, 4, 2, 1, 6, 5, 3, 7};  // bits: 4 = bit-sparse, 2 = splice, 1 = squeeze
  for (int code : order) {
    AblationRow row;
    row.bit_sparse = code & 4;
    row.splice = code & 2;
    row.squeeze = code & 1;
    const NetworkStats net = map_network(workload, row.bit_sparse ? sparse : uniform, spec,
                                         MappingOptions{row.splice, row.squeeze});
    row.crossbars = net.total.crossbars;
    row.seconds = net.map_seconds;
    row.reduction = rows.empty() ? 1.0
                                 : static_cast<double>(rows.front().crossbars) /
                                       static_cast<double>(std::max<int64_t>(row.crossbars, 1));
    rows.push_back(row);
  }
  return rows;
}

double quantized_accuracy(models::Model& model, const std::vector<quant::QuantizedTensor>& weights,
                          const data::Dataset& test_set) {
  models::Model copy = models::clone(model);
  quant::load_into_module(weights, *copy);
  return train::evaluate(copy, test_set).accuracy;
}

data::Dataset load_fashion_mnist_at(const std::string& split, const std::string& dir,
                                    int64_t image_size) {
  TESSERA_CHECK(image_size >= 4 && image_size <= 1024,
                "reram: Fashion-MNIST image size {} must be in [4, 1024]", image_size);
  if (image_size >= 28) return data::load_fashion_mnist(split, dir, image_size);
  data::Dataset d = data::load_fashion_mnist(split, dir, 28);
  d.images = torch::adaptive_avg_pool2d(d.images, {image_size, image_size}).contiguous();
  return d;
}

namespace {

// The conv/linear weights that core/quant quantizes (named "*weight", dim >= 2), by name.
std::vector<std::pair<std::string, torch::Tensor>> quantized_parameters(models::Model& model) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (const auto& item : model->named_parameters(/*recurse=*/true)) {
    const std::string& key = item.key();
    if (item.value().dim() >= 2 && key.size() >= 6 &&
        key.compare(key.size() - 6, 6, "weight") == 0) {
      out.emplace_back(key, item.value());
    }
  }
  return out;
}

// Linear warm-up over the first `warmup` steps from lr/10, then cosine to 0 (per step).
double step_lr(double peak, int64_t step, int64_t steps, int64_t warmup) {
  if (step < warmup) return peak * (0.1 + 0.9 * static_cast<double>(step) / warmup);
  const double t = static_cast<double>(step - warmup) / std::max<int64_t>(steps - warmup, 1);
  return 0.5 * peak * (1.0 + std::cos(M_PI * t));
}

// SGD for `steps` steps over `train_set` (reshuffled each pass). `before_step` runs before the
// forward pass and `before_update` after backward, before the optimizer step (the STE hooks).
void run_sgd(models::Model& model, const data::Dataset& train_set, int64_t steps,
             int64_t batch_size, double lr, double momentum, double weight_decay, int64_t warmup,
             uint64_t seed, const std::string& label, const std::function<void()>& before_step = {},
             const std::function<void()>& before_update = {}) {
  torch::optim::SGD optimizer(
      model->parameters(),
      torch::optim::SGDOptions(lr).momentum(momentum).weight_decay(weight_decay));
  data::BatchIterator batches(train_set, batch_size, /*shuffle=*/true, seed);
  model->train();
  ProgressBar bar(label, steps);
  double loss_sum = 0;
  torch::Tensor images, labels;
  for (int64_t step = 0; step < steps; ++step) {
    if (!batches.next(images, labels)) {
      batches.reset();
      TESSERA_CHECK(batches.next(images, labels), "reram: empty training set");
    }
    const double step_rate = step_lr(lr, step, steps, warmup);
    for (auto& group : optimizer.param_groups()) group.options().set_lr(step_rate);
    if (before_step) before_step();
    optimizer.zero_grad();
    torch::Tensor loss = torch::nn::functional::cross_entropy(model->forward(images), labels);
    const double value = loss.item<double>();
    TESSERA_CHECK(std::isfinite(value), "reram: {} diverged at step {} (loss {}); lower the lr",
                  label, step, value);
    loss.backward();
    if (before_update) before_update();
    optimizer.step();
    loss_sum += value;
    bar.update();
    bar.set_postfix(fmt::format("loss {:.3f}", loss_sum / static_cast<double>(step + 1)));
    if ((step + 1) % 100 == 0 || step + 1 == steps) {
      log::info("{}: step {}/{}, mean loss {:.3f}", label, step + 1, steps,
                loss_sum / static_cast<double>(step + 1));
    }
  }
  bar.finish();
  model->eval();
}

}  // namespace

void FineTuneOptions::validate() const {
  TESSERA_CHECK(steps >= 0, "fine-tune steps must be >= 0, got {}", steps);
  TESSERA_CHECK(batch_size > 0, "fine-tune batch size must be positive, got {}", batch_size);
  TESSERA_CHECK(lr > 0 && std::isfinite(lr), "fine-tune lr must be positive, got {}", lr);
  TESSERA_CHECK(momentum >= 0 && momentum < 1, "fine-tune momentum must be in [0, 1), got {}",
                momentum);
  TESSERA_CHECK(weight_decay >= 0, "fine-tune weight decay must be >= 0, got {}", weight_decay);
}

std::string FineTuneOptions::describe() const {
  if (steps == 0) return "none";
  return fmt::format("STE, {} steps, batch {}, SGD lr {} cosine, momentum {}, wd {}", steps,
                     batch_size, lr, momentum, weight_decay);
}

models::Model fine_tune_quantized(models::Model& model, int bits, const BitSparseOptions* quantizer,
                                  const data::Dataset& train_set, const FineTuneOptions& options) {
  options.validate();
  models::Model copy = models::clone(model);
  if (options.steps == 0) {
    copy->eval();
    return copy;
  }
  const workload::Workload w = copy->workload();
  const auto params = quantized_parameters(copy);
  std::vector<torch::Tensor> masters(params.size());
  // Straight-through estimator: forward/backward at the quantized weights, update the floats.
  auto quantize_in_place = [&]() {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) masters[i] = params[i].second.detach().clone();
    std::vector<quant::QuantizedTensor> q = quantize_model(copy, w, bits);
    if (quantizer != nullptr) q = bit_sparse_all(w, q, *quantizer);
    quant::load_into_module(q, *copy);
  };
  auto restore_masters = [&]() {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) params[i].second.copy_(masters[i]);
  };
  const std::string label = fmt::format(
      "fine-tune {} {}", copy->config().name,
      quantizer != nullptr ? "bit-sparse " + quantizer->describe() : fmt::format("{}-bit", bits));
  run_sgd(copy, train_set, options.steps, options.batch_size, options.lr, options.momentum,
          options.weight_decay, /*warmup=*/0, options.seed, label, quantize_in_place,
          restore_masters);
  return copy;
}

void recalibrate_batch_norm(models::Model& model, const data::Dataset& train_set,
                            int64_t max_images) {
  std::vector<torch::nn::BatchNorm2dImpl*> norms;
  for (auto& m : model->modules(/*include_self=*/false)) {
    if (auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(m.get())) norms.push_back(bn);
  }
  if (norms.empty()) return;
  torch::NoGradGuard no_grad;
  std::vector<c10::optional<double>> momenta;
  for (auto* bn : norms) {
    momenta.push_back(bn->options.momentum());
    bn->reset_running_stats();
    bn->options.momentum(c10::nullopt);  // cumulative moving average
  }
  model->train();
  const int64_t n = std::min(max_images, train_set.size());
  for (int64_t begin = 0; begin < n; begin += 256) {
    model->forward(train_set.images.slice(0, begin, std::min(n, begin + 256)));
  }
  for (size_t i = 0; i < norms.size(); ++i) norms[i]->options.momentum(momenta[i]);
  model->eval();
}

bool at_chance(double accuracy, int64_t num_classes, double margin) {
  TESSERA_CHECK(num_classes >= 2, "at_chance: num_classes = {} must be >= 2", num_classes);
  return accuracy < 1.0 / static_cast<double>(num_classes) + margin;
}

models::Model train_fashion_model(const DonorTraining& options, const data::Dataset& train_set,
                                  const data::Dataset* test_set) {
  models::ModelConfig config;
  config.name = options.arch;
  config.in_channels = 1;
  config.image_size = options.image_size;
  config.num_classes = 10;
  config.width_mult = options.width_mult;
  config.extra = options.extra;
  models::Model model = models::create(config);
  TESSERA_CHECK(options.epochs > 0 && options.batch_size > 0 && options.lr > 0,
                "reram: donor training needs positive epochs, batch size and lr (got {}, {}, {})",
                options.epochs, options.batch_size, options.lr);
  const data::Dataset subset = options.train_images > 0 && options.train_images < train_set.size()
                                   ? train_set.head(options.train_images)
                                   : train_set;
  const int64_t steps_per_epoch = (subset.size() + options.batch_size - 1) / options.batch_size;
  const int64_t steps = options.epochs * steps_per_epoch;
  run_sgd(model, subset, steps, options.batch_size, options.lr, /*momentum=*/0.9,
          /*weight_decay=*/5e-4, /*warmup=*/std::max<int64_t>(1, steps / 20), options.seed,
          "train " + options.arch);
  recalibrate_batch_norm(model, subset, 2000);
  if (test_set != nullptr) {
    log::info("{}: test accuracy {:.2f}%", options.arch,
              100 * train::evaluate(model, *test_set).accuracy);
  }
  return model;
}

}  // namespace tessera::reram
