// The obfuscation knobs and genome application (see knobs.h).
#include "tessera/obfuscate/knobs.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "tessera/core/error.h"

namespace tessera::obfuscate {

using models::GraphNode;
using models::GraphOp;

namespace {

const char* kKnobNames[] = {"widen", "branch", "deepen",   "skip", "kernel",
                            "dummy", "fuse",   "schedule", "decoy"};

// Edits a spec by node names, then re-indexes: insertions keep topological order because a new
// node goes right after an anchor that follows all of its inputs.
class Editor {
 public:
  explicit Editor(const models::GraphSpec& spec) : nodes_(spec.nodes) {
    for (const auto& n : nodes_) {
      std::vector<std::string> names;
      for (int64_t k : n.inputs) names.push_back(k < 0 ? std::string() : nodes_[k].name);
      ins_.push_back(names);
    }
  }
  size_t index(const std::string& name) const {
    for (size_t i = 0; i < nodes_.size(); ++i)
      if (nodes_[i].name == name) return i;
    throw Error(fmt::format("obfuscate: the network has no node '{}'", name));
  }
  GraphNode& node(const std::string& name) { return nodes_[index(name)]; }
  const std::vector<std::string>& inputs(const std::string& name) const {
    return ins_[index(name)];
  }
  /// Inserts `node` reading `inputs` right after `anchor`; returns its name.
  std::string insert_after(const std::string& anchor, GraphNode node,
                           std::vector<std::string> inputs) {
    TESSERA_CHECK(!has(node.name), "obfuscate: node name '{}' is already used", node.name);
    const size_t at = index(anchor) + 1;
    nodes_.insert(nodes_.begin() + static_cast<std::ptrdiff_t>(at), node);
    ins_.insert(ins_.begin() + static_cast<std::ptrdiff_t>(at), std::move(inputs));
    return node.name;
  }
  /// Every reader of `from` other than `except` reads `to` instead.
  void redirect(const std::string& from, const std::string& to, const std::string& except) {
    for (size_t i = 0; i < nodes_.size(); ++i) {
      if (nodes_[i].name == to || nodes_[i].name == except) continue;
      for (auto& in : ins_[i])
        if (in == from) in = to;
    }
  }
  void remove(const std::string& name) {
    const size_t i = index(name);
    nodes_.erase(nodes_.begin() + static_cast<std::ptrdiff_t>(i));
    ins_.erase(ins_.begin() + static_cast<std::ptrdiff_t>(i));
  }
  bool has(const std::string& name) const {
    return std::any_of(nodes_.begin(), nodes_.end(),
                       [&](const GraphNode& n) { return n.name == name; });
  }
  std::string unique(const std::string& base) const {
    if (!has(base)) return base;
    for (int k = 2;; ++k)
      if (!has(fmt::format("{}{}", base, k))) return fmt::format("{}{}", base, k);
  }
  models::GraphSpec finish() {
    models::GraphSpec spec;
    spec.nodes = nodes_;
    for (size_t i = 0; i < nodes_.size(); ++i) {
      spec.nodes[i].inputs.clear();
      for (const auto& in : ins_[i])
        spec.nodes[i].inputs.push_back(in.empty() ? -1 : static_cast<int64_t>(index(in)));
    }
    return spec;
  }

