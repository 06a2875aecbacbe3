// Shared CNN building blocks (see blocks.h): forward passes and workload descriptions.
#include "tessera/models/blocks.h"

#include "tessera/core/error.h"

namespace tessera::models {

using workload::Layer;
using workload::OpKind;

ConvBnActImpl::ConvBnActImpl(const ConvBnActOptions& options_) : options(options_) {
  TESSERA_CHECK(options.in_channels() > 0 && options.out_channels() > 0,
                "ConvBnAct needs positive channels, got {} -> {}", options.in_channels(),
                options.out_channels());
  TESSERA_CHECK(options.kernel_size() > 0 && options.stride() > 0,
                "ConvBnAct needs a positive kernel and stride, got {} and {}",
                options.kernel_size(), options.stride());
  TESSERA_CHECK(options.groups() > 0 && options.in_channels() % options.groups() == 0 &&
                    options.out_channels() % options.groups() == 0,
                "ConvBnAct groups {} must divide channels {} -> {}", options.groups(),
                options.in_channels(), options.out_channels());
  const int64_t padding = options.padding() >= 0 ? options.padding() : options.kernel_size() / 2;
  conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(options.in_channels(),
                                                                            options.out_channels(),
                                                                            options.kernel_size())
                                                       .stride(options.stride())
                                                       .padding(padding)
                                                       .groups(options.groups())
                                                       .bias(options.bias())));
  bn = register_module("bn", torch::nn::BatchNorm2d(options.out_channels()));
}

torch::Tensor ConvBnActImpl::forward(torch::Tensor x) {
  x = bn(conv(x));
  switch (options.activation()) {
    case Activation::ReLU:
      return torch::relu(x);
    case Activation::ReLU6:
      return torch::hardtanh(x, 0.0, 6.0);  // ReLU6
    case Activation::None:
      break;
  }
  return x;
}

SampleShape ConvBnActImpl::describe(const std::string& prefix, const SampleShape& input,
                                    std::vector<Layer>& layers) {
  SampleShape shape = describe_module(join_name(prefix, "conv"), *conv, input, layers);
  shape = describe_module(join_name(prefix, "bn"), *bn, shape, layers);
  if (options.activation() == Activation::ReLU) {
    layers.push_back(elementwise_layer(join_name(prefix, "relu"), OpKind::Activation, shape));
  } else if (options.activation() == Activation::ReLU6) {
    layers.push_back(elementwise_layer(join_name(prefix, "relu6"), OpKind::Activation, shape));
  }
  return shape;
}

FcBlockImpl::FcBlockImpl(const FcBlockOptions& options_) : options(options_) {
  TESSERA_CHECK(options.in_features() > 0 && options.out_features() > 0,
                "FcBlock needs positive sizes, got {} -> {}", options.in_features(),
                options.out_features());
  TESSERA_CHECK(options.dropout() >= 0.0 && options.dropout() < 1.0,
                "FcBlock dropout must be in [0, 1), got {}", options.dropout());
  if (options.dropout() > 0.0) {
    dropout = register_module("dropout", torch::nn::Dropout(options.dropout()));
  }
  linear =
      register_module("linear", torch::nn::Linear(options.in_features(), options.out_features()));
}

torch::Tensor FcBlockImpl::forward(torch::Tensor x) {
  if (dropout) x = dropout(x);
  x = linear(x);
  return options.relu() ? torch::relu(x) : x;
}

SampleShape FcBlockImpl::describe(const std::string& prefix, const SampleShape& input,
                                  std::vector<Layer>& layers) {
  SampleShape shape = describe_module(join_name(prefix, "linear"), *linear, input, layers);
  if (options.relu()) {
    layers.push_back(elementwise_layer(join_name(prefix, "relu"), OpKind::Activation, shape));
  }
  return shape;
}

BasicBlockImpl::BasicBlockImpl(const BasicBlockOptions& options_) : options(options_) {
  TESSERA_CHECK(options.shortcut() == 'A' || options.shortcut() == 'B',
                "BasicBlock shortcut must be 'A' or 'B', got '{}'", options.shortcut());
  TESSERA_CHECK(options.shortcut() == 'B' || options.out_channels() >= options.in_channels(),
                "BasicBlock shortcut 'A' pads channels and cannot reduce {} to {}",
                options.in_channels(), options.out_channels());
  conv1 = register_module(
      "conv1", ConvBnAct(ConvBnActOptions(options.in_channels(), options.out_channels(), 3)
                             .stride(options.stride())));
  conv2 = register_module(
      "conv2", ConvBnAct(ConvBnActOptions(options.out_channels(), options.out_channels(), 3)
                             .activation(Activation::None)));
  if (options.shortcut() == 'B' && has_projection()) {
    shortcut = register_module(
        "shortcut", ConvBnAct(ConvBnActOptions(options.in_channels(), options.out_channels(), 1)
                                  .stride(options.stride())
                                  .padding(0)
                                  .activation(Activation::None)));
  }
}

