// The analytic workload walker: turns a module tree plus an input shape into core/workload
// layers without running it. Built-in LibTorch layers are handled here; our own blocks
// (residual, inverted residual, transformer) describe themselves through DescribesWorkload.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/workload.h"

namespace tessera::models {

/// Shape of one sample as it flows through a model: [C, H, W] (feature maps), [F] (flattened
/// features) or [T, D] (tokens).
using SampleShape = std::vector<int64_t>;

/// Implemented by composite modules whose forward() is not a plain chain of children (residual
/// blocks, attention): they append their layers in execution order and return the output shape.
class DescribesWorkload {
 public:
  virtual ~DescribesWorkload() = default;
  /// `prefix` is the module's path in the model ("block3"); layer names extend it
  /// ("block3.conv1"). Throws tessera::Error if `input` does not fit the module.
  virtual SampleShape describe(const std::string& prefix, const SampleShape& input,
                               std::vector<workload::Layer>& layers) = 0;
};

/// Appends the layers of `module` (named `prefix`) for one sample of shape `input` and returns
/// the output shape. Handles DescribesWorkload modules and torch::nn Conv2d, BatchNorm2d,
/// LayerNorm, ReLU, ReLU6, GELU, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, Linear, Flatten,
/// Dropout, Identity and Sequential (recursively, children named prefix.0, prefix.1, ...).
/// Any other module type is a tessera::Error naming the module.
SampleShape describe_module(const std::string& prefix, torch::nn::Module& module,
                            const SampleShape& input, std::vector<workload::Layer>& layers);

/// "a" + "." + "b", or just "b" when `prefix` is empty.
std::string join_name(const std::string& prefix, const std::string& name);

/// A weightless layer (Pool excluded) that keeps the shape: Activation, Norm or Add. Its
/// channels are the last dimension of [F] / [T, D] shapes and the first of [C, H, W]; rows
/// (T) go into in_h/out_h.
workload::Layer elementwise_layer(const std::string& name, workload::OpKind kind,
                                  const SampleShape& shape);

/// Output side of a convolution or pooling window: floor or ceil of
/// (in + 2 * padding - kernel) / stride, plus 1 (PyTorch's rule, including its ceil_mode
/// correction that the last window must start inside the input or left padding).
int64_t window_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t padding,
                           bool ceil_mode = false);

/// "[3, 32, 32]", for error messages.
std::string shape_string(const SampleShape& shape);

}  // namespace tessera::models
