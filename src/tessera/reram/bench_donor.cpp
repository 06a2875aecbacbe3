// Models as weight donors: quantize, evaluate, STE fine-tuning through train::fit, BN
// re-estimation, and the cached Fashion-MNIST donors.
#include "tessera/reram/bench_donor.h"

#include <algorithm>
#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/log.h"
#include "tessera/core/seed.h"
#include "tessera/core/timer.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "tessera/reram/sme.h"

namespace tessera::reram {
namespace {

// The conv/linear weights that core/quant quantizes (named "*weight", dim >= 2), in order.
std::vector<torch::Tensor> quantized_parameters(models::Model& model) {
  std::vector<torch::Tensor> out;
  for (const auto& item : model->named_parameters(/*recurse=*/true)) {
    const std::string& key = item.key();
    if (item.value().dim() >= 2 && key.size() >= 6 &&
        key.compare(key.size() - 6, 6, "weight") == 0) {
      out.push_back(item.value());
    }
  }
  return out;
}

}  // namespace

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
  for (const torch::Tensor& w : quantized_parameters(model)) {
    donor.weights.push_back(w.detach().clone());
  }
  TESSERA_CHECK(donor.weights.size() == donor.layers.size(),
                "reram: donor model has {} weight tensors for {} weighted layers",
                donor.weights.size(), donor.layers.size());
  return donor;
}

double quantized_accuracy(models::Model& model, const std::vector<quant::QuantizedTensor>& weights,
                          const data::Dataset& test_set) {
  models::Model copy = models::clone(model);
  quant::load_into_module(weights, *copy);
  return train::evaluate(copy, test_set).accuracy;
}

ImagenetWeights imagenet_weights(const workload::Workload& target, models::Model& donor,
                                 const std::string& donor_name, uint64_t seed) {
  const WeightDonor d = weight_donor(donor);
  const std::string mismatch = architecture_mismatch(target, d);
  ImagenetWeights out;
  out.same_architecture = mismatch.empty();
  if (out.same_architecture) {
    out.source = fmt::format(
        "trained weights of {} ({}, same architecture: conv weights copied, stem input channels "
        "tiled, FC outputs drawn from the trained rows, seed {})",
        donor_name, donor->config().name, seed);
    out.weights = same_architecture_weights(target, d, seed);
    return out;
  }
  out.source = fmt::format(
      "trained rows of {} ({}) resampled onto the shapes (seed {}; not the same "
      "architecture: {})",
      donor_name, donor->config().name, seed, mismatch);
  out.weights = synthesize_weights(target, d, seed);
  return out;
}

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

train::TrainOptions FineTuneOptions::train_options(const std::string& progress_label) const {
  train::TrainOptions o;
  o.steps = steps;
  o.batch_size = batch_size;
  o.optimizer = "sgd";
  o.lr = lr;
  o.momentum = momentum;
  o.weight_decay = weight_decay;
  o.schedule = "cosine";
  o.per_step_schedule = true;
  o.warmup_steps = 0;
  o.augment_pad = 0;
  o.augment_flip = false;
  o.seed = seed;
  o.progress_label = progress_label;
  return o;
}

models::Model fine_tune_quantized(models::Model& model, int bits, const BitSparseOptions* quantizer,
                                  const data::Dataset& train_set, const FineTuneOptions& options) {
  WeightProjection project;
  if (quantizer != nullptr) {
    const BitSparseOptions q = *quantizer;
    project = [q](const workload::Workload& w, const std::vector<quant::QuantizedTensor>& u) {
      return bit_sparse_all(w, u, q);
    };
  }
  const std::string label = fmt::format(
      "fine-tune {} {}", model->config().name,
      quantizer != nullptr ? "bit-sparse " + quantizer->describe() : fmt::format("{}-bit", bits));
  return fine_tune_projected(model, bits, project, train_set, options, label);
}

