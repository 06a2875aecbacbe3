// ModelConfig (JSON with validation), ExtraOptions, and the unit machinery of ModelImpl:
// running a range of units, and the analytic shapes and workload of a forward pass.
#include "tessera/models/model.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "tessera/core/error.h"
#include "tessera/models/describe.h"
#include "tessera/models/registry.h"

namespace tessera::models {

namespace {

const std::vector<std::string> kConfigKeys = {"name",        "in_channels", "image_size",
                                              "num_classes", "width_mult",  "extra"};

int64_t read_size(const nlohmann::json& json, const std::string& key, int64_t fallback) {
  if (!json.contains(key)) return fallback;
  const auto& value = json.at(key);
  TESSERA_CHECK(value.is_number_integer(), "model config '{}' must be an integer, got {}", key,
                value.dump());
  return value.get<int64_t>();
}

}  // namespace

nlohmann::json ModelConfig::to_json() const {
  return nlohmann::json{{"name", name},
                        {"in_channels", in_channels},
                        {"image_size", image_size},
                        {"num_classes", num_classes},
                        {"width_mult", width_mult},
                        {"extra", extra}};
}

ModelConfig ModelConfig::from_json(const nlohmann::json& json) {
  TESSERA_CHECK(json.is_object(), "model config must be a JSON object, got {}", json.dump());
  for (const auto& item : json.items()) {
    TESSERA_CHECK(
        std::find(kConfigKeys.begin(), kConfigKeys.end(), item.key()) != kConfigKeys.end(),
        "unknown model config key '{}' (known: {})", item.key(), fmt::join(kConfigKeys, ", "));
  }
  TESSERA_CHECK(json.contains("name"), "model config has no 'name'");
  TESSERA_CHECK(json.at("name").is_string(), "model config 'name' must be a string, got {}",
                json.at("name").dump());
  ModelConfig config;
  config.name = json.at("name").get<std::string>();
  config.in_channels = read_size(json, "in_channels", config.in_channels);
  config.image_size = read_size(json, "image_size", config.image_size);
  config.num_classes = read_size(json, "num_classes", config.num_classes);
  if (json.contains("width_mult")) {
    const auto& value = json.at("width_mult");
    TESSERA_CHECK(value.is_number(), "model config 'width_mult' must be a number, got {}",
                  value.dump());
    config.width_mult = value.get<double>();
  }
  if (json.contains("extra")) config.extra = json.at("extra");
  config.validate();
  return config;
}

void ModelConfig::validate() const {
  // Upper bounds keep a hostile model file from making us allocate a gigantic model.
  TESSERA_CHECK(in_channels > 0 && in_channels <= kMaxInChannels,
                "model in_channels must be in [1, {}], got {}", kMaxInChannels, in_channels);
  TESSERA_CHECK(image_size > 0 && image_size <= kMaxImageSize,
                "model image_size must be in [1, {}], got {}", kMaxImageSize, image_size);
  TESSERA_CHECK(num_classes > 0 && num_classes <= kMaxClasses,
                "model num_classes must be in [1, {}], got {}", kMaxClasses, num_classes);
  TESSERA_CHECK(std::isfinite(width_mult) && width_mult > 0 && width_mult <= kMaxWidthMult,
                "model width_mult must be in (0, {}], got {}", kMaxWidthMult, width_mult);
  TESSERA_CHECK(extra.is_object(), "model config 'extra' must be a JSON object, got {}",
                extra.dump());
  const auto known = list_models();
  const bool found = std::any_of(known.begin(), known.end(),
                                 [&](const ModelInfo& info) { return info.name == name; });
  TESSERA_CHECK(found, "unknown model '{}' (known: {})", name, known_model_names());
}

ExtraOptions::ExtraOptions(const ModelConfig& config, std::vector<std::string> allowed)
    : model_(config.name), extra_(config.extra) {
  TESSERA_CHECK(extra_.is_object(), "model '{}': 'extra' must be a JSON object, got {}", model_,
                extra_.dump());
  for (const auto& item : extra_.items()) {
    TESSERA_CHECK(
        std::find(allowed.begin(), allowed.end(), item.key()) != allowed.end(),
        "model '{}' has no option '{}' (options: {})", model_, item.key(),
        allowed.empty() ? std::string("none") : fmt::format("{}", fmt::join(allowed, ", ")));
  }
}

int64_t ExtraOptions::get_int(const std::string& key, int64_t fallback) const {
  if (!extra_.contains(key)) return fallback;
  const auto& value = extra_.at(key);
  TESSERA_CHECK(value.is_number_integer(), "model '{}' option '{}' must be an integer, got {}",
                model_, key, value.dump());
  return value.get<int64_t>();
}

double ExtraOptions::get_double(const std::string& key, double fallback) const {
  if (!extra_.contains(key)) return fallback;
  const auto& value = extra_.at(key);
  TESSERA_CHECK(value.is_number(), "model '{}' option '{}' must be a number, got {}", model_, key,
                value.dump());
  return value.get<double>();
}

std::string ExtraOptions::get_string(const std::string& key, const std::string& fallback) const {
  if (!extra_.contains(key)) return fallback;
  const auto& value = extra_.at(key);
  TESSERA_CHECK(value.is_string(), "model '{}' option '{}' must be a string, got {}", model_, key,
                value.dump());
  return value.get<std::string>();
}

int64_t scale_channels(int64_t channels, double width_mult) {
  return std::max<int64_t>(1, std::llround(static_cast<double>(channels) * width_mult));
}

torch::Tensor ModelImpl::forward_units(torch::Tensor x, size_t begin, size_t end) {
  TESSERA_CHECK(begin <= end && end <= units_.size(),
                "unit range [{}, {}) is outside model '{}' with {} units", begin, end, config_.name,
                units_.size());
  for (size_t i = begin; i < end; ++i) x = units_[i].module.forward(std::move(x));
  return x;
}

std::vector<int64_t> ModelImpl::shape_after(size_t k) {
  TESSERA_CHECK(k <= units_.size(), "shape_after({}) is outside model '{}' with {} units", k,
                config_.name, units_.size());
  SampleShape shape = {config_.in_channels, config_.image_size, config_.image_size};
  std::vector<workload::Layer> ignored;
  for (size_t i = 0; i < k; ++i) {
    shape = describe_module(units_[i].name, *units_[i].module.ptr(), shape, ignored);
  }
  return shape;
}

workload::Workload ModelImpl::workload() {
  workload::Workload result;
  result.model = config_.name;
  result.input_shape = {config_.in_channels, config_.image_size, config_.image_size};
  SampleShape shape = result.input_shape;
  for (const auto& unit : units_) {
    shape = describe_module(unit.name, *unit.module.ptr(), shape, result.layers);
  }
  TESSERA_CHECK(shape.size() == 1 && shape[0] == config_.num_classes,
                "model '{}' ends in shape {}, expected [{}]", config_.name, shape_string(shape),
                config_.num_classes);
  result.validate();
  return result;
}

}  // namespace tessera::models
