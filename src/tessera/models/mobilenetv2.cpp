// MobileNetV2 for CIFAR-sized inputs (see mobilenetv2.h).
#include "tessera/models/mobilenetv2.h"

#include <fmt/format.h>

#include <algorithm>

#include "tessera/core/error.h"
#include "tessera/models/blocks.h"

namespace tessera::models {

namespace {

struct StageSpec {
  int64_t expand_ratio, channels, n_blocks, stride;
};

// Table 2 of the paper with the CIFAR strides (second stage stride 1 instead of 2).
constexpr StageSpec kStages[] = {{1, 16, 1, 1}, {6, 24, 2, 1},  {6, 32, 3, 2}, {6, 64, 4, 2},
                                 {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};

}  // namespace

MobileNetV2Impl::MobileNetV2Impl(ModelConfig config) : ModelImpl(std::move(config)) {
  const ModelConfig& cfg = this->config();
  const ExtraOptions extra(cfg, {"dropout"});
  const double dropout = extra.get_double("dropout", 0.0);
  TESSERA_CHECK(dropout >= 0.0 && dropout < 1.0, "mobilenetv2 dropout must be in [0, 1), got {}",
                dropout);

  int64_t channels = scale_channels(32, cfg.width_mult);
  add_unit("stem", "conv",
           ConvBnAct(ConvBnActOptions(cfg.in_channels, channels, 3).activation(Activation::ReLU6)));
  int n_block = 0;
  for (const StageSpec& stage : kStages) {
    const int64_t out = scale_channels(stage.channels, cfg.width_mult);
    for (int64_t b = 0; b < stage.n_blocks; ++b) {
      add_unit(fmt::format("block{}", ++n_block), "block",
               InvertedResidual(InvertedResidualOptions(channels, out)
                                    .stride(b == 0 ? stage.stride : 1)
                                    .expand_ratio(stage.expand_ratio)));
      channels = out;
    }
  }
  const int64_t last = scale_channels(1280, std::max(1.0, cfg.width_mult));
  add_unit("last_conv", "conv",
           ConvBnAct(ConvBnActOptions(channels, last, 1).activation(Activation::ReLU6)));
  add_unit("pool", "pool", torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)));
  add_unit("flatten", "flatten", torch::nn::Flatten());
  add_unit("fc", "fc", FcBlock(FcBlockOptions(last, cfg.num_classes).dropout(dropout)));
  init_conv_bn(*this);
}

}  // namespace tessera::models
