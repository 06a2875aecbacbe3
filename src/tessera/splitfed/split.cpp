// Cutting a model into client and server sides, and the FedAvg state helpers (see split.h).
#include "tessera/splitfed/split.h"

#include <fmt/ranges.h>

#include <cmath>

#include "tessera/core/error.h"
#include "tessera/models/registry.h"
#include "tessera/models/torchscript.h"

namespace tessera::splitfed {
namespace {

bool counted(const std::string& kind, LayerConvention convention) {
  if (kind == "conv" || kind == "block" || kind == "fc" || kind == "encoder" || kind == "head" ||
      kind == "patch_embed") {
    return true;
  }
  return convention == LayerConvention::units && kind == "pool";
}

}  // namespace

nlohmann::json SplitOptions::to_json() const {
  return {{"cut", cut},
          {"bottleneck_channels", bottleneck_channels},
          {"bottleneck_stride", bottleneck_stride}};
}

SplitOptions SplitOptions::from_json(const nlohmann::json& json) {
  TESSERA_CHECK(json.is_object(), "split options must be a JSON object");
  SplitOptions options;
  for (const auto& [key, value] : json.items()) {
    TESSERA_CHECK(value.is_number_integer(), "split option '{}' must be an integer", key);
    if (key == "cut") {
      options.cut = value.get<int64_t>();
    } else if (key == "bottleneck_channels") {
      options.bottleneck_channels = value.get<int64_t>();
    } else if (key == "bottleneck_stride") {
      options.bottleneck_stride = value.get<int64_t>();
    } else {
      TESSERA_CHECK(false, "unknown split option '{}'", key);
    }
  }
  return options;
}

ClientSideImpl::ClientSideImpl(models::Model model, const SplitOptions& options)
    : model_(std::move(model)), options_(options) {
  models::require_units(model_, "split learning");
  const auto n = static_cast<int64_t>(model_->n_units());
  TESSERA_CHECK(options_.cut >= 1 && options_.cut < n,
                "cut {} does not exist in model '{}' (valid cuts: 1..{})", options_.cut,
                model_->config().name, n - 1);
  TESSERA_CHECK(options_.bottleneck_channels >= 0, "bottleneck channels {} must be >= 0",
                options_.bottleneck_channels);
  TESSERA_CHECK(options_.bottleneck_stride == 1 || options_.bottleneck_stride == 2,
                "bottleneck stride {} must be 1 or 2", options_.bottleneck_stride);
  for (int64_t i = 0; i < options_.cut; ++i) {
    const auto& unit = model_->units()[i];
    register_module(unit.name, unit.module.ptr());
  }
  smashed_shape_ = model_->shape_after(options_.cut);
  if (options_.bottleneck_channels > 0) {
    TESSERA_CHECK(smashed_shape_.size() == 3, "a bottleneck needs an image cut; cut {} gives {}",
                  options_.cut, fmt::join(smashed_shape_, "x"));
    const int64_t c_cut = smashed_shape_[0];
    bottleneck_ = register_module(
        "bottleneck_encoder",
        torch::nn::Conv2d(torch::nn::Conv2dOptions(c_cut, options_.bottleneck_channels, 3)
                              .stride(options_.bottleneck_stride)
                              .padding(1)));
    const int64_t s = options_.bottleneck_stride;
    smashed_shape_ = {options_.bottleneck_channels, (smashed_shape_[1] + s - 1) / s,
                      (smashed_shape_[2] + s - 1) / s};
  }
}

torch::Tensor ClientSideImpl::forward(const torch::Tensor& x) {
  torch::Tensor z = model_->forward_units(x, 0, static_cast<size_t>(options_.cut));
  if (!bottleneck_.is_empty()) z = bottleneck_->forward(z);  // no ReLU (norelu_C{c}S{s})
  return z;
}

ServerSideImpl::ServerSideImpl(models::Model model, const SplitOptions& options)
    : model_(std::move(model)), options_(options) {
  models::require_units(model_, "split learning");
  const auto n = static_cast<int64_t>(model_->n_units());
  TESSERA_CHECK(options_.cut >= 1 && options_.cut < n,
                "cut {} does not exist in model '{}' (valid cuts: 1..{})", options_.cut,
                model_->config().name, n - 1);
  if (options_.bottleneck_channels > 0) {
    const std::vector<int64_t> shape = model_->shape_after(options_.cut);
    TESSERA_CHECK(shape.size() == 3, "a bottleneck needs an image cut; cut {} gives {}",
                  options_.cut, fmt::join(shape, "x"));
    const int64_t c = options_.bottleneck_channels;
    if (options_.bottleneck_stride == 1) {
      decoder_ = torch::nn::AnyModule(
          torch::nn::Conv2d(torch::nn::Conv2dOptions(c, shape[0], 3).padding(1)));
    } else {
      // output_padding restores even sides exactly: (H/2 - 1) * 2 - 2 + 3 + 1 = H.
      decoder_ = torch::nn::AnyModule(
          torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(c, shape[0], 3)
                                         .stride(2)
                                         .padding(1)
                                         .output_padding(shape[1] % 2 == 0 ? 1 : 0)));
    }
    register_module("bottleneck_decoder", decoder_.ptr());
  }
  for (int64_t i = options_.cut; i < n; ++i) {
    const auto& unit = model_->units()[i];
    register_module(unit.name, unit.module.ptr());
  }
  num_classes_ = model_->config().num_classes;
}

