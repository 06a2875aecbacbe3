// The vision-model base class: every model is an ordered list of units (conv+BN+ReLU, pool,
// residual block, flatten, FC, ...) so that systems can cut it at unit k (split learning), count
// its units ("server-side layers"), slice it in width (sub-nets), gate it (channel gating) or
// rewrite it (obfuscation). forward() simply runs the units in order.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <memory>
#include <string>
#include <vector>

#include "tessera/core/workload.h"

namespace tessera::models {

/// Limits checked by ModelConfig::validate() (they bound what a model file can make us allocate).
constexpr int64_t kMaxInChannels = 1024;
constexpr int64_t kMaxImageSize = 4096;
constexpr int64_t kMaxClasses = 1'000'000;
constexpr double kMaxWidthMult = 8.0;

/// What every vision model is built from. `arch` fully determines the module (see registry.h).
struct ModelConfig {
  std::string name;  ///< registry name: "vgg11_bn", "resnet20", "resnet18", "mobilenetv2", "vit"
  int64_t in_channels = 1;  ///< 1 for Fashion-MNIST, 3 for CIFAR
  int64_t image_size = 32;  ///< square input side
  int64_t num_classes = 10;
  double width_mult = 1.0;  ///< channel multiplier (VGG, ResNet, MobileNetV2)
  nlohmann::json extra = nlohmann::json::object();  ///< model-specific options (e.g. ViT depth)

  /// {"name", "in_channels", "image_size", "num_classes", "width_mult", "extra"}.
  nlohmann::json to_json() const;
  /// Validates: unknown keys, wrong types, non-positive sizes and an unknown name are errors.
  /// Only "name" is required; the other keys default to the values above. Model-specific keys
  /// in `extra` are checked when the model is built (registry create()).
  static ModelConfig from_json(const nlohmann::json& json);
  /// Throws tessera::Error naming the field if a size is non-positive or above its limit
  /// (kMax* above), width_mult is not in (0, kMaxWidthMult], `extra` is not an object, or `name`
  /// is not in the registry.
  void validate() const;
};

/// Reads the model-specific options in ModelConfig::extra. The constructor rejects keys that
/// are not in `allowed` (so typos are caught); the getters check types and return `fallback`
/// for absent keys.
class ExtraOptions {
 public:
  ExtraOptions(const ModelConfig& config, std::vector<std::string> allowed);
  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_double(const std::string& key, double fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;

 private:
  std::string model_;
  nlohmann::json extra_;
};

/// max(1, round(channels * width_mult)): the channel count of a width-scaled layer.
int64_t scale_channels(int64_t channels, double width_mult);

/// One unit. `kind` is one of: "conv" (conv+BN+ReLU), "pool", "block" (residual or inverted
/// residual block), "flatten", "fc" (linear, with ReLU/dropout if the architecture has them),
/// "patch_embed", "encoder" (transformer block), "head".
struct Unit {
  std::string name;
  std::string kind;
  torch::nn::AnyModule module;
};

class ModelImpl : public torch::nn::Module {
 public:
  explicit ModelImpl(ModelConfig config) : config_(std::move(config)) {}

  /// x: [B, C, H, W] float32 -> logits [B, num_classes].
  torch::Tensor forward(torch::Tensor x) { return forward_units(std::move(x), 0, units_.size()); }
  /// Runs units [begin, end) only: forward_units(x, 0, k) is the client side of a cut at k and
  /// forward_units(z, k, n_units()) the server side. Throws unless begin <= end <= n_units().
  torch::Tensor forward_units(torch::Tensor x, size_t begin, size_t end);

  const std::vector<Unit>& units() const { return units_; }
  size_t n_units() const { return units_.size(); }
  const ModelConfig& config() const { return config_; }

  /// Layer shapes of one forward pass for one [C, image_size, image_size] sample (inference
  /// view: dropout and flatten add no layer). Layer names are module paths, so a Conv2d or
  /// Linear layer's name + ".weight" is its parameter name (as in core/quant).
  workload::Workload workload();
  /// Output shape [C, H, W] (or [F], or [T, D] for token units) after units [0, k), for one
  /// sample, computed analytically (no forward pass). shape_after(0) is the input shape.
  std::vector<int64_t> shape_after(size_t k);

 protected:
  /// Registers the module under `name` and appends it to the unit list.
  template <typename ModuleHolder>
  void add_unit(const std::string& name, const std::string& kind, ModuleHolder module) {
    register_module(name, module.ptr());
    units_.push_back(Unit{name, kind, torch::nn::AnyModule(module)});
  }

 private:
  ModelConfig config_;
  std::vector<Unit> units_;
};
TORCH_MODULE(Model);

}  // namespace tessera::models
