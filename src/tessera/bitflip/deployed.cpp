// The deployed int8 model: weight memory, the reused dequantization buffer, the unit-by-unit
// forward and flips into the memory.
#include "tessera/bitflip/deployed.h"

#include <algorithm>
#include <map>

#include "tessera/bitflip/fused_check.h"
#include "tessera/bitflip/radar.h"
#include "tessera/core/error.h"
#include "tessera/models/registry.h"

namespace tessera::bitflip {
namespace {

int64_t round_up(int64_t n, int64_t multiple) { return (n + multiple - 1) / multiple * multiple; }

std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> strides(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) strides[i - 1] = strides[i] * shape[i];
  return strides;
}

}  // namespace

DeployedModel DeployedModel::deploy(const QuantizedModel& qm, const Radar* radar) {
  TESSERA_CHECK(qm.model && !qm.weights.empty(), "deploy: the quantized model is empty");
  TESSERA_CHECK(qm.bits == 8, "deploy: the deployed model stores int8 codes; got {}-bit weights",
                qm.bits);
  if (radar != nullptr)
    TESSERA_CHECK(radar->n_layers() == qm.weights.size(),
                  "deploy: RADAR was set up for {} layers but the model has {}", radar->n_layers(),
                  qm.weights.size());
  DeployedModel out;
  models::Model source = qm.model;
  out.model_ = models::clone(source);
  out.model_->eval();
  const auto& units = out.model_->units();
  out.unit_layers_.resize(units.size());
  int64_t arena_bytes = 0;
  for (size_t l = 0; l < qm.weights.size(); ++l) {
    const auto& q = qm.weights[l];
    DeployedLayer layer;
    layer.name = q.name;
    layer.shape.assign(q.values.sizes().begin(), q.values.sizes().end());
    layer.step = q.step;
    layer.numel = q.numel();
    layer.capacity =
        radar != nullptr ? radar->layout(l).padded : round_up(std::max<int64_t>(1, q.numel()), 32);
    TESSERA_CHECK(layer.capacity >= layer.numel, "deploy: layer '{}' does not fit its layout",
                  q.name);
    bool found = false;
    for (size_t u = 0; u < units.size() && !found; ++u) {
      if (q.name.rfind(units[u].name + ".", 0) == 0) {
        layer.unit = u;
        found = true;
      }
    }
    TESSERA_CHECK(found, "deploy: weight '{}' belongs to no unit of model '{}'", q.name,
                  out.model_->config().name);
    layer.offset = arena_bytes;
    arena_bytes += round_up(layer.capacity, 64);
    out.unit_layers_[layer.unit].push_back(l);
    out.layers_.push_back(std::move(layer));
  }
  // The reused buffer holds one unit's weights at a time.
  int64_t buffer_floats = 16;
  for (const auto& unit : out.unit_layers_) {
    int64_t offset = 0;
    for (const size_t l : unit) {
      out.layers_[l].buffer_offset = offset;
      offset += round_up(out.layers_[l].capacity, 16);
    }
    buffer_floats = std::max(buffer_floats, offset);
  }
  out.arena_ = torch::zeros({arena_bytes}, torch::kUInt8);
  out.buffer_ = torch::zeros({buffer_floats}, torch::kFloat32);
  torch::NoGradGuard no_grad;
  const auto params = out.model_->named_parameters(/*recurse=*/true);
  for (size_t l = 0; l < out.layers_.size(); ++l) {
    auto& layer = out.layers_[l];
    const auto& q = qm.weights[l];
    const int32_t* values = q.values.data_ptr<int32_t>();
    int8_t* codes = out.codes(l);
    for (int64_t i = 0; i < layer.numel; ++i) {
      TESSERA_CHECK(values[i] >= -128 && values[i] <= 127,
                    "deploy: layer '{}' holds {} at {}, outside int8", q.name, values[i], i);
      codes[i] = static_cast<int8_t>(values[i]);
    }
    const torch::Tensor* param = params.find(layer.name);
    TESSERA_CHECK(param != nullptr, "deploy: module has no parameter '{}'", layer.name);
    layer.param = *param;
    layer.param.set_requires_grad(false);
    // The module's weight becomes a view into the reused buffer: no float copy is kept.
    layer.param.set_(out.buffer_.storage(), layer.buffer_offset, layer.shape,
                     contiguous_strides(layer.shape));
  }
  return out;
}

const DeployedLayer& DeployedModel::layer(size_t l) const {
  TESSERA_CHECK(l < layers_.size(), "layer {} out of range ({} layers)", l, layers_.size());
  return layers_[l];
}

size_t DeployedModel::layer_index(const std::string& name) const {
  for (size_t l = 0; l < layers_.size(); ++l)
    if (layers_[l].name == name) return l;
  throw Error(fmt::format("the deployed model has no layer named '{}'", name));
}

