// Quantized models: integer weights as the source of truth, mirrored into the float module.
#include "tessera/bitflip/quantized_model.h"

#include <nlohmann/json.hpp>

#include "tessera/core/error.h"
#include "tessera/core/json.h"
#include "tessera/core/limits.h"
#include "tessera/core/safetensors.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "tessera/models/tensor_checks.h"
#include "tessera/models/torchscript.h"

namespace tessera::bitflip {

namespace {

constexpr const char* kQuantKey = "tessera.bitflip";

/// Every parameter and buffer of the module by name (parameters first).
std::vector<std::pair<std::string, torch::Tensor>> module_state(torch::nn::Module& module) {
  std::vector<std::pair<std::string, torch::Tensor>> state;
  for (const auto& item : module.named_parameters(/*recurse=*/true))
    state.emplace_back(item.key(), item.value());
  for (const auto& item : module.named_buffers(/*recurse=*/true))
    state.emplace_back(item.key(), item.value());
  return state;
}

}  // namespace

int64_t QuantizedModel::n_weights() const {
  int64_t n = 0;
  for (const auto& w : weights) n += w.numel();
  return n;
}

size_t QuantizedModel::layer_index(const std::string& name) const {
  for (size_t l = 0; l < weights.size(); ++l) {
    if (weights[l].name == name) return l;
  }
  TESSERA_CHECK(false, "the model has no quantized layer named '{}'", name);
  return 0;
}

torch::Tensor QuantizedModel::parameter(size_t layer) const {
  TESSERA_CHECK(layer < weights.size(), "layer index {} out of range ({} quantized layers)", layer,
                weights.size());
  // named_parameters() builds a temporary dictionary: copy the handle out, never a reference.
  const auto params = model->named_parameters(/*recurse=*/true);
  const torch::Tensor* param = params.find(weights[layer].name);
  TESSERA_CHECK(param != nullptr, "module has no parameter named '{}'", weights[layer].name);
  return *param;
}

void QuantizedModel::sync() { quant::load_into_module(weights, *model); }

void QuantizedModel::sync_layer(size_t layer) {
  torch::Tensor param = parameter(layer);
  torch::NoGradGuard no_grad;
  param.copy_(weights[layer].dequantize().to(param.dtype()));
}

void QuantizedModel::sync_element(size_t layer, int64_t index) {
  torch::Tensor param = parameter(layer);
  const auto& q = weights[layer];
  TESSERA_CHECK(index >= 0 && index < q.numel(), "element {} out of range for layer '{}' ({})",
                index, q.name, q.numel());
  TESSERA_CHECK(param.scalar_type() == torch::kFloat32 && param.is_contiguous(),
                "parameter '{}' must be contiguous float32", q.name);
  // Same arithmetic as QuantizedTensor::dequantize (double product, one cast to float).
  const double value = static_cast<double>(q.values.data_ptr<int32_t>()[index]) * q.step;
  param.data_ptr<float>()[index] = static_cast<float>(value);
}

QuantizedModel QuantizedModel::clone() const {
  QuantizedModel copy;
  copy.bits = bits;
  models::Model source = model;
  copy.model = models::clone(source);
  for (const auto& w : weights) {
    quant::QuantizedTensor q = w;
    q.values = w.values.clone();
    copy.weights.push_back(std::move(q));
  }
  copy.model->eval();
  return copy;
}

torch::Tensor QuantizedModel::predict(const torch::Tensor& images) {
  torch::NoGradGuard no_grad;
  model->eval();
  return model->forward(images);
}

QuantizedModel quantize_model(models::Model model, int bits) {
  TESSERA_CHECK(model, "quantize_model: the model is empty");
  QuantizedModel qm;
  qm.model = std::move(model);
  qm.bits = bits;
  qm.weights = quant::quantize_module(*qm.model, bits);
  TESSERA_CHECK(!qm.weights.empty(), "model '{}' has no conv or linear weights to quantize",
                qm.model->config().name);
  qm.sync();
  qm.model->eval();
  return qm;
}

void save_quantized(const std::string& path, const QuantizedModel& qm) {
  if (models::is_imported(qm.model)) {
    // TorchScript has no integer weights: it stores the dequantized ones (flips included), and
    // tessera.json the steps that recover the integers exactly.
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& w : qm.weights) layers.push_back({{"name", w.name}, {"step", w.step}});
    return models::save_torchscript(path, qm.model,
                                    {{kQuantKey, {{"bits", qm.bits}, {"layers", layers}}}});
  }
  safetensors::File file;
  file.metadata[models::kArchKey] = qm.model->config().to_json().dump();
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& w : qm.weights) layers.push_back({{"name", w.name}, {"step", w.step}});
  file.metadata[kQuantKey] =
      nlohmann::json{{"format", 1}, {"bits", qm.bits}, {"layers", layers}}.dump();
  for (const auto& [name, tensor] : module_state(*qm.model.ptr())) {
    bool quantized = false;
    for (const auto& w : qm.weights) {
      if (w.name == name) {
        file.tensors.emplace_back(name, w.values.contiguous());
        quantized = true;
        break;
      }
    }
    if (!quantized) file.tensors.emplace_back(name, tensor.detach().contiguous());
  }
  safetensors::save(path, file);
}

