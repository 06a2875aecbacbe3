// Building blocks shared by the CNN models: conv+BN+activation, the FC unit, the residual
// BasicBlock (ResNet-20/18) and the inverted residual block (MobileNetV2). Each describes its
// own workload, so models made of them need no extra code for core/workload.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/models/describe.h"

namespace tessera::models {

enum class Activation { None, ReLU, ReLU6 };

struct ConvBnActOptions {
  ConvBnActOptions(int64_t in_channels, int64_t out_channels, int64_t kernel_size)
      : in_channels_(in_channels), out_channels_(out_channels), kernel_size_(kernel_size) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, kernel_size);
  TORCH_ARG(int64_t, stride) = 1;
  /// -1 means kernel_size / 2 (keeps the size at stride 1 for odd kernels).
  TORCH_ARG(int64_t, padding) = -1;
  TORCH_ARG(int64_t, groups) = 1;
  /// Conv bias; redundant before BN, but the CIFAR VGG of the split-learning papers has one.
  TORCH_ARG(bool, bias) = false;
  TORCH_ARG(Activation, activation) = Activation::ReLU;
};

/// Conv2d -> BatchNorm2d -> activation. x: [B, in, H, W] -> [B, out, H', W'].
/// Parameters: "conv.weight" [out, in/groups, k, k], "bn.weight", "bn.bias" (+ BN buffers).
class ConvBnActImpl : public torch::nn::Module, public DescribesWorkload {
 public:
  explicit ConvBnActImpl(const ConvBnActOptions& options);
  torch::Tensor forward(torch::Tensor x);
  /// Layers: <prefix>.conv (Conv2d), <prefix>.bn (Norm), <prefix>.relu / .relu6 (Activation).
  SampleShape describe(const std::string& prefix, const SampleShape& input,
                       std::vector<workload::Layer>& layers) override;

  ConvBnActOptions options;
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
};
TORCH_MODULE(ConvBnAct);

struct FcBlockOptions {
  FcBlockOptions(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}
  TORCH_ARG(int64_t, in_features);
  TORCH_ARG(int64_t, out_features);
  /// Dropout probability applied to the input (0: no dropout module).
  TORCH_ARG(double, dropout) = 0.0;
  TORCH_ARG(bool, relu) = false;
};

/// [Dropout] -> Linear -> [ReLU]: one "fc" unit. x: [B, in] -> [B, out].
/// Parameters: "linear.weight" [out, in], "linear.bias" [out].
class FcBlockImpl : public torch::nn::Module, public DescribesWorkload {
 public:
  explicit FcBlockImpl(const FcBlockOptions& options);
  torch::Tensor forward(torch::Tensor x);
  /// Layers: <prefix>.linear (Linear), <prefix>.relu (Activation, if any).
  SampleShape describe(const std::string& prefix, const SampleShape& input,
                       std::vector<workload::Layer>& layers) override;

  FcBlockOptions options;
  torch::nn::Dropout dropout{nullptr};  ///< null when options.dropout() == 0
  torch::nn::Linear linear{nullptr};
};
TORCH_MODULE(FcBlock);

struct BasicBlockOptions {
  BasicBlockOptions(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, stride) = 1;
  /// Shortcut when the shape changes. 'A' (He et al. 2016 option A, ResNet-20 default):
  /// parameter-free, subsample by `stride` (AvgPool k=1) and append zero channels. 'B' (ResNet-18
  /// default): 1x1 conv with stride + BN.
  TORCH_ARG(char, shortcut) = 'B';
};

/// The ResNet basic block: relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).
/// x: [B, in, H, W] -> [B, out, ceil(H/stride), ceil(W/stride)].
/// Parameters: "conv1.*", "conv2.*" (ConvBnAct, 3x3) and, for shortcut B, "shortcut.*" (1x1).
class BasicBlockImpl : public torch::nn::Module, public DescribesWorkload {
 public:
  explicit BasicBlockImpl(const BasicBlockOptions& options);
  torch::Tensor forward(torch::Tensor x);
  /// Layers: conv1.*, conv2.*, shortcut (Pool k=1 for A, ConvBnAct for B; none if identity),
  /// <prefix>.add (Add), <prefix>.relu (Activation).
  SampleShape describe(const std::string& prefix, const SampleShape& input,
                       std::vector<workload::Layer>& layers) override;
  /// True when the shortcut is not the identity.
  bool has_projection() const;

  BasicBlockOptions options;
  ConvBnAct conv1{nullptr}, conv2{nullptr};
  ConvBnAct shortcut{nullptr};  ///< only for shortcut 'B' with a shape change
};
TORCH_MODULE(BasicBlock);

struct InvertedResidualOptions {
  InvertedResidualOptions(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}
  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  TORCH_ARG(int64_t, stride) = 1;
  TORCH_ARG(int64_t, expand_ratio) = 6;
};

/// MobileNetV2's inverted residual with linear bottleneck (Sandler et al. 2018, Table 1):
/// [1x1 expand + BN + ReLU6] -> 3x3 depthwise (stride) + BN + ReLU6 -> 1x1 project + BN, plus
/// x when stride is 1 and in == out. Hidden width = in * expand_ratio.
/// Parameters: "expand.*" (absent when expand_ratio == 1), "depthwise.*", "project.*".
class InvertedResidualImpl : public torch::nn::Module, public DescribesWorkload {
 public:
  explicit InvertedResidualImpl(const InvertedResidualOptions& options);
  torch::Tensor forward(torch::Tensor x);
  /// Layers: expand.*, depthwise.*, project.*, and <prefix>.add when residual.
  SampleShape describe(const std::string& prefix, const SampleShape& input,
                       std::vector<workload::Layer>& layers) override;
  bool uses_residual() const;

  InvertedResidualOptions options;
  ConvBnAct expand{nullptr};  ///< null when expand_ratio == 1
  ConvBnAct depthwise{nullptr}, project{nullptr};
};
TORCH_MODULE(InvertedResidual);

/// He (kaiming) normal init for every Conv2d (fan_out, ReLU gain: std = sqrt(2 / (k*k*out)),
/// as in torchvision's ResNet/MobileNetV2 and the split-learning VGG), zero conv biases, and
/// BatchNorm weight 1 / bias 0. Linear layers keep LibTorch's default init.
void init_conv_bn(torch::nn::Module& module);

}  // namespace tessera::models
