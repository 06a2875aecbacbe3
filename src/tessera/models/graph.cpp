// The "graph" model (see graph.h): JSON spec, shape inference, evaluation and workload.
#include "tessera/models/graph.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <set>

#include "tessera/core/error.h"
#include "tessera/core/json.h"

namespace tessera::models {

namespace {

const std::pair<GraphOp, const char*> kOpNames[] = {
    {GraphOp::Conv, "conv"},        {GraphOp::BatchNorm, "bn"},      {GraphOp::ReLU, "relu"},
    {GraphOp::MaxPool, "maxpool"},  {GraphOp::GlobalAvgPool, "gap"}, {GraphOp::Flatten, "flatten"},
    {GraphOp::Linear, "linear"},    {GraphOp::Add, "add"},           {GraphOp::Concat, "concat"},
    {GraphOp::Constant, "constant"}};

int64_t get_int(const nlohmann::json& json, const char* key, int64_t fallback) {
  if (!json.contains(key)) return fallback;
  return json_integer(json.at(key), fmt::format("graph node field '{}'", key),
                      std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max());
}

void expect_inputs(const GraphNode& node, size_t lo, size_t hi) {
  TESSERA_CHECK(node.inputs.size() >= lo && node.inputs.size() <= hi,
                "graph node '{}' ({}) needs {} to {} inputs, got {}", node.name,
                graph_op_name(node.op), lo, hi, node.inputs.size());
}

}  // namespace

std::string graph_op_name(GraphOp op) {
  for (const auto& [value, name] : kOpNames)
    if (value == op) return name;
  return "?";
}

GraphOp parse_graph_op(const std::string& name) {
  for (const auto& [value, text] : kOpNames)
    if (name == text) return value;
  throw Error(fmt::format("unknown graph op '{}'", name));
}

nlohmann::json GraphNode::to_json() const {
  nlohmann::json j{{"name", name}, {"op", graph_op_name(op)}, {"inputs", inputs}};
  if (op == GraphOp::Conv || op == GraphOp::Linear) j["in"] = in_channels;
  if (op == GraphOp::Conv || op == GraphOp::Linear || op == GraphOp::BatchNorm)
    j["out"] = out_channels;
  if (op == GraphOp::Conv || op == GraphOp::MaxPool) {
    j["kernel"] = kernel;
    j["stride"] = stride;
    j["padding"] = padding;
  }
  if (op == GraphOp::Conv) {
    j["groups"] = groups;
    j["bias"] = bias;
  }
  if (op == GraphOp::MaxPool) j["ceil_mode"] = ceil_mode;
  if (op == GraphOp::Constant) j["shape"] = shape;
  if (!hints.empty()) j["hints"] = hints;
  return j;
}

GraphNode GraphNode::from_json(const nlohmann::json& j) {
  TESSERA_CHECK(j.is_object() && j.contains("name") && j.at("name").is_string() &&
                    j.contains("op") && j.at("op").is_string(),
                "graph node needs string 'name' and 'op', got {}", json_excerpt(j));
  GraphNode node;
  node.name = j.at("name").get<std::string>();
  node.op = parse_graph_op(j.at("op").get<std::string>());
  constexpr int64_t kMaxIndex = int64_t{1} << 40;
  if (j.contains("inputs"))
    node.inputs = json_integer_array(j.at("inputs"), "graph node inputs", -1, kMaxIndex);
  node.in_channels = get_int(j, "in", 0);
  node.out_channels = get_int(j, "out", 0);
  node.kernel = get_int(j, "kernel", 1);
  node.stride = get_int(j, "stride", 1);
  node.padding = get_int(j, "padding", 0);
  node.groups = get_int(j, "groups", 1);
  node.bias = j.value("bias", false);
  node.ceil_mode = j.value("ceil_mode", false);
  if (j.contains("shape"))
    node.shape = json_integer_array(j.at("shape"), "graph node shape", -1, kMaxIndex);
  if (j.contains("hints")) node.hints = j.at("hints");
  return node;
}

nlohmann::json GraphSpec::to_json() const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& node : nodes) list.push_back(node.to_json());
  return list;
}

GraphSpec GraphSpec::from_json(const nlohmann::json& json) {
  TESSERA_CHECK(json.is_array() && !json.empty(), "graph spec must be a non-empty array of nodes");
  GraphSpec spec;
  for (const auto& item : json) spec.nodes.push_back(GraphNode::from_json(item));
  return spec;
}

