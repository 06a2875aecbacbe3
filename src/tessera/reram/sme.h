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
#include "tessera/reram/imagenet.h"
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

/// The float conv/linear weights of a model (core/quant's order) with their workload layers: the
/// donor for same_architecture_weights / synthesize_weights (imagenet.h).
WeightDonor weight_donor(models::Model& model);

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

/// Quantization-aware fine-tuning after quantization (RECONSTRUCTED: the paper's procedure is
/// not public; docs/systems/reram.md). Every step quantizes the float ("master") conv/linear
/// weights (uniform n-bit, then the bit-sparse projection with positions chosen afresh), runs
/// forward and backward with the quantized weights, and applies the gradient to the float
/// weights: the straight-through estimator (Bengio et al. 2013; Courbariaux et al. 2015). BN
/// layers train normally, so their statistics follow the quantized weights.
struct FineTuneOptions {
  int64_t steps = 300;  ///< SGD steps (0: no fine-tuning)
  int64_t batch_size = 64;
  double lr = 0.01;  ///< peak learning rate, cosine-annealed to 0 over the steps
  double momentum = 0.9;
  double weight_decay = 0.0;  ///< none: the weights are already constrained by the quantizer
  uint64_t seed = 0;          ///< batch order

  /// Throws tessera::Error naming the first bad field.
  void validate() const;
  std::string describe() const;
};

/// Fine-tunes a copy of `model` (left unchanged) on `train_set` with weights quantized to
/// `bits`-bit uniform and, when `quantizer` is non-null, projected bit-sparse in every step.
/// Returns the copy in eval mode holding the float master weights: quantize_model (and
/// bit_sparse_all) of it gives the deployed weights. `quantizer == nullptr` fine-tunes the plain
/// 8-bit uniform model for the same steps: the control that separates the gain of more training
/// from the quantizer's cost.
models::Model fine_tune_quantized(models::Model& model, int bits, const BitSparseOptions* quantizer,
                                  const data::Dataset& train_set, const FineTuneOptions& options);

/// Re-estimates every BatchNorm2d's running mean and variance over the first `max_images`
/// images of `train_set` with the model's current weights (cumulative average in train mode, no
/// gradient, batches of 256); leaves the model in eval mode. After a short training the running
/// averages (momentum 0.1) still mix in the statistics of the early, fast-changing weights.
void recalibrate_batch_norm(models::Model& model, const data::Dataset& train_set,
                            int64_t max_images);

/// True when an accuracy is too close to chance (1 / num_classes) for an accuracy drop to mean
/// anything: below chance + `margin` (default: 10 points above chance, 20% for 10 classes).
bool at_chance(double accuracy, int64_t num_classes, double margin = 0.1);

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
  double lr = 0.05;  ///< peak SGD learning rate (cosine over the steps, after warm-up)
  int64_t batch_size = 128;
  /// Model-specific options (ModelConfig::extra), e.g. {"zero_init_residual": 1} for resnet50.
  nlohmann::json extra = nlohmann::json::object();
};

/// Trains a registry model on Fashion-MNIST (1 channel, 10 classes): SGD with momentum 0.9,
/// weight decay 5e-4, linear warm-up over the first 5% of the steps, then cosine decay per step
/// (a per-epoch schedule is too coarse for the 1-3 epochs we can afford), no augmentation. The
/// BN running statistics are then re-estimated over (up to) 2000 training images with the final
/// weights (cumulative average, no gradient), so that they are not a lagging average of the
/// fast-changing early weights. Returns the model in eval mode.
models::Model train_fashion_model(const DonorTraining& options, const data::Dataset& train_set,
                                  const data::Dataset* test_set);

}  // namespace tessera::reram
