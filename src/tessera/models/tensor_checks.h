// Value checks on the tensors of a model file, shared by every model loader: one NaN or Inf
// weight, or a negative BatchNorm running variance, makes every prediction meaningless.
#pragma once

#include <torch/torch.h>

#include <string>

#include "tessera/core/error.h"

namespace tessera::models {

/// Throws tessera::Error naming `path` and `name` when a floating `tensor` holds NaN or Inf, or
/// when `name` is a BatchNorm running variance ("...running_var") with a negative value.
inline void check_tensor_values(const std::string& path, const std::string& name,
                                const torch::Tensor& tensor) {
  if (!tensor.is_floating_point()) return;
  TESSERA_CHECK(torch::isfinite(tensor).all().item<bool>(), "'{}': tensor '{}' holds NaN or Inf",
                path, name);
  const std::string suffix = "running_var";
  const bool is_variance = name.size() >= suffix.size() &&
                           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  TESSERA_CHECK(!is_variance || tensor.numel() == 0 || tensor.min().item<double>() >= 0,
                "'{}': tensor '{}' is a BatchNorm running variance with a negative value", path,
                name);
}

}  // namespace tessera::models