int64_t GraphSpec::find(const std::string& name) const {
  for (size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i].name == name) return static_cast<int64_t>(i);
  return -1;
}

std::vector<std::vector<int64_t>> GraphSpec::consumers() const {
  std::vector<std::vector<int64_t>> out(nodes.size());
  for (size_t i = 0; i < nodes.size(); ++i)
    for (int64_t in : nodes[i].inputs)
      if (in >= 0) out[static_cast<size_t>(in)].push_back(static_cast<int64_t>(i));
  return out;
}

std::vector<SampleShape> GraphSpec::shapes(const SampleShape& input) const {
  TESSERA_CHECK(!nodes.empty(), "graph has no nodes");
  std::vector<SampleShape> out;
  std::set<std::string> names;
  for (size_t i = 0; i < nodes.size(); ++i) {
    const GraphNode& n = nodes[i];
    TESSERA_CHECK(!n.name.empty() && n.name.find('.') == std::string::npos,
                  "graph node {} has an empty name or one with '.': '{}'", i, n.name);
    TESSERA_CHECK(names.insert(n.name).second, "graph node name '{}' is used twice", n.name);
    std::vector<SampleShape> in;
    for (int64_t k : n.inputs) {
      TESSERA_CHECK(k >= -1 && k < static_cast<int64_t>(i),
                    "graph node '{}' reads node {}, which is not before it", n.name, k);
      in.push_back(k < 0 ? input : out[static_cast<size_t>(k)]);
    }
    const auto feature_map = [&](size_t count) {
      expect_inputs(n, count, count);
      for (const auto& s : in)
        TESSERA_CHECK(s.size() == 3, "graph node '{}' needs a [C, H, W] input, got {}", n.name,
                      shape_string(s));
    };
    SampleShape shape;
    switch (n.op) {
      case GraphOp::Conv:
        feature_map(1);
        TESSERA_CHECK(in[0][0] == n.in_channels && n.out_channels > 0 && n.groups > 0 &&
                          n.in_channels % n.groups == 0 && n.out_channels % n.groups == 0,
                      "graph conv '{}' ({} -> {}, groups {}) does not fit input {}", n.name,
                      n.in_channels, n.out_channels, n.groups, shape_string(in[0]));
        shape = {n.out_channels, window_output_size(in[0][1], n.kernel, n.stride, n.padding),
                 window_output_size(in[0][2], n.kernel, n.stride, n.padding)};
        break;
      case GraphOp::BatchNorm:
        feature_map(1);
        TESSERA_CHECK(in[0][0] == n.out_channels, "graph bn '{}' has {} channels, input {}", n.name,
                      n.out_channels, shape_string(in[0]));
        shape = in[0];
        break;
      case GraphOp::MaxPool:
        feature_map(1);
        shape = {in[0][0], window_output_size(in[0][1], n.kernel, n.stride, n.padding, n.ceil_mode),
                 window_output_size(in[0][2], n.kernel, n.stride, n.padding, n.ceil_mode)};
        break;
      case GraphOp::GlobalAvgPool:
        feature_map(1);
        shape = {in[0][0], 1, 1};
        break;
      case GraphOp::ReLU:
        expect_inputs(n, 1, 1);
        shape = in[0];
        break;
      case GraphOp::Flatten:
        feature_map(1);
        shape = {in[0][0] * in[0][1] * in[0][2]};
        break;
      case GraphOp::Linear:
        expect_inputs(n, 1, 1);
        TESSERA_CHECK(in[0].size() == 1 && in[0][0] == n.in_channels && n.out_channels > 0,
                      "graph linear '{}' ({} -> {}) does not fit input {}", n.name, n.in_channels,
                      n.out_channels, shape_string(in[0]));
        shape = {n.out_channels};
        break;
      case GraphOp::Add:
        expect_inputs(n, 2, 2);
        TESSERA_CHECK(in[0] == in[1], "graph add '{}' adds {} and {}", n.name, shape_string(in[0]),
                      shape_string(in[1]));
        shape = in[0];
        break;
      case GraphOp::Concat: {
        expect_inputs(n, 2, 64);
        for (const auto& s : in)
          TESSERA_CHECK(s.size() == 3, "graph concat '{}' needs maps", n.name);
        shape = in[0];
        for (size_t k = 1; k < in.size(); ++k) {
          TESSERA_CHECK(in[k][1] == shape[1] && in[k][2] == shape[2],
                        "graph concat '{}' joins {} and {}", n.name, shape_string(shape),
                        shape_string(in[k]));
          shape[0] += in[k][0];
        }
        break;
      }
      case GraphOp::Constant:
        expect_inputs(n, 0, 0);
        TESSERA_CHECK(n.shape.size() == 3 || n.shape.size() == 1,
                      "graph constant '{}' needs a [C, H, W] or [F] shape", n.name);
        shape = n.shape;
        break;
    }
    for (int64_t d : shape)
      TESSERA_CHECK(d > 0, "graph node '{}' has an empty output {}", n.name, shape_string(shape));
    out.push_back(shape);
  }
  return out;
}

