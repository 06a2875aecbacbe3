// The analytic workload walker (see describe.h). Shapes are checked at every layer, so a
// module whose description disagrees with its own options fails here rather than in a simulator.
#include "tessera/models/describe.h"

#include <fmt/format.h>

#include "tessera/core/error.h"

namespace tessera::models {

using workload::Layer;
using workload::OpKind;

std::string join_name(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

std::string shape_string(const SampleShape& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

int64_t window_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding,
                           bool ceil_mode) {
  TESSERA_CHECK(stride > 0 && kernel > 0 && padding >= 0,
                "window with kernel {}, stride {}, padding {} is invalid", kernel, stride, padding);
  // PyTorch's pooling_output_shape: floor division rounding towards minus infinity, and in ceil
  // mode the last window must start inside the input or the left padding.
  const int64_t numerator = in + 2 * padding - kernel + (ceil_mode ? stride - 1 : 0);
  int64_t out = (numerator >= 0 ? numerator / stride : -((-numerator + stride - 1) / stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= in + padding) --out;
  TESSERA_CHECK(out >= 1,
                "window of size {} (stride {}, padding {}) does not fit an input of size {}",
                kernel, stride, padding, in);
  return out;
}

Layer elementwise_layer(const std::string& name, OpKind kind, const SampleShape& shape) {
  Layer layer;
  layer.name = name;
  layer.kind = kind;
  if (shape.size() == 3) {
    layer.in_channels = shape[0];
    layer.in_h = shape[1];
    layer.in_w = shape[2];
  } else if (shape.size() == 2) {
    layer.in_channels = shape[1];
    layer.in_h = shape[0];
  } else {
    TESSERA_CHECK(shape.size() == 1, "layer '{}' got an input of unsupported shape {}", name,
                  shape_string(shape));
    layer.in_channels = shape[0];
  }
  layer.out_channels = layer.in_channels;
  layer.out_h = layer.in_h;
  layer.out_w = layer.in_w;
  return layer;
}

namespace {

void check_feature_map(const std::string& name, const char* type, const SampleShape& input) {
  TESSERA_CHECK(input.size() == 3, "{} '{}' needs a [C, H, W] input, got {}", type, name,
                shape_string(input));
}

// Windowed ops carry one stride and one padding in core/workload: non-square ones are refused.
int64_t square(const std::string& name, const char* what, int64_t a, int64_t b) {
  TESSERA_CHECK(a == b,
                "layer '{}' has a non-square {} ({} x {}), which a workload cannot describe", name,
                what, a, b);
  return a;
}

SampleShape describe_conv(const std::string& name, torch::nn::Conv2dImpl& conv,
                          const SampleShape& input, std::vector<Layer>& layers) {
  check_feature_map(name, "Conv2d", input);
  const auto& options = conv.options;
  TESSERA_CHECK(input[0] == options.in_channels(), "Conv2d '{}' expects {} input channels, got {}",
                name, options.in_channels(), input[0]);
  TESSERA_CHECK((*options.dilation())[0] == 1 && (*options.dilation())[1] == 1,
                "Conv2d '{}' is dilated, which a workload cannot describe", name);
  const int64_t kernel_h = (*options.kernel_size())[0];
  const int64_t kernel_w = (*options.kernel_size())[1];
  const int64_t stride = square(name, "stride", (*options.stride())[0], (*options.stride())[1]);
  int64_t padding = 0;
  if (const auto* explicit_padding = c10::get_if<torch::ExpandingArray<2>>(&options.padding())) {
    padding = square(name, "padding", (**explicit_padding)[0], (**explicit_padding)[1]);
  } else if (c10::get_if<torch::enumtype::kSame>(&options.padding())) {
    TESSERA_CHECK(kernel_h == kernel_w && kernel_h % 2 == 1,
                  "Conv2d '{}' uses padding 'same' with an even kernel", name);
    padding = (kernel_h - 1) / 2;
  }
  Layer layer;
  layer.name = name;
  layer.kind = OpKind::Conv2d;
  layer.in_channels = input[0];
  layer.out_channels = options.out_channels();
  layer.kernel_h = kernel_h;
  layer.kernel_w = kernel_w;
  layer.stride = stride;
  layer.padding = padding;
  layer.groups = options.groups();
  layer.in_h = input[1];
  layer.in_w = input[2];
  layer.out_h = window_output_size(input[1], kernel_h, stride, padding);
  layer.out_w = window_output_size(input[2], kernel_w, stride, padding);
  layers.push_back(layer);
  return {layer.out_channels, layer.out_h, layer.out_w};
}

SampleShape describe_pool(const std::string& name, const SampleShape& input, int64_t kernel,
                          int64_t stride, int64_t padding, bool ceil_mode,
                          std::vector<Layer>& layers) {
  check_feature_map(name, "pooling layer", input);
  Layer layer;
  layer.name = name;
  layer.kind = OpKind::Pool;
  layer.in_channels = layer.out_channels = input[0];
  layer.kernel_h = layer.kernel_w = kernel;
  layer.stride = stride;
  layer.padding = padding;
  layer.in_h = input[1];
  layer.in_w = input[2];
  layer.out_h = window_output_size(input[1], kernel, stride, padding, ceil_mode);
  layer.out_w = window_output_size(input[2], kernel, stride, padding, ceil_mode);
  layers.push_back(layer);
  return {input[0], layer.out_h, layer.out_w};
}

SampleShape describe_adaptive_avg_pool(const std::string& name,
                                       torch::nn::AdaptiveAvgPool2dImpl& pool,
                                       const SampleShape& input, std::vector<Layer>& layers) {
  check_feature_map(name, "AdaptiveAvgPool2d", input);
  const auto& size = *pool.options.output_size();
  const int64_t out_h = size[0].has_value() ? *size[0] : input[1];
  const int64_t out_w = size[1].has_value() ? *size[1] : input[2];
  // Adaptive pooling is a plain window only when the output divides the input.
  TESSERA_CHECK(out_h > 0 && out_w > 0 && input[1] % out_h == 0 && input[2] % out_w == 0,
                "AdaptiveAvgPool2d '{}' maps {} to {}x{}, which is not a uniform window", name,
                shape_string(input), out_h, out_w);
  const int64_t kernel_h = input[1] / out_h;
  const int64_t kernel_w = input[2] / out_w;
  TESSERA_CHECK(kernel_h == kernel_w,
                "AdaptiveAvgPool2d '{}' maps {} to {}x{}, a non-square window", name,
                shape_string(input), out_h, out_w);
  return describe_pool(name, input, kernel_h, kernel_h, 0, false, layers);
}

SampleShape describe_linear(const std::string& name, torch::nn::LinearImpl& linear,
                            const SampleShape& input, std::vector<Layer>& layers) {
  TESSERA_CHECK(input.size() == 1 || input.size() == 2,
                "Linear '{}' needs an [F] or [T, D] input, got {}", name, shape_string(input));
  const auto& options = linear.options;
  TESSERA_CHECK(input.back() == options.in_features(), "Linear '{}' expects {} features, got {}",
                name, options.in_features(), input.back());
  Layer layer;
  layer.name = name;
  layer.kind = OpKind::Linear;
  layer.in_channels = options.in_features();
  layer.out_channels = options.out_features();
  layer.in_h = layer.out_h = input.size() == 2 ? input[0] : 1;
  layers.push_back(layer);
  SampleShape output = input;
  output.back() = options.out_features();
  return output;
}

SampleShape describe_flatten(const std::string& name, torch::nn::FlattenImpl& flatten,
                             const SampleShape& input) {
  // Batch dimension 0 is not part of the sample shape, so only start 1 / end -1 (everything
  // after the batch) is supported; that is what every classifier here uses.
  TESSERA_CHECK(flatten.options.start_dim() == 1 && flatten.options.end_dim() == -1,
                "Flatten '{}' must flatten dims 1..-1 to be described", name);
  int64_t features = 1;
  for (int64_t side : input) features *= side;
  return {features};
}

}  // namespace

SampleShape describe_module(const std::string& prefix, torch::nn::Module& module,
                            const SampleShape& input, std::vector<Layer>& layers) {
  if (auto* self_describing = dynamic_cast<DescribesWorkload*>(&module)) {
    return self_describing->describe(prefix, input, layers);
  }
  if (auto* conv = dynamic_cast<torch::nn::Conv2dImpl*>(&module)) {
    return describe_conv(prefix, *conv, input, layers);
  }
  if (auto* linear = dynamic_cast<torch::nn::LinearImpl*>(&module)) {
    return describe_linear(prefix, *linear, input, layers);
  }
  if (auto* bn = dynamic_cast<torch::nn::BatchNorm2dImpl*>(&module)) {
    check_feature_map(prefix, "BatchNorm2d", input);
    TESSERA_CHECK(input[0] == bn->options.num_features(),
                  "BatchNorm2d '{}' expects {} channels, got {}", prefix,
                  bn->options.num_features(), input[0]);
    layers.push_back(elementwise_layer(prefix, OpKind::Norm, input));
    return input;
  }
  if (auto* norm = dynamic_cast<torch::nn::LayerNormImpl*>(&module)) {
    const auto& normalized = norm->options.normalized_shape();
    TESSERA_CHECK(normalized.size() == 1 && !input.empty() && input.back() == normalized[0],
                  "LayerNorm '{}' over {} does not fit input {}", prefix, shape_string(normalized),
                  shape_string(input));
    layers.push_back(elementwise_layer(prefix, OpKind::Norm, input));
    return input;
  }
  if (dynamic_cast<torch::nn::ReLUImpl*>(&module) || dynamic_cast<torch::nn::ReLU6Impl*>(&module) ||
      dynamic_cast<torch::nn::GELUImpl*>(&module)) {
    layers.push_back(elementwise_layer(prefix, OpKind::Activation, input));
    return input;
  }
  if (auto* pool = dynamic_cast<torch::nn::MaxPool2dImpl*>(&module)) {
    const auto& options = pool->options;
    TESSERA_CHECK((*options.dilation())[0] == 1 && (*options.dilation())[1] == 1,
                  "MaxPool2d '{}' is dilated, which a workload cannot describe", prefix);
    const int64_t kernel =
        square(prefix, "kernel", (*options.kernel_size())[0], (*options.kernel_size())[1]);
    const int64_t stride = square(prefix, "stride", (*options.stride())[0], (*options.stride())[1]);
    const int64_t padding =
        square(prefix, "padding", (*options.padding())[0], (*options.padding())[1]);
    return describe_pool(prefix, input, kernel, stride, padding, options.ceil_mode(), layers);
  }
  if (auto* pool = dynamic_cast<torch::nn::AvgPool2dImpl*>(&module)) {
    const auto& options = pool->options;
    const int64_t kernel =
        square(prefix, "kernel", (*options.kernel_size())[0], (*options.kernel_size())[1]);
    const int64_t stride = square(prefix, "stride", (*options.stride())[0], (*options.stride())[1]);
    const int64_t padding =
        square(prefix, "padding", (*options.padding())[0], (*options.padding())[1]);
    return describe_pool(prefix, input, kernel, stride, padding, options.ceil_mode(), layers);
  }
  if (auto* pool = dynamic_cast<torch::nn::AdaptiveAvgPool2dImpl*>(&module)) {
    return describe_adaptive_avg_pool(prefix, *pool, input, layers);
  }
  if (auto* flatten = dynamic_cast<torch::nn::FlattenImpl*>(&module)) {
    return describe_flatten(prefix, *flatten, input);
  }
  if (dynamic_cast<torch::nn::DropoutImpl*>(&module) ||
      dynamic_cast<torch::nn::IdentityImpl*>(&module)) {
    return input;  // identity at inference: no layer
  }
  if (dynamic_cast<torch::nn::SequentialImpl*>(&module)) {
    SampleShape shape = input;
    for (const auto& child : module.named_children()) {
      shape = describe_module(join_name(prefix, child.key()), *child.value(), shape, layers);
    }
    return shape;
  }
  throw Error(
      fmt::format("cannot describe module '{}' of type {} as a workload", prefix, module.name()));
}

}  // namespace tessera::models