int8_t* DeployedModel::codes(size_t l) {
  return reinterpret_cast<int8_t*>(memory() + layer(l).offset);
}

const int8_t* DeployedModel::codes(size_t l) const {
  return reinterpret_cast<const int8_t*>(arena_.data_ptr<uint8_t>() + layer(l).offset);
}

void DeployedModel::read_unit(size_t unit, WeightReader* reader) {
  float* buffer = buffer_.data_ptr<float>();
  for (const size_t l : unit_layers_[unit]) {
    const auto& layer = layers_[l];
    float* out = buffer + layer.buffer_offset;
    if (reader != nullptr)
      reader->read(*this, l, out);
    else
      dequantize_codes(codes(l), layer.capacity, static_cast<float>(layer.step), out);
  }
}

torch::Tensor DeployedModel::forward(const torch::Tensor& images, WeightReader* reader) {
  torch::NoGradGuard no_grad;
  torch::Tensor x = images;
  for (size_t u = 0; u < unit_layers_.size(); ++u) {
    read_unit(u, reader);
    x = model_->forward_units(x, u, u + 1);
  }
  return x;
}

void DeployedModel::read_all(WeightReader* reader) {
  for (size_t u = 0; u < unit_layers_.size(); ++u) read_unit(u, reader);
}

void DeployedModel::apply_flips(const std::vector<BitFlip>& flips) {
  std::map<std::pair<size_t, int64_t>, int32_t> current;
  for (const auto& flip : flips) {
    const size_t l = layer_index(flip.layer);
    TESSERA_CHECK(flip.index >= 0 && flip.index < layers_[l].numel,
                  "flip index {} out of range for layer '{}' with {} weights", flip.index,
                  flip.layer, layers_[l].numel);
    TESSERA_CHECK(flip.bit >= 0 && flip.bit < 8, "flip bit {} out of range for int8 '{}'", flip.bit,
                  flip.layer);
    const auto key = std::make_pair(l, flip.index);
    auto found = current.find(key);
    const int32_t value = found != current.end() ? found->second : codes(l)[flip.index];
    TESSERA_CHECK(value == flip.old_value,
                  "flip of '{}'[{}] bit {} expects old value {} but the deployed memory holds "
                  "{}: the flips were recorded on another model",
                  flip.layer, flip.index, flip.bit, flip.old_value, value);
    current[key] = static_cast<int8_t>(static_cast<uint8_t>(value) ^ (1u << flip.bit));
  }
  for (const auto& flip : flips) {
    uint8_t* byte = memory() + layers_[layer_index(flip.layer)].offset + flip.index;
    *byte = static_cast<uint8_t>(*byte ^ (1u << flip.bit));
  }
}

void DeployedModel::restore(const torch::Tensor& snapshot) {
  TESSERA_CHECK(snapshot.sizes() == arena_.sizes() && snapshot.scalar_type() == torch::kUInt8,
                "restore: the snapshot is of another model");
  arena_.copy_(snapshot);
}

void DeployedModel::copy_codes_to(QuantizedModel& qm) const {
  TESSERA_CHECK(qm.weights.size() == layers_.size(),
                "copy_codes_to: the model has {} layers, the deployed one {}", qm.weights.size(),
                layers_.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    auto& q = qm.weights[l];
    TESSERA_CHECK(q.name == layers_[l].name && q.numel() == layers_[l].numel,
                  "copy_codes_to: layer {} is '{}' there, '{}' here", l, q.name, layers_[l].name);
    int32_t* values = q.values.data_ptr<int32_t>();
    const int8_t* c = codes(l);
    for (int64_t i = 0; i < layers_[l].numel; ++i) values[i] = c[i];
  }
  qm.sync();
}

void DeployedModel::check_layout(const Radar& radar) const {
  TESSERA_CHECK(radar.n_layers() == layers_.size(),
                "RADAR was set up for {} layers but the deployed model has {}", radar.n_layers(),
                layers_.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerLayout& layout = radar.layout(l);
    TESSERA_CHECK(layout.name == layers_[l].name && layout.shape == layers_[l].shape,
                  "layer {} is '{}' but RADAR was set up for '{}'", l, layers_[l].name,
                  layout.name);
    TESSERA_CHECK(layers_[l].capacity >= layout.padded,
                  "layer '{}' was deployed with {} codes but RADAR's layout needs {}: deploy "
                  "with this RADAR",
                  layers_[l].name, layers_[l].capacity, layout.padded);
  }
}

train::EvalResult evaluate_deployed(DeployedModel& model, const data::Dataset& dataset,
                                    WeightReader* reader, int64_t batch_size) {
  return train::evaluate([&](const torch::Tensor& x) { return model.forward(x, reader); }, dataset,
                         batch_size);
}

}  // namespace tessera::bitflip
