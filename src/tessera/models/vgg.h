// VGG-11 with batch norm in the CIFAR layout of the split-learning papers (research/sfl.md 5.1):
// one unit per cfg entry (conv3x3+BN+ReLU or 2x2 max-pool), then flatten and the FC units.
#pragma once

#include "tessera/models/model.h"

namespace tessera::models {

/// "vgg11_bn". Units (cfg 64,M,128,M,256,256,M,512,512,M,512,512,M, channels scaled by
/// width_mult, at least 1 each): conv1 pool1 conv2 pool2 conv3 conv4 pool3 conv5 conv6 pool4 conv7
/// conv8 pool5 (13 units: a split-learning "cutlayer" k is exactly units [0, k)), flatten, then
///  - classifier "fc3" (default; SFL-MEA/ResSFL vgg.py): fc1 = Dropout-Linear(F->512)-ReLU,
///    fc2 = Dropout-Linear(512->512)-ReLU, fc3 = Linear(512->num_classes) (512 scaled by width);
///  - classifier "fc1": one unit fc = Linear(F->num_classes) (the common CIFAR VGG).
/// F = channels * s * s where s is the side after the five pools. Convs have a bias (as in the
/// papers' code). Pools use ceil_mode, so a 28x28 input gives 28-14-7-4-2-1 (32x32 is unchanged:
/// 32-16-8-4-2-1); any image_size >= 1 works.
/// extra: {"classifier": "fc3" | "fc1", "dropout": 0.5 (fc3 only; 0 disables)}.
class Vgg11BnImpl : public ModelImpl {
 public:
  explicit Vgg11BnImpl(ModelConfig config);
};

}  // namespace tessera::models
