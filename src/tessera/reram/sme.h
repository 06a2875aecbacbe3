// SME end to end on a network: uniform and bit-sparse weights per weighted layer, the eight
// on/off combinations of (bit-sparse quantization, splicing, squeeze-out) so each step's share is
// measured, and the accuracy of a Tessera model with those weights.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/quant.h"
#include "tessera/core/workload.h"
#include "tessera/data/dataset.h"
#include "tessera/models/model.h"
#include "tessera/reram/bit_sparse.h"
#include "tessera/reram/mapping.h"
#include "tessera/reram/spec.h"

namespace tessera::reram {

/// The full SME configuration: which steps run and the quantizer's settings.
struct SmeOptions {
  bool bit_sparse = true;
  bool splice = true;
  bool squeeze = true;
  BitSparseOptions quantizer;

  MappingOptions mapping() const { return {splice, squeeze}; }
  std::string describe() const;
};

/// Uniform n-bit weights of every weighted layer of `model` (core/quant), in workload order.
/// Throws tessera::Error if the parameters do not line up with model->workload() layers.
std::vector<quant::QuantizedTensor> quantize_model(models::Model& model,
                                                   const workload::Workload& workload, int bits);

/// Bit-sparse projection of every layer (the groups of each layer come from the workload).
std::vector<quant::QuantizedTensor> bit_sparse_all(
    const workload::Workload& workload, const std::vector<quant::QuantizedTensor>& uniform,
    const BitSparseOptions& options);

/// One combination of the three steps and its crossbars.
struct AblationRow {
  bool bit_sparse = false, splice = false, squeeze = false;
  int64_t crossbars = 0;
  double reduction = 1.0;  ///< baseline crossbars / crossbars
  double seconds = 0.0;    ///< mapping wall time
};

/// All eight combinations, baseline first and full SME last. `uniform` and `sparse` hold the
/// weights of every weighted layer.
std::vector<AblationRow> ablation(const workload::Workload& workload,
                                  const std::vector<quant::QuantizedTensor>& uniform,
                                  const std::vector<quant::QuantizedTensor>& sparse,
                                  const HardwareSpec& spec);

/// Top-1 accuracy (in [0, 1]) of `model` with its conv/linear weights replaced by `weights`
/// (dequantized); the model itself is left unchanged (a clone is evaluated).
double quantized_accuracy(models::Model& model, const std::vector<quant::QuantizedTensor>& weights,
                          const data::Dataset& test_set);

/// Fashion-MNIST at `image_size` (>= 28: zero-padded as data::load_fashion_mnist does; < 28:
/// the 28x28 images average-pooled down to image_size, the "reduced input size").
data::Dataset load_fashion_mnist_at(const std::string& split, const std::string& dir,
                                    int64_t image_size);

/// What train_fashion_model trains.
struct DonorTraining {
  std::string arch = "mobilenetv2";  ///< registry name
  int64_t image_size = 16;
  double width_mult = 1.0;
  int64_t epochs = 3;
  int64_t train_images = 0;  ///< first N training images (0 = all 60k)
  uint64_t seed = 0;
};

/// Trains a registry model on Fashion-MNIST (1 channel, 10 classes) with the foundation's
/// train::fit (SGD, cosine, no flips) and returns it in eval mode.
models::Model train_fashion_model(const DonorTraining& options, const data::Dataset& train_set,
                                  const data::Dataset* test_set);

}  // namespace tessera::reram
