// VGG-11-BN for CIFAR-sized inputs (see vgg.h).
#include "tessera/models/vgg.h"

#include <fmt/format.h>

#include "tessera/core/error.h"
#include "tessera/models/blocks.h"

namespace tessera::models {

Vgg11BnImpl::Vgg11BnImpl(ModelConfig config) : ModelImpl(std::move(config)) {
  const ModelConfig& cfg = this->config();
  const ExtraOptions extra(cfg, {"classifier", "dropout"});
  const std::string classifier = extra.get_string("classifier", "fc3");
  const double dropout = extra.get_double("dropout", 0.5);
  TESSERA_CHECK(classifier == "fc3" || classifier == "fc1",
                "vgg11_bn classifier must be \"fc3\" or \"fc1\", got \"{}\"", classifier);
  TESSERA_CHECK(dropout >= 0.0 && dropout < 1.0, "vgg11_bn dropout must be in [0, 1), got {}",
                dropout);

  // 0 marks a max-pool ('M' in the reference cfg).
  const int64_t layout[] = {64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0};
  int64_t channels = cfg.in_channels;
  int64_t side = cfg.image_size;
  int n_conv = 0, n_pool = 0;
  for (int64_t entry : layout) {
    if (entry == 0) {
      add_unit(fmt::format("pool{}", ++n_pool), "pool",
               torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2).ceil_mode(true)));
      side = window_output_size(side, 2, 2, 0, /*ceil_mode=*/true);  // 1x1 stays 1x1
    } else {
      const int64_t out = scale_channels(entry, cfg.width_mult);
      add_unit(fmt::format("conv{}", ++n_conv), "conv",
               ConvBnAct(ConvBnActOptions(channels, out, 3).bias(true)));
      channels = out;
    }
  }
  add_unit("flatten", "flatten", torch::nn::Flatten());
  const int64_t features = channels * side * side;
  if (classifier == "fc1") {
    add_unit("fc", "fc", FcBlock(FcBlockOptions(features, cfg.num_classes)));
  } else {
    const int64_t hidden = scale_channels(512, cfg.width_mult);
    add_unit("fc1", "fc", FcBlock(FcBlockOptions(features, hidden).dropout(dropout).relu(true)));
    add_unit("fc2", "fc", FcBlock(FcBlockOptions(hidden, hidden).dropout(dropout).relu(true)));
    add_unit("fc3", "fc", FcBlock(FcBlockOptions(hidden, cfg.num_classes)));
  }
  init_conv_bn(*this);
}

}  // namespace tessera::models
