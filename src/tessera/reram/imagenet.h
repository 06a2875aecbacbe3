// ResNet-50 and MobileNetV2 at ImageNet layer shapes (224x224x3, 1000 classes), built in code as
// workloads, and weights for them: trained weight values resampled onto these shapes (we cannot
// train ImageNet networks here), or seeded i.i.d. draws. docs/systems/reram.md says which is used.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/quant.h"
#include "tessera/core/workload.h"

namespace tessera::reram {

/// torchvision's resnet50 (v1.5: stride on the 3x3 conv): 53 convolutions + the 2048x1000 FC,
/// 25.5M weights.
workload::Workload resnet50_imagenet();
/// torchvision's mobilenet_v2 (width 1.0): 52 convolutions + the 1280x1000 FC, 3.5M weights.
workload::Workload mobilenetv2_imagenet();
/// The built-in ImageNet-shaped networks.
enum class ImagenetNetwork { ResNet50, MobileNetV2 };
/// "resnet50" or "mobilenetv2".
std::string imagenet_network_name(ImagenetNetwork network);
/// Throws tessera::Error listing the valid names unless `name` is "resnet50" or "mobilenetv2".
ImagenetNetwork parse_imagenet_network(const std::string& name);
/// The workload of resnet50_imagenet() or mobilenetv2_imagenet().
workload::Workload imagenet_workload(ImagenetNetwork network);

/// Which weight class a layer belongs to when resampling trained weights onto other shapes.
enum class WeightClass { Stem, Dense, Pointwise, Depthwise, Linear };
WeightClass weight_class(const workload::Layer& layer, bool first_layer);

/// Float weight tensors of trained layers (e.g. a Fashion-MNIST model's conv/linear weights),
/// with the workload layers they belong to, to draw ImageNet-shaped weights from.
struct WeightDonor {
  std::vector<workload::Layer> layers;  ///< weighted layers of the trained model
  std::vector<torch::Tensor> weights;   ///< one float tensor per layer, [C_out, rows...]
};

/// Weights for every weighted layer of `target`, in order, as float32 tensors in the layer's
/// shape. With a donor: each target crossbar row (group, c_in, kh, kw) copies the value
/// distribution of one randomly chosen trained row of the same weight class (values drawn with
/// replacement, scaled by the donor layer's standard deviation ratio to He initialisation), so
/// row-to-row magnitude differences of trained layers survive. Without donor layers of a class,
/// falls back to i.i.d. Laplace draws with He scale for that class. Seeded.
std::vector<torch::Tensor> synthesize_weights(const workload::Workload& target,
                                              const WeightDonor& donor, uint64_t seed);

/// Why a donor is not of the target's architecture (empty when it is): the same number of
/// weighted layers, each with the same kind, kernel, groups and channels, except two allowed
/// differences: the first layer's input channels (a 1-channel Fashion-MNIST stem against
/// ImageNet's 3) and the last Linear layer's outputs (10 classes against 1000).
std::string architecture_mismatch(const workload::Workload& target, const WeightDonor& donor);

/// Weights for `target` from a trained model of the same architecture (e.g. the registry's
/// resnet50 trained on Fashion-MNIST at a reduced input size): conv weights do not depend on the
/// input size, so every layer of matching shape is copied unchanged. The first layer's input
/// channel c takes the trained channel c mod C_trained (tiled), and output o of the last Linear
/// layer takes, in every row r, a value drawn (seeded, with replacement) from the trained row r,
/// so each crossbar row keeps its trained magnitudes. Throws tessera::Error naming the first
/// mismatch (see architecture_mismatch).
std::vector<torch::Tensor> same_architecture_weights(const workload::Workload& target,
                                                     const WeightDonor& donor, uint64_t seed);

/// Uniformly quantizes each tensor (core/quant) with the names of the target's layers.
std::vector<quant::QuantizedTensor> quantize_all(const workload::Workload& target,
                                                 const std::vector<torch::Tensor>& weights,
                                                 int bits);

}  // namespace tessera::reram