GraphBodyImpl::GraphBodyImpl(GraphSpec spec, SampleShape input)
    : spec_(std::move(spec)), input_(std::move(input)) {
  spec_.shapes(input_);  // validates
  for (const GraphNode& n : spec_.nodes) {
    torch::nn::AnyModule module;
    torch::Tensor constant;
    switch (n.op) {
      case GraphOp::Conv: {
        auto conv =
            torch::nn::Conv2d(torch::nn::Conv2dOptions(n.in_channels, n.out_channels, n.kernel)
                                  .stride(n.stride)
                                  .padding(n.padding)
                                  .groups(n.groups)
                                  .bias(n.bias));
        register_module(n.name, conv);
        module = torch::nn::AnyModule(conv);
        break;
      }
      case GraphOp::BatchNorm: {
        auto bn = torch::nn::BatchNorm2d(n.out_channels);
        register_module(n.name, bn);
        module = torch::nn::AnyModule(bn);
        break;
      }
      case GraphOp::Linear: {
        auto linear = torch::nn::Linear(n.in_channels, n.out_channels);
        register_module(n.name, linear);
        module = torch::nn::AnyModule(linear);
        break;
      }
      case GraphOp::MaxPool: {
        auto pool = torch::nn::MaxPool2d(
            torch::nn::MaxPool2dOptions(n.kernel).stride(n.stride).padding(n.padding).ceil_mode(
                n.ceil_mode));
        register_module(n.name, pool);
        module = torch::nn::AnyModule(pool);
        break;
      }
      case GraphOp::GlobalAvgPool: {
        auto pool = torch::nn::AdaptiveAvgPool2d(torch::nn::AdaptiveAvgPool2dOptions(1));
        register_module(n.name, pool);
        module = torch::nn::AnyModule(pool);
        break;
      }
      case GraphOp::Flatten: {
        auto flatten = torch::nn::Flatten();
        register_module(n.name, flatten);
        module = torch::nn::AnyModule(flatten);
        break;
      }
      case GraphOp::Constant: {
        auto holder = std::make_shared<torch::nn::Module>();
        constant = holder->register_buffer("value", torch::zeros(n.shape));
        register_module(n.name, holder);
        break;
      }
      default:
        break;
    }
    modules_.push_back(std::move(module));
    constants_.push_back(constant);
  }
}

torch::Tensor GraphBodyImpl::forward(torch::Tensor x) {
  std::vector<torch::Tensor> values(spec_.nodes.size());
  const auto in = [&](const GraphNode& n, size_t k) {
    return n.inputs[k] < 0 ? x : values[static_cast<size_t>(n.inputs[k])];
  };
  for (size_t i = 0; i < spec_.nodes.size(); ++i) {
    const GraphNode& n = spec_.nodes[i];
    switch (n.op) {
      case GraphOp::ReLU:
        values[i] = torch::relu(in(n, 0));
        break;
      case GraphOp::Add:
        values[i] = in(n, 0) + in(n, 1);
        break;
      case GraphOp::Concat: {
        std::vector<torch::Tensor> parts;
        for (size_t k = 0; k < n.inputs.size(); ++k) parts.push_back(in(n, k));
        values[i] = torch::cat(parts, 1);
        break;
      }
      case GraphOp::Constant:
        values[i] = constants_[i].unsqueeze(0);
        break;
      default:
        values[i] = modules_[i].forward(in(n, 0));
        break;
    }
  }
  return values.back();
}