bool BasicBlockImpl::has_projection() const {
  return options.stride() != 1 || options.in_channels() != options.out_channels();
}

torch::Tensor BasicBlockImpl::forward(torch::Tensor x) {
  torch::Tensor out = conv2(conv1(x));
  torch::Tensor identity = x;
  if (shortcut) {
    identity = shortcut(x);
  } else if (has_projection()) {
    // Option A: AvgPool2d(kernel 1, stride) keeps every stride-th pixel, then zero channels.
    if (options.stride() != 1) identity = torch::avg_pool2d(identity, 1, options.stride());
    const int64_t missing = options.out_channels() - options.in_channels();
    if (missing > 0) {
      auto sizes = identity.sizes().vec();
      sizes[1] = missing;
      identity = torch::cat({identity, torch::zeros(sizes, identity.options())}, 1);
    }
  }
  return torch::relu(out + identity);
}

SampleShape BasicBlockImpl::describe(const std::string& prefix, const SampleShape& input,
                                     std::vector<Layer>& layers) {
  TESSERA_CHECK(input.size() == 3 && input[0] == options.in_channels(),
                "BasicBlock '{}' expects [{}, H, W], got {}", prefix, options.in_channels(),
                shape_string(input));
  SampleShape out = describe_module(join_name(prefix, "conv1"), *conv1, input, layers);
  out = describe_module(join_name(prefix, "conv2"), *conv2, out, layers);
  SampleShape identity = input;
  if (shortcut) {
    identity = describe_module(join_name(prefix, "shortcut"), *shortcut, input, layers);
  } else if (has_projection() && options.stride() != 1) {
    Layer pool;
    pool.name = join_name(prefix, "shortcut");
    pool.kind = OpKind::Pool;
    pool.in_channels = pool.out_channels = input[0];
    pool.kernel_h = pool.kernel_w = 1;
    pool.stride = options.stride();
    pool.in_h = input[1];
    pool.in_w = input[2];
    pool.out_h = window_output_size(input[1], 1, options.stride(), 0);
    pool.out_w = window_output_size(input[2], 1, options.stride(), 0);
    layers.push_back(pool);
    identity = {options.out_channels(), pool.out_h, pool.out_w};
  } else if (has_projection()) {
    identity[0] = options.out_channels();
  }
  TESSERA_CHECK(identity == out, "BasicBlock '{}': shortcut shape {} differs from residual {}",
                prefix, shape_string(identity), shape_string(out));
  layers.push_back(elementwise_layer(join_name(prefix, "add"), OpKind::Add, out));
  layers.push_back(elementwise_layer(join_name(prefix, "relu"), OpKind::Activation, out));
  return out;
}

InvertedResidualImpl::InvertedResidualImpl(const InvertedResidualOptions& options_)
    : options(options_) {
  TESSERA_CHECK(options.expand_ratio() >= 1, "InvertedResidual expand_ratio must be >= 1, got {}",
                options.expand_ratio());
  const int64_t hidden = options.in_channels() * options.expand_ratio();
  if (options.expand_ratio() != 1) {
    expand = register_module(
        "expand",
        ConvBnAct(
            ConvBnActOptions(options.in_channels(), hidden, 1).activation(Activation::ReLU6)));
  }
  depthwise = register_module("depthwise", ConvBnAct(ConvBnActOptions(hidden, hidden, 3)
                                                         .stride(options.stride())
                                                         .groups(hidden)
                                                         .activation(Activation::ReLU6)));
  project = register_module(
      "project",
      ConvBnAct(ConvBnActOptions(hidden, options.out_channels(), 1).activation(Activation::None)));
}

bool InvertedResidualImpl::uses_residual() const {
  return options.stride() == 1 && options.in_channels() == options.out_channels();
}

torch::Tensor InvertedResidualImpl::forward(torch::Tensor x) {
  torch::Tensor out = expand ? expand(x) : x;
  out = project(depthwise(out));
  return uses_residual() ? out + x : out;
}

SampleShape InvertedResidualImpl::describe(const std::string& prefix, const SampleShape& input,
                                           std::vector<Layer>& layers) {
  SampleShape shape = input;
  if (expand) shape = describe_module(join_name(prefix, "expand"), *expand, shape, layers);
  shape = describe_module(join_name(prefix, "depthwise"), *depthwise, shape, layers);
  shape = describe_module(join_name(prefix, "project"), *project, shape, layers);
  if (uses_residual()) {
    layers.push_back(elementwise_layer(join_name(prefix, "add"), OpKind::Add, shape));
  }
  return shape;
}

void init_conv_bn(torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  // include_self=false: this runs inside constructors, before a shared_ptr owns the model.
  for (auto& child : module.modules(/*include_self=*/false)) {
    if (auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(child.get())) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut, torch::kReLU);
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(child.get())) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
    }
  }
}

}  // namespace tessera::models