 private:
  std::vector<GraphNode> nodes_;
  std::vector<std::vector<std::string>> ins_;
};

GraphNode make_node(const std::string& name, GraphOp op) {
  GraphNode n;
  n.name = name;
  n.op = op;
  return n;
}

// The unit of a layer: layer -> [bn] -> [relu], each the sole reader of the previous.
std::vector<int64_t> unit_chain(const Net& net, int64_t layer) {
  const auto consumers = net.spec.consumers();
  std::vector<int64_t> chain = {layer};
  for (GraphOp op : {GraphOp::BatchNorm, GraphOp::ReLU}) {
    const int64_t last = chain.back();
    if (consumers[last].size() == 1 && net.spec.nodes[consumers[last][0]].op == op)
      chain.push_back(consumers[last][0]);
  }
  return chain;
}

int64_t layer_index(const Net& net, const std::string& layer) {
  const int64_t i = net.spec.find(layer);
  TESSERA_CHECK(i >= 0, "obfuscate: the network has no layer '{}'", layer);
  const GraphOp op = net.spec.nodes[i].op;
  TESSERA_CHECK(op == GraphOp::Conv || op == GraphOp::Linear,
                "obfuscate: '{}' is a {}, not a conv or linear layer", layer,
                models::graph_op_name(op));
  return i;
}

// For widening: the chain conv -> [bn] -> [relu] -> [maxpool/gap] -> [flatten] and the readers of
// its end, or the reason it cannot take zero channels.
std::string widen_path(const Net& net, int64_t conv, std::vector<int64_t>* chain,
                       std::vector<int64_t>* readers) {
  const auto consumers = net.spec.consumers();
  const auto& nodes = net.spec.nodes;
  chain->assign(1, conv);
  for (;;) {
    const int64_t last = chain->back();
    if (consumers[last].size() != 1) break;
    const GraphOp op = nodes[consumers[last][0]].op;
    if (op != GraphOp::BatchNorm && op != GraphOp::ReLU && op != GraphOp::MaxPool &&
        op != GraphOp::GlobalAvgPool && op != GraphOp::Flatten)
      break;
    chain->push_back(consumers[last][0]);
    if (op == GraphOp::Flatten) break;
  }
  *readers = consumers[chain->back()];
  if (readers->empty()) return "its output is the network output";
  const bool flat = nodes[chain->back()].op == GraphOp::Flatten;
  for (int64_t r : *readers) {
    const auto& n = nodes[r];
    const bool ok = flat ? n.op == GraphOp::Linear : (n.op == GraphOp::Conv && n.groups == 1);
    if (!ok)
      return fmt::format(
          "its output reaches {} '{}' (only convs, or a linear after a flatten, "
          "can absorb zero channels)",
          models::graph_op_name(n.op), n.name);
  }
  return "";
}

void check(const Net& net, Knob knob, const std::string& layer) {
  const std::string why = knob_blocker(net, knob, layer);
  TESSERA_CHECK(why.empty(), "obfuscate: {} cannot apply to '{}': {}", knob_name(knob), layer, why);
}

torch::Tensor cat0(const torch::Tensor& t, int64_t extra, int64_t dim, double value = 0.0) {
  auto sizes = t.sizes().vec();
  sizes[dim] = extra;
  return torch::cat({t, torch::full(sizes, value, t.options())}, dim);
}

}  // namespace

std::string knob_name(Knob knob) { return kKnobNames[static_cast<int>(knob)]; }

std::vector<std::string> knob_names() { return {std::begin(kKnobNames), std::end(kKnobNames)}; }

Knob parse_knob(const std::string& name) {
  for (int k = 0; k < kNumKnobs; ++k)
    if (name == kKnobNames[k]) return static_cast<Knob>(k);
  throw Error(fmt::format("unknown knob '{}' (known: {})", name,
                          fmt::join(std::begin(kKnobNames), std::end(kKnobNames), ", ")));
}

std::string knob_blocker(const Net& net, Knob knob, const std::string& layer) {
  const int64_t i = layer_index(net, layer);
  const GraphNode& n = net.spec.nodes[i];
  const bool conv = n.op == GraphOp::Conv;
  switch (knob) {
    case Knob::widen: {
      if (!conv) return "widening applies to convs only";
      if (n.groups != 1) return "grouped convs are not widened";
      std::vector<int64_t> chain, readers;
      return widen_path(net, i, &chain, &readers);
    }
    case Knob::branch:
      if (!conv) return "branching applies to convs only";
      if (n.groups != 1) return "grouped convs are not branched";
      if (n.out_channels % 4 != 0)
        return fmt::format("{} output channels are not divisible by 4", n.out_channels);
      return "";
    case Knob::kernel:
    case Knob::schedule:
      if (!conv) return fmt::format("{} applies to convs only", knob_name(knob));
      if (knob == Knob::schedule && n.groups != 1) return "grouped convs keep the direct schedule";
      return "";
    case Knob::decoy: {
      const auto consumers = net.spec.consumers();
      const int64_t end = unit_chain(net, i).back();
      return consumers[end].empty() ? "its output is the network output" : "";
    }
    case Knob::dummy:
    case Knob::deepen:
    case Knob::skip:
    case Knob::fuse:
      return "";
  }
  return "";
}

void widen_layer(Net& net, const std::string& conv, int64_t extra) {
  TESSERA_CHECK(extra > 0, "obfuscate: widening '{}' needs extra > 0 channels, got {}", conv,
                extra);
  check(net, Knob::widen, conv);
  const int64_t i = layer_index(net, conv);
  std::vector<int64_t> chain, readers;
  widen_path(net, i, &chain, &readers);
  const auto shapes = net.shapes();
  auto& nodes = net.spec.nodes;
  auto& t = net.tensors;
  GraphNode& c = nodes[i];
  t[c.name + ".weight"] = cat0(t.at(c.name + ".weight"), extra, 0);
  if (c.bias) t[c.name + ".bias"] = cat0(t.at(c.name + ".bias"), extra, 0);
  c.out_channels += extra;
  for (int64_t k : chain) {
    GraphNode& n = nodes[k];
    if (n.op != GraphOp::BatchNorm) continue;
    n.out_channels += extra;
    t[n.name + ".weight"] = cat0(t.at(n.name + ".weight"), extra, 0, 1.0);
    t[n.name + ".bias"] = cat0(t.at(n.name + ".bias"), extra, 0);
    t[n.name + ".running_mean"] = cat0(t.at(n.name + ".running_mean"), extra, 0);
    t[n.name + ".running_var"] = cat0(t.at(n.name + ".running_var"), extra, 0, 1.0);
  }
  // Spatial size per channel where the flatten happens (1 when the readers are convs).
  const bool flat = nodes[chain.back()].op == GraphOp::Flatten && chain.size() >= 2;
  const auto& end_in = shapes[flat ? chain[chain.size() - 2] : i];
  const int64_t per_channel = flat ? end_in[1] * end_in[2] : 1;
  for (int64_t r : readers) {
    GraphNode& n = nodes[r];
    n.in_channels += extra * per_channel;
    t[n.name + ".weight"] = cat0(t.at(n.name + ".weight"), extra * per_channel, 1);
  }
  net.shapes();
}

void branch_layer(Net& net, const std::string& conv, int64_t parts) {
  TESSERA_CHECK(parts == 2 || parts == 4, "obfuscate: branching '{}' needs 2 or 4 parts, got {}",
                conv, parts);
  check(net, Knob::branch, conv);
  const auto chain = unit_chain(net, layer_index(net, conv));
  Editor e(net.spec);
  const GraphNode c = net.spec.nodes[chain[0]];
  const std::vector<std::string> input = e.inputs(c.name);
  const int64_t width = c.out_channels / parts;
  std::string anchor = net.spec.nodes[chain.back()].name;
  std::vector<std::string> ends;
  for (int64_t p = 0; p < parts; ++p) {
    const auto slice = [&](const std::string& key) {
      return net.tensor(key).slice(0, p * width, (p + 1) * width).clone();
    };
    std::string prev;
    for (int64_t k : chain) {
      GraphNode n = net.spec.nodes[k];
      const std::string old = n.name;
      n.name = e.unique(fmt::format("{}_b{}", old, p));
      if (n.op != GraphOp::ReLU) n.out_channels = width;
      for (const char* field : {"weight", "bias", "running_mean", "running_var"}) {
        const std::string key = old + "." + field;
        if (net.tensors.count(key)) net.tensors[n.name + "." + field] = slice(key);
      }
      anchor = e.insert_after(anchor, n, prev.empty() ? input : std::vector<std::string>{prev});
      prev = n.name;
    }
    ends.push_back(prev);
  }
  const std::string last = net.spec.nodes[chain.back()].name;
  const std::string cat =
      e.insert_after(anchor, make_node(e.unique(c.name + "_cat"), GraphOp::Concat), ends);
  e.redirect(last, cat, "");
  for (int64_t k : chain) {
    const std::string old = net.spec.nodes[k].name;
    e.remove(old);
    for (const char* field : {"weight", "bias", "running_mean", "running_var"})
      net.tensors.erase(old + "." + field);
  }
  net.spec = e.finish();
  net.shapes();
}

void deepen_layer(Net& net, const std::string& layer) {
  check(net, Knob::deepen, layer);
  const auto chain = unit_chain(net, layer_index(net, layer));
  const auto shapes = net.shapes();
  const std::string end = net.spec.nodes[chain.back()].name;
  const int64_t channels = shapes[chain.back()][0];
  const bool conv = net.spec.nodes[chain[0]].op == GraphOp::Conv;
  Editor e(net.spec);
  GraphNode d = make_node(e.unique(layer + "_deep"), conv ? GraphOp::Conv : GraphOp::Linear);
  d.in_channels = d.out_channels = channels;
  d.bias = !conv;  // linear layers always carry a bias
  torch::Tensor eye = torch::eye(channels);
  net.tensors[d.name + ".weight"] = conv ? eye.view({channels, channels, 1, 1}) : eye;
  if (!conv) net.tensors[d.name + ".bias"] = torch::zeros({channels});
  e.insert_after(end, d, {end});
  e.redirect(end, d.name, "");
  net.spec = e.finish();
  net.shapes();
}

void zero_skip(Net& net, const std::string& layer) {
  check(net, Knob::skip, layer);
  const int64_t i = layer_index(net, layer);
  const auto chain = unit_chain(net, i);
  const std::string end = net.spec.nodes[chain.back()].name;
  Editor e(net.spec);
  GraphNode z = net.spec.nodes[i];
  z.name = e.unique(layer + "_zskip");
  z.hints = nlohmann::json::object();
  z.bias = z.op == GraphOp::Linear;
  net.tensors[z.name + ".weight"] = torch::zeros_like(net.tensor(layer + ".weight"));
  if (z.bias) net.tensors[z.name + ".bias"] = torch::zeros({z.out_channels});
  e.insert_after(end, z, e.inputs(layer));
  const std::string add =
      e.insert_after(z.name, make_node(e.unique(layer + "_zadd"), GraphOp::Add), {end, z.name});
  e.redirect(end, add, "");
  net.spec = e.finish();
  net.shapes();
}

void widen_kernel(Net& net, const std::string& conv) {
  check(net, Knob::kernel, conv);
  GraphNode& c = net.spec.nodes[layer_index(net, conv)];
  torch::Tensor& w = net.tensors.at(c.name + ".weight");
  w = torch::constant_pad_nd(w, {1, 1, 1, 1}, 0.0);
  c.kernel += 2;
  c.padding += 1;
  net.shapes();
}

void add_dummies(Net& net, const std::string& layer, int64_t count) {
  TESSERA_CHECK(count >= 1 && count <= 16, "obfuscate: dummy additions must be 1..16, got {}",
                count);
  check(net, Knob::dummy, layer);
  const auto chain = unit_chain(net, layer_index(net, layer));
  const auto shapes = net.shapes();
  const std::string end = net.spec.nodes[chain.back()].name;
  Editor e(net.spec);
  GraphNode zero = make_node(e.unique(layer + "_zero"), GraphOp::Constant);
  zero.shape = shapes[chain.back()];
  net.tensors[zero.name + ".value"] = torch::zeros(zero.shape);
  std::string prev = end, first;
  std::string anchor = e.insert_after(end, zero, {});
  for (int64_t k = 0; k < count; ++k) {
    GraphNode add = make_node(e.unique(fmt::format("{}_dummy{}", layer, k)), GraphOp::Add);
    anchor = e.insert_after(anchor, add, {prev, zero.name});
    prev = add.name;
    if (first.empty()) first = add.name;
  }
  e.redirect(end, prev, first);
  net.spec = e.finish();
  net.shapes();
}

void add_decoys(Net& net, const std::string& layer, int64_t count, int64_t shrink) {
  TESSERA_CHECK(count >= 1 && count <= 16, "obfuscate: decoy kernels must be 1..16, got {}", count);
  TESSERA_CHECK(shrink >= 1, "obfuscate: the decoy shrink factor must be >= 1, got {}", shrink);
  check(net, Knob::decoy, layer);
  const int64_t end = unit_chain(net, layer_index(net, layer)).back();
  models::SampleShape shape = net.shapes()[end];
  if (shape.size() == 3) {
    shape[1] = (shape[1] + shrink - 1) / shrink;
    shape[2] = (shape[2] + shrink - 1) / shrink;
  } else {
    shape[0] = (shape[0] + shrink - 1) / shrink;
  }
  Editor e(net.spec);
  GraphNode zero = make_node(e.unique(layer + "_decoy_zero"), GraphOp::Constant);
  zero.shape = shape;
  net.tensors[zero.name + ".value"] = torch::zeros(shape);
  std::string prev = e.insert_after(net.spec.nodes[end].name, zero, {});
  std::string anchor = prev;
  for (int64_t k = 0; k < count; ++k) {
    GraphNode add = make_node(e.unique(fmt::format("{}_decoy{}", layer, k)), GraphOp::Add);
    anchor = e.insert_after(anchor, add, {prev, zero.name});
    prev = add.name;
  }
  net.spec = e.finish();
  net.shapes();
}

void set_fusion(Net& net, const std::string& layer, bool fused) {
  check(net, Knob::fuse, layer);
  net.spec.nodes[layer_index(net, layer)].hints["fuse"] = fused;
}

void set_schedule(Net& net, const std::string& conv, ConvSchedule schedule) {
  check(net, Knob::schedule, conv);
  net.spec.nodes[layer_index(net, conv)].hints["schedule"] = static_cast<int>(schedule);
}

int LayerGenes::get(Knob knob) const {
  switch (knob) {
    case Knob::widen:
      return widen;
    case Knob::branch:
      return branch;
    case Knob::deepen:
      return deepen;
    case Knob::skip:
      return skip;
    case Knob::kernel:
      return kernel;
    case Knob::dummy:
      return dummy;
    case Knob::fuse:
      return unfuse;
    case Knob::schedule:
      return schedule;
    case Knob::decoy:
      return decoy;
  }
  return 0;
}

void LayerGenes::set(Knob knob, int value) {
  value = std::clamp(value, 0, max_value(knob));
  switch (knob) {
    case Knob::widen:
      widen = value;
      break;
    case Knob::branch:
      branch = value;
      break;
    case Knob::deepen:
      deepen = value;
      break;
    case Knob::skip:
      skip = value;
      break;
    case Knob::kernel:
      kernel = value;
      break;
    case Knob::dummy:
      dummy = value;
      break;
    case Knob::fuse:
      unfuse = value;
      break;
    case Knob::schedule:
      schedule = value;
      break;
    case Knob::decoy:
      decoy = value;
      break;
  }
}

int LayerGenes::max_value(Knob knob) {
  switch (knob) {
    case Knob::widen:
      return 8;
    case Knob::branch:
    case Knob::schedule:
      return 2;
    case Knob::dummy:
      return 4;
    case Knob::decoy:
      return 8;
    default:
      return 1;
  }
}

bool LayerGenes::operator==(const LayerGenes& o) const {
  for (int k = 0; k < kNumKnobs; ++k)
    if (get(static_cast<Knob>(k)) != o.get(static_cast<Knob>(k))) return false;
  return true;
}

int Genome::active() const {
  int n = 0;
  for (const auto& l : layers)
    for (int k = 0; k < kNumKnobs; ++k) n += l.get(static_cast<Knob>(k)) != 0;
  return n;
}

std::string Genome::key() const {
  std::string out;
  for (const auto& l : layers)
    for (int k = 0; k < kNumKnobs; ++k) out += static_cast<char>('0' + l.get(static_cast<Knob>(k)));
  return out;
}

nlohmann::json Genome::to_json() const {
  nlohmann::json out = nlohmann::json::object();
  for (size_t i = 0; i < layers.size(); ++i) {
    nlohmann::json genes = nlohmann::json::object();
    for (int k = 0; k < kNumKnobs; ++k) {
      const int v = layers[i].get(static_cast<Knob>(k));
      if (v != 0) genes[knob_name(static_cast<Knob>(k))] = v;
    }
    if (!genes.empty()) out[std::to_string(i)] = genes;
  }
  return out;
}

Obfuscated apply_genome(const Net& clean, const Genome& genome) {
  const auto layers = weighted_layers(clean);
  TESSERA_CHECK(genome.layers.size() == layers.size(),
                "obfuscate: the genome has {} layers, the network {}", genome.layers.size(),
                layers.size());
  std::vector<std::string> names;
  for (int64_t i : layers) names.push_back(clean.spec.nodes[i].name);
  Obfuscated out{clean, {}};
  Net& net = out.net;
  const auto pass = [&](Knob knob, const std::function<void(const std::string&, int)>& apply) {
    for (size_t i = 0; i < names.size(); ++i) {
      const int value = genome.layers[i].get(knob);
      TESSERA_CHECK(value >= 0 && value <= LayerGenes::max_value(knob),
                    "obfuscate: gene {} of layer {} is {}, outside [0, {}]", knob_name(knob), i,
                    value, LayerGenes::max_value(knob));
      if (value == 0) continue;
      const std::string why = knob_blocker(net, knob, names[i]);
      if (!why.empty()) {
        out.skipped.push_back(
            fmt::format("layer '{}': {} skipped: {}", names[i], knob_name(knob), why));
        continue;
      }
      apply(names[i], value);
    }
  };
  pass(Knob::fuse, [&](const std::string& l, int) { set_fusion(net, l, false); });
  pass(Knob::schedule,
       [&](const std::string& l, int v) { set_schedule(net, l, static_cast<ConvSchedule>(v)); });
  pass(Knob::widen, [&](const std::string& l, int v) {
    const int64_t oc = net.spec.nodes[net.spec.find(l)].out_channels;
    const int64_t extra = std::max<int64_t>(4, (oc * v / 8 + 2) / 4 * 4);
    widen_layer(net, l, extra);
  });
  pass(Knob::kernel, [&](const std::string& l, int) { widen_kernel(net, l); });
  pass(Knob::skip, [&](const std::string& l, int) { zero_skip(net, l); });
  pass(Knob::deepen, [&](const std::string& l, int) { deepen_layer(net, l); });
  pass(Knob::dummy, [&](const std::string& l, int v) { add_dummies(net, l, v); });
  pass(Knob::decoy, [&](const std::string& l, int v) { add_decoys(net, l, v); });
  pass(Knob::branch, [&](const std::string& l, int v) { branch_layer(net, l, v == 1 ? 2 : 4); });
  return out;
}

}  // namespace tessera::obfuscate
