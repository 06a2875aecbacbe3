// torchvision parameter names: the map between a Tessera model's tensor names and the names
// torchvision's ResNet, VGG-11-BN, MobileNetV2 and ViT use in their state dicts, so that a
// state dict saved from PyTorch (as safetensors) imports into a Tessera model and back.
#pragma once

#include <map>
#include <string>

#include "tessera/models/model.h"

namespace tessera::models {

/// Tessera tensor name -> torchvision state-dict name, for every parameter and buffer of `model`.
/// Architectures: resnet18, resnet50, vgg11_bn, mobilenetv2, vit, and resnet20 (laid out as
/// torchvision's ResNet: conv1/bn1, layer1..3, fc). Others are a tessera::Error.
std::map<std::string, std::string> torchvision_names(Model& model);

/// Builds the Tessera model `config` and loads a safetensors state dict with torchvision names
/// into it. Every tensor is checked: a missing, misshaped or unknown name is a tessera::Error
/// naming it and the file; float16/bfloat16/float64 tensors are converted to float32; NaN or Inf
/// values are refused.
Model import_torchvision(const std::string& path, const ModelConfig& config);

/// Writes `model`'s state dict with torchvision names as safetensors (atomic), loadable with
/// `model.load_state_dict(safetensors.torch.load_file(path))` into the torchvision module.
void export_torchvision(const std::string& path, Model& model);

}  // namespace tessera::models
