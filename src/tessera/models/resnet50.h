// ImageNet-style ResNet-50 (He et al. 2016, Table 1; torchvision's resnet50 v1.5, stride on the
// 3x3 conv): 7x7 stride-2 stem, 3x3 stride-2 max-pool, bottleneck stages [3, 4, 6, 3].
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/models/blocks.h"
#include "tessera/models/describe.h"
#include "tessera/models/model.h"

namespace tessera::models {

struct BottleneckOptions {
  BottleneckOptions(int64_t in_channels, int64_t width)
      : in_channels_(in_channels), width_(width) {}
  TORCH_ARG(int64_t, in_channels);
  /// Channels of the 1x1 reduce and the 3x3 conv; the output has expansion * width channels.
  TORCH_ARG(int64_t, width);
  TORCH_ARG(int64_t, expansion) = 4;
  /// Stride of the 3x3 conv (v1.5) and of the projection shortcut.
  TORCH_ARG(int64_t, stride) = 1;
};

/// The bottleneck block: relu(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))) + shortcut(x)),
/// conv1 1x1 in -> width, conv2 3x3 (stride) width -> width, conv3 1x1 width -> expansion*width;
/// the shortcut is a 1x1 conv (stride) + BN when the shape changes, else the identity.
/// x: [B, in, H, W] -> [B, expansion*width, ceil(H/stride), ceil(W/stride)].
/// Parameters: "conv1.*", "conv2.*", "conv3.*" and, with a projection, "downsample.*".
class BottleneckImpl : public torch::nn::Module, public DescribesWorkload {
 public:
  explicit BottleneckImpl(const BottleneckOptions& options);
  torch::Tensor forward(torch::Tensor x);
  /// Layers: conv1.*, conv2.*, conv3.*, downsample.* (if any), <prefix>.add, <prefix>.relu.
  SampleShape describe(const std::string& prefix, const SampleShape& input,
                       std::vector<workload::Layer>& layers) override;
  int64_t out_channels() const { return options.expansion() * options.width(); }
  bool has_projection() const;

  BottleneckOptions options;
  ConvBnAct conv1{nullptr}, conv2{nullptr}, conv3{nullptr};
  ConvBnAct downsample{nullptr};  ///< null for the identity shortcut
};
TORCH_MODULE(Bottleneck);

/// "resnet50". Units: "stem" (conv7x7 stride 2 padding 3 + BN + ReLU, 64 channels), "maxpool"
/// (3x3 stride 2 padding 1), "block1".."block16" (Bottleneck; stages of 3, 4, 6, 3 blocks with
/// widths 64, 128, 256, 512, expansion 4, stride 2 at the first block of stages 2-4), "pool"
/// (global average), "flatten", "fc" (Linear(2048 -> num_classes)).
/// width_mult scales the stem and every stage width (outputs stay 4 x width).
/// 25,557,032 parameters for 3 channels, 1000 classes and width 1 (torchvision's count).
/// x: [B, in_channels, S, S] -> [B, num_classes] for any S >= 1 (S = 32 gives a 1x1 map in the
/// last stage; ImageNet's S = 224 gives 7x7).
/// extra: {"zero_init_residual": 0} (1: the last BN of every block starts at weight 0, so each
/// block starts as the identity; Goyal et al. 2017, torchvision's option; it helps short
/// trainings).
class ResNet50Impl : public ModelImpl {
 public:
  explicit ResNet50Impl(ModelConfig config);
};

}  // namespace tessera::models
