// A trained Tessera model with its conv/linear weights held as n-bit integers (core/quant) and
// mirrored into the float module: the attacker's (and the tooling's) copy, on which PBFA takes
// gradients. Deployed inference reads int8 codes instead (deployed.h; research/hw_security.md 3.1).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/quant.h"
#include "tessera/data/dataset.h"
#include "tessera/models/model.h"
#include "tessera/train/train.h"

namespace tessera::bitflip {

/// The model plus its quantized weights, in quant::quantize_module order (named_parameters()
/// order of every "*weight" with dim >= 2). The module is kept in eval mode.
struct QuantizedModel {
  models::Model model{nullptr};
  std::vector<quant::QuantizedTensor> weights;
  int bits = 8;

  size_t n_layers() const { return weights.size(); }
  /// Total number of quantized weights, and of bits (weights * bits).
  int64_t n_weights() const;
  /// Index of the layer named `name`; throws tessera::Error naming it if absent.
  size_t layer_index(const std::string& name) const;
  /// The module's float parameter of quantized layer `layer`: a handle sharing its storage.
  torch::Tensor parameter(size_t layer) const;
  /// Writes every layer's dequantized integers into the module's float parameters.
  void sync();
  /// Writes one layer's dequantized integers into the module.
  void sync_layer(size_t layer);
  /// Writes one element of one layer (the cheap path used by the attack's candidate search).
  void sync_element(size_t layer, int64_t index);
  /// Deep copy (module parameters, buffers and integers), e.g. a clean reference before an attack.
  QuantizedModel clone() const;
  /// logits [B, K] of images [B, C, H, W] float32 (no grad, eval mode).
  torch::Tensor predict(const torch::Tensor& images);
};

/// Quantizes `model`'s conv/linear weights to `bits` and loads the dequantized values back, so
/// that its forward pass is the quantized model's. Puts the model in eval mode.
QuantizedModel quantize_model(models::Model model, int bits = 8);

/// Writes a quantized model file: a safetensors file with the architecture (metadata
/// "tessera.arch"), every float parameter and buffer, and the integer weights as I32 tensors
/// with their steps (metadata "tessera.bitflip"). Atomic. An imported TorchScript model is
/// written as TorchScript with its dequantized weights (flips included); reading it back
/// quantizes them again.
void save_quantized(const std::string& path, const QuantizedModel& model);

/// Reads either a quantized model file (save_quantized: the integers are taken as stored, flips
/// included), a float Tessera model file (models::save) or a TorchScript file, which is
/// quantized to `bits`.
QuantizedModel load_quantized(const std::string& path, int bits = 8);

/// Top-1 accuracy and mean loss of the quantized model on `dataset`.
train::EvalResult evaluate(QuantizedModel& model, const data::Dataset& dataset,
                           int64_t batch_size = 512);

}  // namespace tessera::bitflip
