// ImageNet-style ResNet-50 with bottleneck blocks (see resnet50.h).
#include "tessera/models/resnet50.h"

#include <fmt/format.h>

#include "tessera/core/error.h"

namespace tessera::models {

using workload::Layer;
using workload::OpKind;

BottleneckImpl::BottleneckImpl(const BottleneckOptions& options_) : options(options_) {
  TESSERA_CHECK(options.in_channels() > 0 && options.width() > 0 && options.expansion() > 0,
                "Bottleneck needs positive channels, got in {} width {} expansion {}",
                options.in_channels(), options.width(), options.expansion());
  TESSERA_CHECK(options.stride() > 0, "Bottleneck stride must be positive, got {}",
                options.stride());
  conv1 = register_module(
      "conv1", ConvBnAct(ConvBnActOptions(options.in_channels(), options.width(), 1).padding(0)));
  conv2 = register_module(
      "conv2",
      ConvBnAct(ConvBnActOptions(options.width(), options.width(), 3).stride(options.stride())));
  conv3 = register_module("conv3", ConvBnAct(ConvBnActOptions(options.width(), out_channels(), 1)
                                                 .padding(0)
                                                 .activation(Activation::None)));
  if (has_projection()) {
    downsample = register_module(
        "downsample", ConvBnAct(ConvBnActOptions(options.in_channels(), out_channels(), 1)
                                    .stride(options.stride())
                                    .padding(0)
                                    .activation(Activation::None)));
  }
}

bool BottleneckImpl::has_projection() const {
  return options.stride() != 1 || options.in_channels() != out_channels();
}

torch::Tensor BottleneckImpl::forward(torch::Tensor x) {
  torch::Tensor out = conv3(conv2(conv1(x)));
  return torch::relu(out + (downsample ? downsample(x) : x));
}

SampleShape BottleneckImpl::describe(const std::string& prefix, const SampleShape& input,
                                     std::vector<Layer>& layers) {
  TESSERA_CHECK(input.size() == 3 && input[0] == options.in_channels(),
                "Bottleneck '{}' expects [{}, H, W], got {}", prefix, options.in_channels(),
                shape_string(input));
  SampleShape out = describe_module(join_name(prefix, "conv1"), *conv1, input, layers);
  out = describe_module(join_name(prefix, "conv2"), *conv2, out, layers);
  out = describe_module(join_name(prefix, "conv3"), *conv3, out, layers);
  const SampleShape identity =
      downsample ? describe_module(join_name(prefix, "downsample"), *downsample, input, layers)
                 : input;
  TESSERA_CHECK(identity == out, "Bottleneck '{}': shortcut shape {} differs from residual {}",
                prefix, shape_string(identity), shape_string(out));
  layers.push_back(elementwise_layer(join_name(prefix, "add"), OpKind::Add, out));
  layers.push_back(elementwise_layer(join_name(prefix, "relu"), OpKind::Activation, out));
  return out;
}

ResNet50Impl::ResNet50Impl(ModelConfig config) : ModelImpl(std::move(config)) {
  const ModelConfig& cfg = this->config();
  const ExtraOptions extra(cfg, {"zero_init_residual"});
  const int64_t zero_init_residual = extra.get_int("zero_init_residual", 0);
  TESSERA_CHECK(zero_init_residual == 0 || zero_init_residual == 1,
                "resnet50 zero_init_residual must be 0 or 1, got {}", zero_init_residual);
  // He et al. 2016, Table 1 (50-layer column).
  constexpr int64_t kWidths[] = {64, 128, 256, 512};
  constexpr int64_t kBlocks[] = {3, 4, 6, 3};

  int64_t channels = scale_channels(64, cfg.width_mult);
  add_unit("stem", "conv", ConvBnAct(ConvBnActOptions(cfg.in_channels, channels, 7).stride(2)));
  add_unit("maxpool", "pool",
           torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(3).stride(2).padding(1)));
  std::vector<Bottleneck> blocks;
  int n_block = 0;
  for (int stage = 0; stage < 4; ++stage) {
    const int64_t width = scale_channels(kWidths[stage], cfg.width_mult);
    for (int64_t b = 0; b < kBlocks[stage]; ++b) {
      Bottleneck block(BottleneckOptions(channels, width).stride(stage > 0 && b == 0 ? 2 : 1));
      channels = block->out_channels();
      add_unit(fmt::format("block{}", ++n_block), "block", block);
      blocks.push_back(block);
    }
  }
  add_unit("pool", "pool", torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1)));
  add_unit("flatten", "flatten", torch::nn::Flatten());
  add_unit("fc", "fc", FcBlock(FcBlockOptions(channels, cfg.num_classes)));
  init_conv_bn(*this);
  if (zero_init_residual == 1) {
    torch::NoGradGuard no_grad;
    for (auto& block : blocks) block->conv3->bn->weight.zero_();
  }
}

}  // namespace tessera::models