models::Model fine_tune_projected(models::Model& model, int bits, const WeightProjection& project,
                                  const data::Dataset& train_set, const FineTuneOptions& options,
                                  const std::string& label) {
  options.validate();
  models::Model copy = models::clone(model);
  if (options.steps == 0) {
    copy->eval();
    return copy;
  }
  const workload::Workload w = copy->workload();
  const std::vector<torch::Tensor> params = quantized_parameters(copy);
  std::vector<torch::Tensor> masters(params.size());
  // Straight-through estimator: forward/backward at the quantized weights, update the floats.
  train::TrainHooks hooks;
  hooks.before_step = [&](int64_t) {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) masters[i] = params[i].detach().clone();
    std::vector<quant::QuantizedTensor> q = quantize_model(copy, w, bits);
    if (project) q = project(w, q);
    quant::load_into_module(q, *copy);
  };
  hooks.after_backward = [&](int64_t) {
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) params[i].copy_(masters[i]);
  };
  train::fit(copy, train_set, nullptr, options.train_options(label), hooks);
  return copy;
}

std::vector<torch::Tensor> fisher_sensitivity(models::Model& model, const data::Dataset& data_set,
                                              int64_t max_images, int64_t batch_size) {
  TESSERA_CHECK(max_images > 0 && batch_size > 0,
                "fisher: max_images {} and batch_size {} must be positive", max_images, batch_size);
  const bool was_training = model->is_training();
  model->eval();  // BN statistics stay the trained ones
  const std::vector<torch::Tensor> params = quantized_parameters(model);
  std::vector<torch::Tensor> fisher;
  for (const torch::Tensor& p : params) fisher.push_back(torch::zeros_like(p).detach());
  const int64_t n = std::min(max_images, data_set.size());
  int64_t batches = 0;
  for (int64_t begin = 0; begin < n; begin += batch_size, ++batches) {
    const int64_t end = std::min(n, begin + batch_size);
    model->zero_grad();
    const torch::Tensor logits = model->forward(data_set.images.slice(0, begin, end));
    torch::nn::functional::cross_entropy(logits, data_set.labels.slice(0, begin, end)).backward();
    torch::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      if (params[i].grad().defined()) fisher[i] += params[i].grad().square();
    }
  }
  model->zero_grad();
  model->train(was_training);
  for (torch::Tensor& f : fisher) f /= static_cast<double>(std::max<int64_t>(batches, 1));
  return fisher;
}

std::vector<uint8_t> correct_images(models::Model& model,
                                    const std::vector<quant::QuantizedTensor>& weights,
                                    const data::Dataset& data_set) {
  models::Model copy = models::clone(model);
  quant::load_into_module(weights, *copy);
  copy->eval();
  torch::NoGradGuard no_grad;
  std::vector<uint8_t> out;
  for (int64_t begin = 0; begin < data_set.size(); begin += 512) {
    const int64_t end = std::min(data_set.size(), begin + 512);
    const torch::Tensor hit = (copy->forward(data_set.images.slice(0, begin, end)).argmax(1) ==
                               data_set.labels.slice(0, begin, end))
                                  .to(torch::kUInt8)
                                  .contiguous();
    out.insert(out.end(), hit.data_ptr<uint8_t>(), hit.data_ptr<uint8_t>() + hit.numel());
  }
  return out;
}

