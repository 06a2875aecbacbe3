// MobileNetV2 (Sandler et al. 2018) adapted to 32x32 inputs as in the common CIFAR ports: stride-1
// stem and stride-1 second stage, so the map shrinks 32 -> 16 -> 8 -> 4 over the network.
#pragma once

#include "tessera/models/model.h"

namespace tessera::models {

/// "mobilenetv2". Units: "stem" (conv3x3 stride 1 + BN + ReLU6, 32 channels), "block1".."block17"
/// (InvertedResidual; (t, c, n, s) = (1,16,1,1) (6,24,2,1) (6,32,3,2) (6,64,4,2) (6,96,3,1)
/// (6,160,3,2) (6,320,1,1); the ImageNet network has s = 2 for the stem and the 24-channel stage),
/// "last_conv" (conv1x1 + BN + ReLU6, 1280 channels), "pool" (global average), "flatten", "fc"
/// (Linear(1280 -> num_classes), with optional dropout). Blocks are torchvision's (residual only
/// when stride 1 and in == out), not the CIFAR port's 1x1-conv shortcuts.
/// width_mult scales every width (at least 1 channel); the last conv keeps 1280 unless
/// width_mult > 1 (as in the paper). 2,236,682 parameters for 3 channels and 10 classes.
/// extra: {"dropout": 0.0} (the probability before the classifier; torchvision uses 0.2).
class MobileNetV2Impl : public ModelImpl {
 public:
  explicit MobileNetV2Impl(ModelConfig config);
};

}  // namespace tessera::models
