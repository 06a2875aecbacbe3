// CIFAR-style ResNet-20 / ResNet-18 (see resnet.h).
#include "tessera/models/resnet.h"

#include <fmt/format.h>

#include "tessera/core/error.h"
#include "tessera/models/blocks.h"

namespace tessera::models {

ResNetLayout resnet20_layout() { return ResNetLayout{{16, 32, 64}, {3, 3, 3}, 'A'}; }

ResNetLayout resnet18_layout() { return ResNetLayout{{64, 128, 256, 512}, {2, 2, 2, 2}, 'B'}; }

ResNetImpl::ResNetImpl(ModelConfig config, const ResNetLayout& layout)
    : ModelImpl(std::move(config)) {
  const ModelConfig& cfg = this->config();
  TESSERA_CHECK(!layout.channels.empty() && layout.channels.size() == layout.blocks.size(),
                "ResNet layout needs one channel count per stage ({} channels, {} stages)",
                layout.channels.size(), layout.blocks.size());
  const ExtraOptions extra(cfg, {"shortcut"});
  const std::string shortcut =
      extra.get_string("shortcut", std::string(1, layout.default_shortcut));
  TESSERA_CHECK(shortcut == "A" || shortcut == "B",
                "{} shortcut must be \"A\" or \"B\", got \"{}\"", cfg.name, shortcut);

  int64_t channels = scale_channels(layout.channels[0], cfg.width_mult);
  add_unit("stem", "conv", ConvBnAct(ConvBnActOptions(cfg.in_channels, channels, 3)));
  int n_block = 0;
  for (size_t stage = 0; stage < layout.channels.size(); ++stage) {
    const int64_t out = scale_channels(layout.channels[stage], cfg.width_mult);
    for (int64_t b = 0; b < layout.blocks[stage]; ++b) {
      const int64_t stride = (stage > 0 && b == 0) ? 2 : 1;
      add_unit(fmt::format("block{}", ++n_block), "block",
               BasicBlock(BasicBlockOptions(channels, out).stride(stride).shortcut(shortcut[0])));
      channels = out;
    }
  }
  add_unit("pool", "pool", torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)));
  add_unit("flatten", "flatten", torch::nn::Flatten());
  add_unit("fc", "fc", FcBlock(FcBlockOptions(channels, cfg.num_classes)));
  init_conv_bn(*this);
}

}  // namespace tessera::models
