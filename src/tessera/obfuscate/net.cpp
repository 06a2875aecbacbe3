// Net conversions (see net.h): Tessera models in, "graph" models out, and a plain evaluator.
#include "tessera/obfuscate/net.h"

#include <fmt/format.h>

#include "tessera/core/error.h"
#include "tessera/models/blocks.h"
#include "tessera/models/registry.h"
#include "tessera/models/torchscript.h"

namespace tessera::obfuscate {

using models::GraphNode;
using models::GraphOp;

const torch::Tensor& Net::tensor(const std::string& name) const {
  const auto it = tensors.find(name);
  TESSERA_CHECK(it != tensors.end(), "network has no tensor '{}'", name);
  return it->second;
}

int64_t Net::add(GraphNode node) {
  spec.nodes.push_back(std::move(node));
  return static_cast<int64_t>(spec.nodes.size()) - 1;
}

namespace {

torch::Tensor copy(const torch::Tensor& t) { return t.detach().clone(); }

GraphNode simple(const std::string& name, GraphOp op, std::vector<int64_t> inputs) {
  GraphNode n;
  n.name = name;
  n.op = op;
  n.inputs = std::move(inputs);
  return n;
}

// conv -> bn -> [relu]; returns the last node.
int64_t add_conv_bn_act(Net& net, const std::string& prefix, models::ConvBnActImpl& m,
                        int64_t input) {
  TESSERA_CHECK(m.options.activation() != models::Activation::ReLU6,
                "obfuscate: '{}' uses ReLU6, which the executor does not model", prefix);
  auto& o = m.conv->options;
  GraphNode conv = simple(prefix + "_conv", GraphOp::Conv, {input});
  conv.in_channels = o.in_channels();
  conv.out_channels = o.out_channels();
  conv.kernel = (*o.kernel_size())[0];
  conv.stride = (*o.stride())[0];
  const auto* padding = c10::get_if<torch::ExpandingArray<2>>(&o.padding());
  TESSERA_CHECK(padding != nullptr, "obfuscate: '{}' has a non-numeric padding", prefix);
  conv.padding = (**padding)[0];
  conv.groups = o.groups();
  conv.bias = o.bias();
  net.tensors[conv.name + ".weight"] = copy(m.conv->weight);
  if (conv.bias) net.tensors[conv.name + ".bias"] = copy(m.conv->bias);
  int64_t last = net.add(conv);
  GraphNode bn = simple(prefix + "_bn", GraphOp::BatchNorm, {last});
  bn.out_channels = conv.out_channels;
  net.tensors[bn.name + ".weight"] = copy(m.bn->weight);
  net.tensors[bn.name + ".bias"] = copy(m.bn->bias);
  net.tensors[bn.name + ".running_mean"] = copy(m.bn->running_mean);
  net.tensors[bn.name + ".running_var"] = copy(m.bn->running_var);
  last = net.add(bn);
  if (m.options.activation() == models::Activation::ReLU)
    last = net.add(simple(prefix + "_relu", GraphOp::ReLU, {last}));
  return last;
}

int64_t add_fc(Net& net, const std::string& prefix, models::FcBlockImpl& m, int64_t input) {
  GraphNode fc = simple(prefix, GraphOp::Linear, {input});
  fc.in_channels = m.options.in_features();
  fc.out_channels = m.options.out_features();
  net.tensors[fc.name + ".weight"] = copy(m.linear->weight);
  net.tensors[fc.name + ".bias"] = copy(m.linear->bias);
  int64_t last = net.add(fc);
  if (m.options.relu()) last = net.add(simple(prefix + "_relu", GraphOp::ReLU, {last}));
  return last;
}

int64_t add_block(Net& net, const std::string& prefix, models::BasicBlockImpl& m, int64_t input) {
  TESSERA_CHECK(m.shortcut || !m.has_projection(),
                "obfuscate: block '{}' has a parameter-free shortcut 'A', which the graph "
                "cannot express; use shortcut B (ResNet-18)",
                prefix);
  int64_t out = add_conv_bn_act(net, prefix + "_conv1", *m.conv1, input);
  out = add_conv_bn_act(net, prefix + "_conv2", *m.conv2, out);
  const int64_t identity =
      m.shortcut ? add_conv_bn_act(net, prefix + "_shortcut", *m.shortcut, input) : input;
  const int64_t add = net.add(simple(prefix + "_add", GraphOp::Add, {out, identity}));
  return net.add(simple(prefix + "_relu", GraphOp::ReLU, {add}));
}

Net from_graph_model(models::Model& model) {
  const auto& cfg = model->config();
  Net net;
  net.spec = models::GraphSpec::from_json(cfg.extra.at("graph"));
  net.input_shape = {cfg.in_channels, cfg.image_size, cfg.image_size};
  net.num_classes = cfg.num_classes;
  const auto store = [&](const std::string& key, const torch::Tensor& t) {
    const auto dot = key.find('.');  // strip the unit name "g<k>."
    const std::string name = key.substr(dot + 1);
    if (name.size() > 20 && name.substr(name.size() - 20) == ".num_batches_tracked") return;
    net.tensors[name] = copy(t);
  };
  for (const auto& item : model->named_parameters()) store(item.key(), item.value());
  for (const auto& item : model->named_buffers()) store(item.key(), item.value());
  return net;
}

}  // namespace

Net from_model(models::Model& model) {
  models::require_units(model, "obfuscation");
  const auto& cfg = model->config();
  if (cfg.name == "graph") return from_graph_model(model);
  Net net;
  net.input_shape = {cfg.in_channels, cfg.image_size, cfg.image_size};
  net.num_classes = cfg.num_classes;
  int64_t last = -1;
  for (const auto& unit : model->units()) {
    torch::nn::Module* m = unit.module.ptr().get();
    if (auto* c = dynamic_cast<models::ConvBnActImpl*>(m)) {
      last = add_conv_bn_act(net, unit.name, *c, last);
    } else if (auto* b = dynamic_cast<models::BasicBlockImpl*>(m)) {
      last = add_block(net, unit.name, *b, last);
    } else if (auto* f = dynamic_cast<models::FcBlockImpl*>(m)) {
      last = add_fc(net, unit.name, *f, last);
    } else if (auto* p = dynamic_cast<torch::nn::MaxPool2dImpl*>(m)) {
      GraphNode pool = simple(unit.name, GraphOp::MaxPool, {last});
      pool.kernel = (*p->options.kernel_size())[0];
      pool.stride = (*p->options.stride())[0];
      pool.padding = (*p->options.padding())[0];
      pool.ceil_mode = p->options.ceil_mode();
      last = net.add(pool);
    } else if (auto* a = dynamic_cast<torch::nn::AdaptiveAvgPool2dImpl*>(m)) {
      const auto& size = *a->options.output_size();
      TESSERA_CHECK(size[0].has_value() && *size[0] == 1 && size[1].has_value() && *size[1] == 1,
                    "obfuscate: pool '{}' is not a global average pool", unit.name);
      last = net.add(simple(unit.name, GraphOp::GlobalAvgPool, {last}));
    } else if (dynamic_cast<torch::nn::FlattenImpl*>(m)) {
      last = net.add(simple(unit.name, GraphOp::Flatten, {last}));
    } else {
      throw Error(fmt::format("obfuscate: cannot read unit '{}' (kind {}) of model '{}'", unit.name,
                              unit.kind, cfg.name));
    }
  }
  net.shapes();
  return net;
}

models::Model to_model(const Net& net) {
  const auto shapes = net.shapes();
  TESSERA_CHECK(net.input_shape[1] == net.input_shape[2],
                "a graph model needs a square input, got {}",
                models::shape_string(net.input_shape));
  models::ModelConfig config;
  config.name = "graph";
  config.in_channels = net.input_shape[0];
  config.image_size = net.input_shape[1];
  config.num_classes = net.num_classes;
  config.extra = nlohmann::json{{"graph", net.spec.to_json()}};
  models::Model model = models::create(config);
  torch::NoGradGuard no_grad;
  const auto fill = [&](const std::string& key, torch::Tensor& t) {
    const std::string name = key.substr(key.find('.') + 1);
    if (name.size() > 20 && name.substr(name.size() - 20) == ".num_batches_tracked") return;
    t.copy_(net.tensor(name));
  };
  for (auto& item : model->named_parameters()) fill(item.key(), item.value());
  for (auto& item : model->named_buffers()) fill(item.key(), item.value());
  model->eval();
  return model;
}

torch::Tensor reference_forward(const Net& net, const torch::Tensor& x) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> v(net.spec.nodes.size());
  for (size_t i = 0; i < net.spec.nodes.size(); ++i) {
    const GraphNode& n = net.spec.nodes[i];
    const auto in = [&](size_t k) { return n.inputs[k] < 0 ? x : v[n.inputs[k]]; };
    const auto t = [&](const char* field) { return net.tensor(n.name + "." + field); };
    switch (n.op) {
      case GraphOp::Conv:
        v[i] = torch::conv2d(in(0), t("weight"), n.bias ? t("bias") : torch::Tensor(), n.stride,
                             n.padding, 1, n.groups);
        break;
      case GraphOp::BatchNorm:
        v[i] = torch::batch_norm(in(0), t("weight"), t("bias"), t("running_mean"), t("running_var"),
                                 false, 0.0, 1e-5, false);
        break;
      case GraphOp::ReLU:
        v[i] = torch::relu(in(0));
        break;
      case GraphOp::MaxPool:
        v[i] = torch::max_pool2d(in(0), n.kernel, n.stride, n.padding, 1, n.ceil_mode);
        break;
      case GraphOp::GlobalAvgPool:
        v[i] = torch::adaptive_avg_pool2d(in(0), {1, 1});
        break;
      case GraphOp::Flatten:
        v[i] = in(0).flatten(1);
        break;
      case GraphOp::Linear:
        v[i] = torch::linear(in(0), t("weight"), t("bias"));
        break;
      case GraphOp::Add:
        v[i] = in(0) + in(1);
        break;
      case GraphOp::Concat: {
        std::vector<torch::Tensor> parts;
        for (size_t k = 0; k < n.inputs.size(); ++k) parts.push_back(in(k));
        v[i] = torch::cat(parts, 1);
        break;
      }
      case GraphOp::Constant:
        v[i] = t("value").unsqueeze(0);
        break;
    }
  }
  return v.back();
}

std::vector<int64_t> weighted_layers(const Net& net) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < net.spec.nodes.size(); ++i) {
    const GraphOp op = net.spec.nodes[i].op;
    if (op == GraphOp::Conv || op == GraphOp::Linear) out.push_back(static_cast<int64_t>(i));
  }
  return out;
}

}  // namespace tessera::obfuscate