PairedDrop paired_drop(const std::vector<uint8_t>& reference, const std::vector<uint8_t>& other) {
  TESSERA_CHECK(reference.size() == other.size() && !reference.empty(),
                "paired_drop: {} and {} images", reference.size(), other.size());
  const double n = static_cast<double>(reference.size());
  double sum = 0, sum2 = 0;
  for (size_t i = 0; i < reference.size(); ++i) {
    const double d = static_cast<double>(reference[i]) - static_cast<double>(other[i]);
    sum += d;
    sum2 += d * d;
  }
  const double mean = sum / n;
  const double var = n > 1 ? (sum2 - n * mean * mean) / (n - 1) : 0.0;
  return {100 * mean, 100 * std::sqrt(std::max(var, 0.0) / n), static_cast<int64_t>(n)};
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

data::Dataset load_fashion_mnist_at(const std::string& split, const std::string& dir,
                                    int64_t image_size) {
  TESSERA_CHECK(image_size >= 4 && image_size <= 1024,
                "reram: Fashion-MNIST image size {} must be in [4, 1024]", image_size);
  const std::string from = dir.empty() ? std::string(data::kFashionMnistDir) : dir;
  if (image_size >= 28) return data::load_fashion_mnist(split, from, image_size);
  data::Dataset d = data::load_fashion_mnist(split, from, 28);
  d.images = torch::adaptive_avg_pool2d(d.images, {image_size, image_size}).contiguous();
  return d;
}

ImageLoader fashion_mnist_loader(const std::string& dir) {
  return [dir](const std::string& split, int64_t image_size) {
    return load_fashion_mnist_at(split, dir, image_size);
  };
}

void DonorTraining::validate() const {
  TESSERA_CHECK(epochs > 0, "donor training: epochs must be positive, got {}", epochs);
  TESSERA_CHECK(batch_size > 0, "donor training: batch size must be positive, got {}", batch_size);
  TESSERA_CHECK(lr > 0 && std::isfinite(lr), "donor training: lr must be positive, got {}", lr);
  TESSERA_CHECK(train_images >= 0, "donor training: train images must be >= 0, got {}",
                train_images);
}

models::ModelConfig DonorTraining::model_config() const {
  models::ModelConfig config;
  config.name = arch;
  config.in_channels = 1;
  config.image_size = image_size;
  config.num_classes = 10;
  config.width_mult = width_mult;
  config.extra = extra;
  return config;
}

train::TrainOptions DonorTraining::train_options(int64_t available_images) const {
  validate();
  const int64_t n = train_images > 0 ? std::min(train_images, available_images) : available_images;
  TESSERA_CHECK(n > 0, "donor training: no training images");
  const int64_t steps = epochs * ((n + batch_size - 1) / batch_size);
  train::TrainOptions o;
  o.steps = steps;
  o.batch_size = batch_size;
  o.optimizer = "sgd";
  o.lr = lr;
  o.momentum = 0.9;
  o.weight_decay = 5e-4;
  o.schedule = "cosine";
  o.per_step_schedule = true;
  o.warmup_steps = std::max<int64_t>(1, steps / 20);
  o.augment_pad = 0;
  o.augment_flip = false;
  o.seed = seed;
  o.progress_label = "train " + arch;
  return o;
}

train::TrainRecipe DonorTraining::recipe(int64_t available_images) const {
  train::TrainRecipe r;
  r.arch = model_config();
  r.options = train_options(available_images);
  r.data = data;
  r.train_images = train_images;
  r.extra = {{"bn_recalibration", kDonorBatchNormImages}};
  return r;
}

models::Model train_fashion_model(const DonorTraining& options, const data::Dataset& train_set,
                                  const data::Dataset* test_set) {
  const train::TrainOptions fit_options = options.train_options(train_set.size());
  seed_everything(options.seed);
  models::Model model = models::create(options.model_config());
  const data::Dataset subset = options.train_images > 0 && options.train_images < train_set.size()
                                   ? train_set.head(options.train_images)
                                   : train_set;
  train::fit(model, subset, nullptr, fit_options);
  recalibrate_batch_norm(model, subset, kDonorBatchNormImages);
  if (test_set != nullptr) {
    log::info("{}: test accuracy {:.2f}%", options.arch,
              100 * train::evaluate(model, *test_set).accuracy);
  }
  return model;
}

Donor load_or_train_donor(const std::string& file, const DonorTraining& options,
                          const data::Dataset& train_set) {
  Donor donor;
  if (!file.empty()) {
    donor.provenance = "loaded " + file;
    donor.model = models::load(file);
    donor.model->eval();
    return donor;
  }
  const train::TrainRecipe recipe = options.recipe(train_set.size());
  const std::string path = train::cached_path(recipe);
  const bool cached = file_exists(path);
  const Timer timer;
  const int64_t n_images = options.train_images > 0
                               ? std::min(options.train_images, train_set.size())
                               : train_set.size();
  donor.model = train::cached_model(recipe, [&] {
    log::info("training {} on {} images at {}x{}, {} epochs", options.arch, n_images,
              options.image_size, options.image_size, options.epochs);
    return train_fashion_model(options, train_set, nullptr);
  });
  donor.provenance = cached ? "model cache: " + path
                            : fmt::format("trained here ({:.0f} s), saved {}", timer.elapsed_s(),
                                          train::cached_path(recipe));
  return donor;
}

}  // namespace tessera::reram
