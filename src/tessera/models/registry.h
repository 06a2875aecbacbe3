// The model registry: one plain table from a name ("vgg11_bn", "resnet20", ...) to the function
// that builds it, so a ModelConfig (or a model file's metadata) is enough to rebuild a model.
#pragma once

#include <string>
#include <vector>

#include "tessera/models/model.h"

namespace tessera::models {

struct ModelInfo {
  std::string name;
  std::string description;  ///< one line
};

/// Every registered model, in table order.
std::vector<ModelInfo> list_models();
/// "vgg11_bn, resnet20, resnet18, mobilenetv2, vit": for error messages and help text.
std::string known_model_names();

/// Builds the model described by `config` (validated first; model-specific `extra` options are
/// checked by the model). Freshly initialised, in training mode. An unknown name is a
/// tessera::Error that lists the known names.
Model create(const ModelConfig& config);

/// A deep copy: same config, parameters and buffers copied (no shared storage), same
/// training/eval mode. (LibTorch's Module::clone() does not apply to ModelImpl.)
Model clone(Model& model);

}  // namespace tessera::models
