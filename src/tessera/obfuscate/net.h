// The obfuscator's network: a models::GraphSpec plus its tensors by "<node>.<field>" name. Knobs
// rewrite it, the traced executor runs it, and it converts to and from Tessera models (ResNet-18,
// VGG-11 and any "graph" model in; a "graph" model file out).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tessera/models/graph.h"
#include "tessera/models/model.h"

namespace tessera::obfuscate {

struct Net {
  models::GraphSpec spec;
  /// "<node>.weight", "<node>.bias" (conv with bias, linear, bn), "<node>.running_mean",
  /// "<node>.running_var" (bn), "<node>.value" (constant: [C, H, W]).
  std::map<std::string, torch::Tensor> tensors;
  std::vector<int64_t> input_shape;  ///< [C, H, W]
  int64_t num_classes = 10;

  /// Per-node output shapes for one sample (validates the spec).
  std::vector<models::SampleShape> shapes() const { return spec.shapes(input_shape); }
  const torch::Tensor& tensor(const std::string& name) const;  ///< throws naming a missing one
  /// Appends a node and returns its index.
  int64_t add(models::GraphNode node);
};

/// Reads a Tessera model into a Net: ResNet ("stem"/"block*"/"pool"/"flatten"/"fc" units of
/// ConvBnAct, BasicBlock, pools, FcBlock), VGG-11 (ConvBnAct, MaxPool2d, FcBlock units) and
/// "graph" models. Dropout is dropped (inference). Throws tessera::Error naming a unit it cannot
/// read (e.g. ViT encoder blocks, MobileNetV2's inverted residuals, shortcut 'A').
Net from_model(models::Model& model);

/// Builds the "graph" Tessera model of `net` (hints included), with its tensors, in eval mode.
models::Model to_model(const Net& net);

/// Reference evaluation of the graph with plain ops (no fusion): x [B, C, H, W] -> logits.
torch::Tensor reference_forward(const Net& net, const torch::Tensor& x);

/// Convs and linears in node order: the "layers" that knobs and genomes index.
std::vector<int64_t> weighted_layers(const Net& net);

}  // namespace tessera::obfuscate
