// The deployed 8-bit model: conv/linear weights live only as int8 codes with per-layer scales,
// and the forward pass reads those codes, unit by unit, dequantizing them into one reused float
// buffer just before the unit runs. The bytes RADAR checks are the bytes that compute the output.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/bitflip/attack.h"
#include "tessera/bitflip/quantized_model.h"
#include "tessera/data/dataset.h"
#include "tessera/train/train.h"

namespace tessera::bitflip {

class Radar;
class DeployedModel;

/// One deployed weight tensor.
struct DeployedLayer {
  std::string name;
  std::vector<int64_t> shape;
  double step = 0.0;          ///< weight = code * step
  int64_t numel = 0;          ///< real codes
  int64_t capacity = 0;       ///< codes stored, with zero padding (RADAR's padded size)
  int64_t offset = 0;         ///< byte offset of the codes in the weight memory
  size_t unit = 0;            ///< the model unit that uses the layer
  int64_t buffer_offset = 0;  ///< float offset of the layer in the reused buffer
  torch::Tensor param;        ///< the module's weight: a view into the reused buffer
};

/// What the forward pass does with a layer's codes. The default (no reader) is a plain SIMD
/// dequantization; the RADAR guard's reader checks the codes in the same pass.
class WeightReader {
 public:
  virtual ~WeightReader() = default;
  /// Fills out[0 .. capacity) with layer `layer`'s dequantized codes (and may repair them).
  virtual void read(DeployedModel& model, size_t layer, float* out) = 0;
};

class DeployedModel {
 public:
  /// Copies the model's 8-bit integers into one int8 weight memory (each layer 64-byte aligned,
  /// padded with zero codes to RADAR's layout when `radar` is given, else to 32 codes) and
  /// points every quantized weight of a copy of the module into the reused buffer. Throws
  /// tessera::Error unless the model is 8-bit and every quantized layer belongs to one unit.
  static DeployedModel deploy(const QuantizedModel& model, const Radar* radar = nullptr);

  DeployedModel(DeployedModel&&) = default;
  DeployedModel& operator=(DeployedModel&&) = default;
  DeployedModel(const DeployedModel&) = delete;
  DeployedModel& operator=(const DeployedModel&) = delete;

  /// images [B, C, H, W] -> logits [B, K]: for each unit, `reader` (or the plain
  /// dequantization) fills its layers' weights from the codes, then the unit runs.
  torch::Tensor forward(const torch::Tensor& images, WeightReader* reader = nullptr);
  /// Reads every layer once into the buffer without running the model (for timing the read).
  void read_all(WeightReader* reader = nullptr);

  size_t n_layers() const { return layers_.size(); }
  const DeployedLayer& layer(size_t l) const;
  size_t layer_index(const std::string& name) const;
  /// The layer's codes in the weight memory (flat, original layout, then zero padding).
  int8_t* codes(size_t l);
  const int8_t* codes(size_t l) const;
  /// The whole weight memory (what a DRAM fault flips).
  uint8_t* memory() { return arena_.data_ptr<uint8_t>(); }
  int64_t memory_bytes() const { return arena_.numel(); }
  /// Floats in the reused buffer (the largest unit's weights).
  int64_t buffer_floats() const { return buffer_.numel(); }

  /// XORs recorded flips into the weight memory; throws tessera::Error (changing nothing) if a
  /// layer, index or bit does not exist or a code differs from the flip's old value.
  void apply_flips(const std::vector<BitFlip>& flips);
  /// A copy of the weight memory, and putting one back.
  torch::Tensor snapshot() const { return arena_.clone(); }
  void restore(const torch::Tensor& snapshot);
  /// Writes the codes back into a quantized model of the same layers (to save a repaired model).
  void copy_codes_to(QuantizedModel& model) const;
  /// Throws tessera::Error unless `radar` was set up for these layers and fits their padding.
  void check_layout(const Radar& radar) const;

 private:
  DeployedModel() = default;
  void read_unit(size_t unit, WeightReader* reader);

  models::Model model_{nullptr};
  std::vector<DeployedLayer> layers_;
  std::vector<std::vector<size_t>> unit_layers_;  ///< per unit, its quantized layers
  torch::Tensor arena_;                           ///< uint8 weight memory
  torch::Tensor buffer_;                          ///< float32, reused by every unit
};

/// Accuracy and loss of any forward function on `dataset` (train::evaluate's loop).
train::EvalResult evaluate_deployed(DeployedModel& model, const data::Dataset& dataset,
                                    WeightReader* reader = nullptr, int64_t batch_size = 512);

}  // namespace tessera::bitflip
