// The LibTorch side of reram: Tessera models as the source of trained weights. Quantizing a
// model, its accuracy with quantized weights, quantization-aware fine-tuning (train::fit with
// STE hooks), BN re-estimation, and the Fashion-MNIST donors of the ImageNet-shaped networks
// (trained once through the model cache). The simulator files (spec, mapping, ...) never
// include this header.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tessera/core/quant.h"
#include "tessera/core/workload.h"
#include "tessera/data/dataset.h"
#include "tessera/models/model.h"
#include "tessera/reram/bit_sparse.h"
#include "tessera/reram/imagenet.h"
#include "tessera/train/cache.h"
#include "tessera/train/train.h"

namespace tessera::reram {

/// Uniform n-bit weights of every weighted layer of `model` (core/quant), in workload order.
/// Throws tessera::Error if the parameters do not line up with model->workload() layers.
std::vector<quant::QuantizedTensor> quantize_model(models::Model& model,
                                                   const workload::Workload& workload, int bits);

/// The float conv/linear weights of a model (core/quant's order) with their workload layers: the
/// donor for same_architecture_weights / synthesize_weights (imagenet.h).
WeightDonor weight_donor(models::Model& model);

/// Top-1 accuracy (in [0, 1]) of `model` with its conv/linear weights replaced by `weights`
/// (dequantized); the model itself is left unchanged (a clone is evaluated).
double quantized_accuracy(models::Model& model, const std::vector<quant::QuantizedTensor>& weights,
                          const data::Dataset& test_set);

/// Weights for an ImageNet-shaped workload from a trained model, and where they came from.
struct ImagenetWeights {
  std::vector<torch::Tensor> weights;  ///< one float tensor per weighted layer of the target
  bool same_architecture = false;      ///< copied (same_architecture_weights), else resampled
  std::string source;                  ///< the sentence reports print as "weights: ..."
};

/// Copies the donor's weights when it has the target's architecture (architecture_mismatch is
/// empty), else resamples its trained rows onto the target's shapes (synthesize_weights). Seeded.
ImagenetWeights imagenet_weights(const workload::Workload& target, models::Model& donor,
                                 const std::string& donor_name, uint64_t seed);

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
  /// train::fit's options: a step budget, per-step cosine without warm-up, no augmentation.
  train::TrainOptions train_options(const std::string& progress_label) const;
};

/// Fine-tunes a copy of `model` (left unchanged) on `train_set` with weights quantized to
/// `bits`-bit uniform and, when `quantizer` is non-null, projected bit-sparse in every step
/// (train::fit with before_step = quantize in place, after_backward = restore the masters).
/// Returns the copy in eval mode holding the float master weights: quantize_model (and
/// bit_sparse_all) of it gives the deployed weights. `quantizer == nullptr` fine-tunes the plain
/// 8-bit uniform model for the same steps: the control that separates the gain of more training
/// from the quantizer's cost.
models::Model fine_tune_quantized(models::Model& model, int bits, const BitSparseOptions* quantizer,
                                  const data::Dataset& train_set, const FineTuneOptions& options);

/// Projects a model's uniform weights (quantize_model's order) onto what is deployed: the
/// bit-sparse quantizer, per-row plane budgets, ...
using WeightProjection = std::function<std::vector<quant::QuantizedTensor>(
    const workload::Workload&, const std::vector<quant::QuantizedTensor>&)>;

/// fine_tune_quantized with any projection applied after the uniform quantizer in every step
/// (`project` empty: the plain uniform model). `label` names the progress bar.
models::Model fine_tune_projected(models::Model& model, int bits, const WeightProjection& project,
                                  const data::Dataset& train_set, const FineTuneOptions& options,
                                  const std::string& label);

/// Diagonal Fisher information of every conv/linear weight (quantize_model's order): the mean
/// squared gradient of the cross-entropy over the first `max_images` images of `data_set`, in
/// batches of `batch_size` (the model's train/eval mode is kept; BN in eval mode). Used as the
/// sensitivity of the plane-budget allocation (planes.h).
std::vector<torch::Tensor> fisher_sensitivity(models::Model& model, const data::Dataset& data_set,
                                              int64_t max_images, int64_t batch_size = 64);

/// Per image of `data_set`: 1 when `model` with `weights` (dequantized) classifies it correctly.
std::vector<uint8_t> correct_images(models::Model& model,
                                    const std::vector<quant::QuantizedTensor>& weights,
                                    const data::Dataset& data_set);

/// The accuracy difference of two classifiers on the same images, in points, and its paired
/// standard error: 100 x mean(a - b), 100 x sd(a - b) / sqrt(n).
struct PairedDrop {
  double points = 0, standard_error = 0;
  int64_t images = 0;
};
PairedDrop paired_drop(const std::vector<uint8_t>& reference, const std::vector<uint8_t>& other);

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

/// Where the benches read images: (split "train" | "test", square image size) -> data set.
using ImageLoader = std::function<data::Dataset(const std::string& split, int64_t image_size)>;
/// load_fashion_mnist_at over `dir` (empty: the default Fashion-MNIST directory).
ImageLoader fashion_mnist_loader(const std::string& dir);

/// BN statistics are re-estimated over this many training images after donor training.
constexpr int64_t kDonorBatchNormImages = 2000;

/// What train_fashion_model trains.
struct DonorTraining {
  std::string arch = "mobilenetv2";  ///< registry name
  int64_t image_size = 16;
  double width_mult = 1.0;
  int64_t epochs = 3;
  int64_t train_images = 0;  ///< first N training images (0 = all of them)
  uint64_t seed = 0;
  double lr = 0.05;  ///< peak SGD learning rate (cosine over the steps, after warm-up)
  int64_t batch_size = 128;
  /// Model-specific options (ModelConfig::extra), e.g. {"zero_init_residual": 1} for resnet50.
  nlohmann::json extra = nlohmann::json::object();
  std::string data = "fashion-mnist";  ///< the data set's name in the cache key

  /// Throws tessera::Error naming the first bad field.
  void validate() const;
  /// The architecture: 1 channel, 10 classes.
  models::ModelConfig model_config() const;
  /// train::fit's options when `available_images` training images are at hand (60,000 for
  /// Fashion-MNIST): epochs x batches optimizer steps, linear warm-up over the first 5%.
  train::TrainOptions train_options(int64_t available_images) const;
  /// The model-cache recipe (its key names the file the donor is cached in).
  train::TrainRecipe recipe(int64_t available_images) const;
};

/// Trains a registry model on `train_set` (seeded by options.seed): SGD with momentum 0.9, weight
/// decay 5e-4, linear warm-up over the first 5% of the steps, then cosine decay per step (a
/// per-epoch schedule is too coarse for the 1-3 epochs we can afford), no augmentation. The BN
/// running statistics are then re-estimated over kDonorBatchNormImages training images with the
/// final weights, so that they are not a lagging average of the fast-changing early weights.
/// Logs the test accuracy when `test_set` is given. Returns the model in eval mode.
models::Model train_fashion_model(const DonorTraining& options, const data::Dataset& train_set,
                                  const data::Dataset* test_set);

/// A trained donor and where it came from.
struct Donor {
  models::Model model{nullptr};
  std::string
      provenance;  ///< "loaded FILE", "model cache: FILE" or "trained here (N s), saved FILE"
};

/// The model in `file` when it is given, else the cached model of options.recipe(), trained
/// (train_fashion_model on `train_set`) and cached when missing.
Donor load_or_train_donor(const std::string& file, const DonorTraining& options,
                          const data::Dataset& train_set);

}  // namespace tessera::reram