SampleShape GraphBodyImpl::describe(const std::string& prefix, const SampleShape& input,
                                    std::vector<workload::Layer>& layers) {
  TESSERA_CHECK(input == input_, "graph body '{}' was built for input {}, got {}", prefix,
                shape_string(input_), shape_string(input));
  const auto shapes = spec_.shapes(input);
  for (size_t i = 0; i < spec_.nodes.size(); ++i) {
    const GraphNode& n = spec_.nodes[i];
    const SampleShape& in =
        n.inputs.empty() ? shapes[i] : (n.inputs[0] < 0 ? input : shapes[n.inputs[0]]);
    const std::string name = join_name(prefix, n.name);
    if (n.op == GraphOp::ReLU) {
      layers.push_back(elementwise_layer(name, workload::OpKind::Activation, shapes[i]));
    } else if (n.op == GraphOp::Add) {
      layers.push_back(elementwise_layer(name, workload::OpKind::Add, shapes[i]));
    } else if (!modules_[i].is_empty()) {
      describe_module(name, *modules_[i].ptr(), in, layers);
    }
  }
  return shapes.back();
}

namespace {

// Used when extra.graph is absent: conv3x3(8) -> relu -> global pool -> flatten -> linear.
GraphSpec default_graph(const ModelConfig& cfg) {
  GraphSpec spec;
  GraphNode conv;
  conv.name = "conv";
  conv.op = GraphOp::Conv;
  conv.inputs = {-1};
  conv.in_channels = cfg.in_channels;
  conv.out_channels = 8;
  conv.kernel = 3;
  conv.padding = 1;
  spec.nodes.push_back(conv);
  const auto simple = [&](const char* name, GraphOp op) {
    GraphNode n;
    n.name = name;
    n.op = op;
    n.inputs = {static_cast<int64_t>(spec.nodes.size()) - 1};
    spec.nodes.push_back(n);
  };
  simple("relu", GraphOp::ReLU);
  simple("pool", GraphOp::GlobalAvgPool);
  simple("flatten", GraphOp::Flatten);
  simple("fc", GraphOp::Linear);
  spec.nodes.back().in_channels = 8;
  spec.nodes.back().out_channels = cfg.num_classes;
  return spec;
}

std::string unit_kind(const GraphSpec& segment) {
  if (segment.nodes.size() != 1) return "block";
  switch (segment.nodes[0].op) {
    case GraphOp::Conv:
    case GraphOp::BatchNorm:
    case GraphOp::ReLU:
      return "conv";
    case GraphOp::MaxPool:
    case GraphOp::GlobalAvgPool:
      return "pool";
    case GraphOp::Flatten:
      return "flatten";
    case GraphOp::Linear:
      return "fc";
    default:
      return "block";
  }
}

}  // namespace

GraphModelImpl::GraphModelImpl(ModelConfig config) : ModelImpl(std::move(config)) {
  const ModelConfig& cfg = this->config();
  const ExtraOptions extra(cfg, {"graph"});
  const GraphSpec spec = cfg.extra.contains("graph") ? GraphSpec::from_json(cfg.extra.at("graph"))
                                                     : default_graph(cfg);
  const SampleShape input = {cfg.in_channels, cfg.image_size, cfg.image_size};
  const auto shapes = spec.shapes(input);
  TESSERA_CHECK(shapes.back() == SampleShape{cfg.num_classes},
                "graph model ends in {}, expected [{}]", shape_string(shapes.back()),
                cfg.num_classes);
  // Units: the graph is cut after node c when no later node reads anything before c, so a
  // sequential stretch becomes one unit per node and a residual block one unit.
  const int64_t n = static_cast<int64_t>(spec.nodes.size());
  std::vector<int64_t> min_input(static_cast<size_t>(n) + 1, n);  // over nodes >= j
  for (int64_t j = n - 1; j >= 0; --j) {
    min_input[j] = min_input[j + 1];
    for (int64_t k : spec.nodes[j].inputs) min_input[j] = std::min(min_input[j], k);
  }
  int64_t begin = 0;
  for (int64_t c = 0; c < n; ++c) {
    if (c + 1 < n && min_input[c + 1] < c) continue;
    GraphSpec segment;
    for (int64_t j = begin; j <= c; ++j) {
      GraphNode node = spec.nodes[j];
      for (int64_t& k : node.inputs) k = (k < begin) ? -1 : k - begin;
      segment.nodes.push_back(std::move(node));
    }
    const std::string kind = unit_kind(segment);
    add_unit(fmt::format("g{}", units().size()), kind,
             GraphBody(std::move(segment), begin == 0 ? input : shapes[begin - 1]));
    begin = c + 1;
  }
}

}  // namespace tessera::models