namespace {

// A TorchScript file: quantized to `bits`, or with the steps save_quantized stored, whose
// integers w / step are exact (w was written as float(q * step)).
QuantizedModel load_quantized_torchscript(const std::string& path, int bits) {
  models::Model model = models::load_torchscript(path);
  const nlohmann::json& meta = models::torchscript_metadata(model);
  if (!meta.contains(kQuantKey)) return quantize_model(model, bits);
  const nlohmann::json& q = meta.at(kQuantKey);
  TESSERA_CHECK(q.is_object() && q.contains("bits") && q.at("bits").is_number_integer() &&
                    q.contains("layers") && q.at("layers").is_array(),
                "'{}': bad '{}' entry in its tessera.json", path, kQuantKey);
  QuantizedModel qm;
  qm.model = model;
  qm.bits = q.at("bits").get<int>();
  TESSERA_CHECK(qm.bits >= 2 && qm.bits <= 16, "'{}': bits {} not in [2, 16]", path, qm.bits);
  qm.weights = quant::quantize_module(*qm.model, qm.bits);  // names and order; values follow
  TESSERA_CHECK(q.at("layers").size() == qm.weights.size(),
                "'{}': '{}' lists {} layers, the model has {}", path, kQuantKey,
                q.at("layers").size(), qm.weights.size());
  torch::NoGradGuard no_grad;
  for (size_t l = 0; l < qm.weights.size(); ++l) {
    const auto& layer = q.at("layers")[l];
    auto& w = qm.weights[l];
    TESSERA_CHECK(layer.is_object() && layer.value("name", "") == w.name &&
                      layer.contains("step") && layer.at("step").is_number() &&
                      layer.at("step").get<double>() > 0,
                  "'{}': layer {} of '{}' does not describe '{}'", path, l, kQuantKey, w.name);
    w.step = layer.at("step").get<double>();
    w.bits = qm.bits;
    w.values = (qm.parameter(l).to(torch::kFloat64) / w.step).round().to(torch::kInt32);
    const int64_t limit = int64_t{1} << (qm.bits - 1);
    TESSERA_CHECK(
        w.values.numel() == 0 ||
            (w.values.min().item<int64_t>() >= -limit && w.values.max().item<int64_t>() < limit),
        "'{}': weight '{}' does not fit {} bits at step {}", path, w.name, qm.bits, w.step);
  }
  qm.sync();
  qm.model->eval();
  return qm;
}

}  // namespace

