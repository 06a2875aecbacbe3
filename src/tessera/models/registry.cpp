// The model registry table (see registry.h).
#include "tessera/models/registry.h"

#include <fmt/format.h>

#include <memory>

#include "tessera/core/error.h"
#include "tessera/models/graph.h"
#include "tessera/models/mobilenetv2.h"
#include "tessera/models/resnet.h"
#include "tessera/models/resnet50.h"
#include "tessera/models/torchscript.h"
#include "tessera/models/vgg.h"
#include "tessera/models/vit.h"

namespace tessera::models {

namespace {

// ModuleHolder<ModelImpl> only takes a shared_ptr<ModelImpl>, not one to a derived class.
Model as_model(std::shared_ptr<ModelImpl> impl) { return Model(std::move(impl)); }

struct Entry {
  const char* name;
  const char* description;
  Model (*build)(const ModelConfig& config);
};

const Entry kModels[] = {
    {"vgg11_bn", "VGG-11 with batch norm, CIFAR layout (13 conv/pool units + 3 FC), 9.8M params",
     [](const ModelConfig& config) { return as_model(std::make_shared<Vgg11BnImpl>(config)); }},
    {"resnet20", "CIFAR ResNet-20 (3x3 BasicBlocks, 16/32/64 channels, shortcut A), 0.27M params",
     [](const ModelConfig& config) {
       return as_model(std::make_shared<ResNetImpl>(config, resnet20_layout()));
     }},
    {"resnet18", "CIFAR ResNet-18 (3x3 stem, no max-pool, 64..512 channels), 11.2M params",
     [](const ModelConfig& config) {
       return as_model(std::make_shared<ResNetImpl>(config, resnet18_layout()));
     }},
    {"resnet50",
     "ImageNet ResNet-50 (7x7 stem + max-pool, bottlenecks [3,4,6,3]), 25.6M params at 1000 cls",
     [](const ModelConfig& config) { return as_model(std::make_shared<ResNet50Impl>(config)); }},
    {"mobilenetv2", "MobileNetV2 with CIFAR strides (17 inverted residual blocks), 2.2M params",
     [](const ModelConfig& config) { return as_model(std::make_shared<MobileNetV2Impl>(config)); }},
    {"vit", "small ViT (patch 4, dim 64, depth 6, 4 heads, MLP x2 by default), 0.2M params",
     [](const ModelConfig& config) { return as_model(std::make_shared<VitImpl>(config)); }},
    {"graph", "a CNN as a node list in extra.graph (obfuscated networks; see models/graph.h)",
     [](const ModelConfig& config) { return as_model(std::make_shared<GraphModelImpl>(config)); }},
};

}  // namespace

std::vector<ModelInfo> list_models() {
  std::vector<ModelInfo> out;
  for (const Entry& entry : kModels) out.push_back(ModelInfo{entry.name, entry.description});
  return out;
}

std::string known_model_names() {
  std::string names;
  for (const Entry& entry : kModels) names += (names.empty() ? "" : ", ") + std::string(entry.name);
  return names;
}

Model create(const ModelConfig& config) {
  TESSERA_CHECK(config.name != kTorchScriptArch,
                "a '{}' model is loaded from its TorchScript file, not built by name", config.name);
  config.validate();  // names an unknown model and lists the known ones
  for (const Entry& entry : kModels) {
    if (config.name == entry.name) return entry.build(config);
  }
  throw Error(fmt::format("unknown model '{}' (known: {})", config.name, known_model_names()));
}

Model clone(Model& model) {
  if (is_imported(model)) return clone_torchscript(model);
  Model copy = create(model->config());
  torch::NoGradGuard no_grad;
  auto source_parameters = model->named_parameters();
  for (auto& item : copy->named_parameters()) item.value().copy_(source_parameters[item.key()]);
  auto source_buffers = model->named_buffers();
  for (auto& item : copy->named_buffers()) item.value().copy_(source_buffers[item.key()]);
  copy->train(model->is_training());
  return copy;
}

}  // namespace tessera::models
