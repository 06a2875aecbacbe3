// The "graph" model: a CNN written as a list of nodes (conv, BN, ReLU, pool, FC, add, concat,
// constant) in topological order, stored in ModelConfig::extra["graph"]. It holds networks that no
// fixed architecture expresses (an obfuscated ResNet with split, widened and extra layers), so a
// rewritten network is still a normal Tessera model file that every command can load and run.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/models/describe.h"
#include "tessera/models/model.h"

namespace tessera::models {

enum class GraphOp {
  Conv,
  BatchNorm,
  ReLU,
  MaxPool,
  GlobalAvgPool,
  Flatten,
  Linear,
  Add,
  Concat,
  Constant
};
std::string graph_op_name(GraphOp op);  ///< "conv", "bn", "relu", "maxpool", "gap", ...
GraphOp parse_graph_op(const std::string& name);

/// One node. `inputs` index earlier nodes; -1 is the model input. Fields by op:
///  - conv: in/out channels, kernel (square), stride, padding, groups, bias; 1 input;
///  - bn: out_channels; relu, flatten, gap: 1 input; maxpool: kernel, stride, ceil_mode;
///  - linear: in/out features (bias always); add: 2 inputs; concat: >= 2 inputs (channels);
///  - constant: no input, a [C, H, W] or [F] buffer "value" (broadcast over the batch).
/// `hints` is opaque to the model (an executor's fusion and schedule choices travel in it).
struct GraphNode {
  std::string name;  ///< unique, no '.', the parameter prefix ("graph.<name>.weight")
  GraphOp op = GraphOp::ReLU;
  std::vector<int64_t> inputs;
  int64_t in_channels = 0, out_channels = 0, kernel = 1, stride = 1, padding = 0, groups = 1;
  bool bias = false;
  bool ceil_mode = false;
  std::vector<int64_t> shape;  ///< constant only: [C, H, W] or [F]
  nlohmann::json hints = nlohmann::json::object();

  nlohmann::json to_json() const;
  static GraphNode from_json(const nlohmann::json& json);
};

struct GraphSpec {
  std::vector<GraphNode> nodes;  ///< topological order; the last node is the output

  nlohmann::json to_json() const;
  static GraphSpec from_json(const nlohmann::json& json);
  /// Per-node output shapes ([C, H, W] or [F]) for one sample of `input` shape. Throws
  /// tessera::Error naming the node for bad inputs, channel mismatches and duplicate names.
  std::vector<SampleShape> shapes(const SampleShape& input) const;
  /// Consumers of each node (indices of the nodes that read it).
  std::vector<std::vector<int64_t>> consumers() const;
  int64_t find(const std::string& name) const;  ///< index, or -1
};

/// Evaluates a graph with its own parameters: "<node>.weight", "<node>.bias", BN
/// "<node>.running_mean/var", constant "<node>.value". x: [B, C, H, W] -> last node's output.
class GraphBodyImpl : public torch::nn::Module, public DescribesWorkload {
 public:
  GraphBodyImpl(GraphSpec spec, SampleShape input);
  torch::Tensor forward(torch::Tensor x);
  SampleShape describe(const std::string& prefix, const SampleShape& input,
                       std::vector<workload::Layer>& layers) override;
  const GraphSpec& spec() const { return spec_; }

 private:
  GraphSpec spec_;
  SampleShape input_;
  std::vector<torch::nn::AnyModule> modules_;  ///< per node (empty for weightless ops)
  std::vector<torch::Tensor> constants_;       ///< per node (undefined unless constant)
};
TORCH_MODULE(GraphBody);

/// "graph": the network of config.extra["graph"] (GraphSpec::to_json(); absent: a tiny
/// conv-relu-pool-fc default). Units "g0", "g1", ...: the graph is cut wherever no later node
/// reads an earlier one, so a chain gives one unit per node and a residual block one unit.
/// Parameters "g<k>.<node>.weight" etc. The output must be [num_classes].
class GraphModelImpl : public ModelImpl {
 public:
  explicit GraphModelImpl(ModelConfig config);
};

}  // namespace tessera::models