QuantizedModel load_quantized(const std::string& path, int bits) {
  if (models::is_torchscript_file(path)) return load_quantized_torchscript(path, bits);
  safetensors::File file = safetensors::load(path);
  auto quant_meta = file.metadata.find(kQuantKey);
  if (quant_meta == file.metadata.end()) {
    // A float Tessera model: quantize it here.
    return quantize_model(models::load(path), bits);
  }
  auto arch = file.metadata.find(models::kArchKey);
  TESSERA_CHECK(arch != file.metadata.end(), "quantized model file '{}' has no '{}' metadata", path,
                models::kArchKey);
  const std::string what = fmt::format("quantized model file '{}'", path);
  nlohmann::json meta =
      parse_json(quant_meta->second, fmt::format("{}: '{}' metadata", what, kQuantKey));
  TESSERA_CHECK(meta.is_object() && meta.contains("format") && meta["format"].is_number_integer() &&
                    meta["format"] == 1 && meta.contains("layers") && meta["layers"].is_array() &&
                    meta.contains("bits"),
                "{}: unsupported '{}' metadata", what, kQuantKey);
  QuantizedModel qm;
  qm.bits = static_cast<int>(json_integer(meta["bits"], what + ": bits", 2, 16));
  const auto config = models::ModelConfig::from_json(
      parse_json(arch->second, fmt::format("{}: '{}' metadata", what, models::kArchKey)));
  uint64_t file_bytes = 0;
  for (const auto& [name, tensor] : file.tensors) {
    models::check_tensor_values(path, name, tensor);
    file_bytes += tensor.nbytes();
  }
  {
    // As in models::load: the file's tensors bound what the architecture may allocate.
    AllocationBudget budget(4 * file_bytes + kBuildSlackBytes, what);
    qm.model = models::create(config);
  }
  std::map<std::string, double> steps;
  for (const auto& layer : meta["layers"]) {
    TESSERA_CHECK(layer.is_object() && layer.contains("name") && layer["name"].is_string() &&
                      layer.contains("step") && layer["step"].is_number(),
                  "{}: layer entry {} needs a string 'name' and a number 'step'", what,
                  json_excerpt(layer));
    const auto inserted =
        steps.emplace(layer["name"].get<std::string>(), layer["step"].get<double>()).second;
    TESSERA_CHECK(inserted, "{}: layer '{}' is listed twice", what,
                  layer["name"].get<std::string>());
  }
  const int32_t lowest = -(int32_t{1} << (qm.bits - 1));
  const int32_t highest = (int32_t{1} << (qm.bits - 1)) - 1;
  torch::NoGradGuard no_grad;
  for (auto& [name, tensor] : module_state(*qm.model)) {
    const torch::Tensor& stored = file.at(name);
    TESSERA_CHECK(stored.sizes() == tensor.sizes(),
                  "quantized model file '{}': tensor '{}' has shape {}, the model expects {}", path,
                  name, c10::str(stored.sizes()), c10::str(tensor.sizes()));
    auto step = steps.find(name);
    if (step == steps.end()) {
      TESSERA_CHECK(stored.scalar_type() == tensor.scalar_type(),
                    "quantized model file '{}': tensor '{}' is stored as {}, the model expects {}",
                    path, name, c10::toString(stored.scalar_type()),
                    c10::toString(tensor.scalar_type()));
      tensor.copy_(stored);
      continue;
    }
    TESSERA_CHECK(stored.scalar_type() == torch::kInt32,
                  "quantized model file '{}': integer weight '{}' must be I32, got {}", path, name,
                  c10::toString(stored.scalar_type()));
    TESSERA_CHECK(std::isfinite(step->second) && step->second > 0,
                  "quantized model file '{}': layer '{}' has step {}", path, name, step->second);
    quant::QuantizedTensor q;
    q.name = name;
    q.bits = qm.bits;
    q.step = step->second;
    q.values = stored.contiguous().clone();
    if (q.values.numel() > 0) {
      const int64_t min_value = q.values.min().item<int64_t>();
      const int64_t max_value = q.values.max().item<int64_t>();
      TESSERA_CHECK(min_value >= lowest && max_value <= highest,
                    "quantized model file '{}': layer '{}' holds values in [{}, {}], outside "
                    "{}-bit range [{}, {}]",
                    path, name, min_value, max_value, qm.bits, lowest, highest);
    }
    qm.weights.push_back(std::move(q));
  }
  TESSERA_CHECK(qm.weights.size() == steps.size(),
                "quantized model file '{}' lists {} quantized layers but the model has {} of them",
                path, steps.size(), qm.weights.size());
  TESSERA_CHECK(file.tensors.size() == module_state(*qm.model).size(),
                "{}: holds {} tensors but the model has {} (extra entries)", what,
                file.tensors.size(), module_state(*qm.model).size());
  qm.sync();
  qm.model->eval();
  return qm;
}

train::EvalResult evaluate(QuantizedModel& qm, const data::Dataset& dataset, int64_t batch_size) {
  return train::evaluate(qm.model, dataset, batch_size);
}

}  // namespace tessera::bitflip
