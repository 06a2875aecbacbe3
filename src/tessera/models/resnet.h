// CIFAR-style ResNets (3x3 stem, no max-pool): ResNet-20 (He et al. 2016, Sec. 4.2) and
// ResNet-18 (the common CIFAR port of the ImageNet ResNet-18). Units: stem, one per block,
// global pool, flatten, fc.
#pragma once

#include <cstdint>
#include <vector>

#include "tessera/models/model.h"

namespace tessera::models {

/// Stage layout of a CIFAR ResNet made of BasicBlocks.
struct ResNetLayout {
  std::vector<int64_t> channels;  ///< per stage, before width_mult; the stem has channels[0]
  std::vector<int64_t> blocks;    ///< BasicBlocks per stage; stage s > 0 starts with stride 2
  char default_shortcut = 'A';
};

/// Units: "stem" (conv3x3 stride 1 + BN + ReLU), "block1".."blockN" (BasicBlock), "pool"
/// (global average pool), "flatten", "fc" (Linear(channels.back() -> num_classes)).
/// x: [B, in_channels, S, S] -> [B, num_classes] for any S >= 1.
/// extra: {"shortcut": "A" | "B"} (default: layout.default_shortcut; see BasicBlockOptions).
class ResNetImpl : public ModelImpl {
 public:
  ResNetImpl(ModelConfig config, const ResNetLayout& layout);
};

/// "resnet20": 3 stages x 3 blocks, 16/32/64 channels, shortcut A (parameter-free, as in the
/// paper and the BFA/ResSFL code); 269,722 parameters for 3 channels and 10 classes.
ResNetLayout resnet20_layout();
/// "resnet18": 4 stages x 2 blocks, 64/128/256/512 channels, shortcut B (1x1 conv + BN);
/// 11,173,962 parameters for 3 channels and 10 classes.
ResNetLayout resnet18_layout();

}  // namespace tessera::models
