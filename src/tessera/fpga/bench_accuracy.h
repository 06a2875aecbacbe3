// The accuracy side of N3H-Core (the bench, not the simulator): a design's per-layer precision
// applied to a trained Tessera model. Each weighted layer's output channels are split as the
// design splits them: the LUT share's weights at w bits and its input activations at a bits, the
// DSP share at the DSP mode's bits (4 packed, 8 for the first and last layers). Weights are
// quantized per share with core/quant; activations unsigned (signed for the image) with an
// MSE-calibrated clip. A short quantization-aware fine-tune runs through train::fit's hooks.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/data/dataset.h"
#include "tessera/fpga/design.h"
#include "tessera/models/model.h"

namespace tessera::fpga {

/// How one weighted layer is quantized. bits 0 = float (no quantization).
struct LayerQuantPlan {
  std::string name;  ///< workload layer name ("block1.conv1.conv"); parameter name + ".weight"
  double lut_ratio = 0.0;
  int lut_weight_bits = 0, lut_activation_bits = 0;
  int dsp_bits = 0;
};

/// The plan of a design evaluated on the model's own workload (layers in workload order).
std::vector<LayerQuantPlan> quant_plan(const std::vector<GemmShape>& gemms, const Design& design,
                                       const DesignEvaluation& evaluation);

/// A model with a quantization plan: forward() runs the units with fake-quantized activations
/// (straight-through in training); quantize_weights() swaps in the quantized weights (the float
/// masters are kept), restore_weights() puts the masters back. Supports models made of conv,
/// block (BasicBlock), pool, flatten and fc units (ResNet-20/18, VGG).
class MixedPrecisionModel {
 public:
  MixedPrecisionModel(models::Model model, std::vector<LayerQuantPlan> plan);
  /// x: [B, C, H, W] -> logits [B, K].
  torch::Tensor forward(const torch::Tensor& x);
  /// Sets every activation clip from `images` (float weights; grid search of the MSE-best
  /// fraction of the largest value).
  void calibrate(const torch::Tensor& images);
  void quantize_weights();
  void restore_weights();
  models::Model& model() { return model_; }

 private:
  struct LayerState {
    LayerQuantPlan plan;
    torch::Tensor weight;    ///< the module's parameter
    torch::Tensor master;    ///< float copy while quantized
    torch::Tensor lut_mask;  ///< [N] 1 for the LUT share's output channels
    double lut_clip = 0.0, dsp_clip = 0.0;
    bool signed_input = false;  ///< the image (may be negative); else post-ReLU
  };
  torch::Tensor quantized_input(LayerState& layer, const torch::Tensor& x, bool lut_share);
  torch::Tensor weighted(const std::string& name, torch::nn::Module& module,
                         const torch::Tensor& x);
  torch::Tensor conv_bn_act(const std::string& prefix, torch::nn::Module& unit, torch::Tensor x);

  models::Model model_;
  std::vector<LayerQuantPlan> plan_;
  std::vector<LayerState> layers_;
  bool calibrating_ = false;
};

struct AccuracyOptions {
  int64_t fine_tune_steps = 300;  ///< QAT steps (0: post-training quantization only)
  int64_t batch_size = 128;
  double lr = 0.01;  ///< SGD, per-step cosine to 0
  int64_t calibration_images = 512;
  int64_t test_images = 0;  ///< 0: the whole test set
  uint64_t seed = 0;
  void validate() const;
  nlohmann::json to_json() const;
};

struct AccuracyResult {
  double accuracy = 0.0;      ///< top-1 in [0, 1] after the fine-tune
  double ptq_accuracy = 0.0;  ///< before it
  int64_t n = 0;
  double seconds = 0.0;
};

/// Copies `model`, applies the plan, calibrates, fine-tunes, evaluates on `test_set`.
AccuracyResult quantized_accuracy(models::Model& model, const std::vector<LayerQuantPlan>& plan,
                                  const data::Dataset& train_set, const data::Dataset& test_set,
                                  const AccuracyOptions& options);

}  // namespace tessera::fpga