torch::Tensor ServerSideImpl::forward(const torch::Tensor& z) {
  torch::Tensor h = z;
  if (!decoder_.is_empty()) h = decoder_.forward(h);
  return model_->forward_units(h, static_cast<size_t>(options_.cut), model_->n_units());
}

std::pair<ClientSide, ServerSide> make_split(const models::ModelConfig& config,
                                             const SplitOptions& options) {
  // Two fresh models: the client registers units [0, k) of one, the server [k, n) of the other,
  // so the sides never share storage.
  return {ClientSide(models::create(config), options), ServerSide(models::create(config), options)};
}

LayerConvention parse_layer_convention(const std::string& name) {
  if (name == "weights") return LayerConvention::weights;
  if (name == "units") return LayerConvention::units;
  TESSERA_CHECK(false, "unknown server-layer convention '{}' (weights, units)", name);
  return LayerConvention::weights;
}

std::string layer_convention_name(LayerConvention convention) {
  return convention == LayerConvention::units ? "units" : "weights";
}

int64_t cut_for_server_layers(models::Model& model, int64_t n_layers, LayerConvention convention) {
  const auto& units = model->units();
  int64_t count = 0;
  for (int64_t k = static_cast<int64_t>(units.size()) - 1; k >= 1; --k) {
    if (!counted(units[k].kind, convention)) continue;
    if (++count == n_layers) return k;
  }
  TESSERA_CHECK(false,
                "{} server-side layers ({} convention) is not possible in model '{}': it has {} "
                "such layers after the first unit",
                n_layers, layer_convention_name(convention), model->config().name, count);
  return 0;
}

int64_t server_layers_of_cut(models::Model& model, int64_t cut, LayerConvention convention) {
  const auto& units = model->units();
  TESSERA_CHECK(cut >= 1 && cut < static_cast<int64_t>(units.size()),
                "cut {} does not exist in model '{}'", cut, model->config().name);
  int64_t count = 0;
  for (size_t k = static_cast<size_t>(cut); k < units.size(); ++k) {
    if (counted(units[k].kind, convention)) ++count;
  }
  return count;
}

State get_state(const torch::nn::Module& module) {
  State state;
  for (const auto& item : module.named_parameters()) {
    state.emplace_back(item.key(), item.value().detach().clone());
  }
  for (const auto& item : module.named_buffers()) {
    state.emplace_back(item.key(), item.value().detach().clone());
  }
  return state;
}

void load_state(torch::nn::Module& module, const State& state) {
  torch::NoGradGuard no_grad;
  auto params = module.named_parameters();
  auto buffers = module.named_buffers();
  TESSERA_CHECK(state.size() == params.size() + buffers.size(),
                "state has {} tensors but the module has {} parameters and buffers", state.size(),
                params.size() + buffers.size());
  for (const auto& [name, value] : state) {
    torch::Tensor* target = params.find(name);
    if (target == nullptr) target = buffers.find(name);
    TESSERA_CHECK(target != nullptr, "state tensor '{}' is not in the module", name);
    TESSERA_CHECK(target->sizes() == value.sizes() && target->scalar_type() == value.scalar_type(),
                  "state tensor '{}': {} {} but the module has {} {}", name,
                  fmt::join(value.sizes(), "x"), c10::toString(value.scalar_type()),
                  fmt::join(target->sizes(), "x"), c10::toString(target->scalar_type()));
    target->copy_(value);
  }
}

State average_states(const std::vector<State>& states) {
  TESSERA_CHECK(!states.empty(), "cannot average zero client states");
  State mean;
  for (size_t i = 0; i < states[0].size(); ++i) {
    const auto& [name, first] = states[0][i];
    torch::Tensor sum = first.to(torch::kFloat64).clone();
    for (size_t s = 1; s < states.size(); ++s) {
      TESSERA_CHECK(states[s].size() == states[0].size() && states[s][i].first == name &&
                        states[s][i].second.sizes() == first.sizes(),
                    "client state {} does not match client state 0 at tensor '{}'", s, name);
      sum += states[s][i].second.to(torch::kFloat64);
    }
    sum /= static_cast<double>(states.size());
    if (!first.is_floating_point()) sum = sum.round();
    mean.emplace_back(name, sum.to(first.scalar_type()));
  }
  return mean;
}

void xavier_init(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (auto& child : module.modules(/*include_self=*/true)) {
    if (auto* conv = child->as<torch::nn::Conv2d>()) {
      torch::nn::init::xavier_uniform_(conv->weight);
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* linear = child->as<torch::nn::Linear>()) {
      torch::nn::init::xavier_uniform_(linear->weight);
      if (linear->bias.defined()) linear->bias.zero_();
    } else if (auto* deconv = child->as<torch::nn::ConvTranspose2d>()) {
      torch::nn::init::xavier_uniform_(deconv->weight);
      if (deconv->bias.defined()) deconv->bias.zero_();
    } else if (auto* bn = child->as<torch::nn::BatchNorm2d>()) {
      if (bn->weight.defined()) bn->weight.fill_(1.0);
      if (bn->bias.defined()) bn->bias.zero_();
    }
  }
}

}  // namespace tessera::splitfed
