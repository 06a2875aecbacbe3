// The random-CNN generator (see random_net.h).
#include "tessera/obfuscate/random_net.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/random.h"
#include "tessera/core/seed.h"

namespace tessera::obfuscate {

using models::GraphNode;
using models::GraphOp;

void RandomNetOptions::validate() const {
  TESSERA_CHECK(input_shape.size() == 3 && input_shape[0] > 0 && input_shape[1] > 0 &&
                    input_shape[1] == input_shape[2],
                "random nets need a square [C, H, W] input");
  TESSERA_CHECK(min_conv_units >= 2 && min_conv_units <= max_conv_units,
                "random nets need 2 <= min_conv_units <= max_conv_units, got {} and {}",
                min_conv_units, max_conv_units);
  TESSERA_CHECK(
      min_log2_channels >= 2 && min_log2_channels <= max_log2_channels && max_log2_channels <= 10,
      "random net channel exponents must be in [2, 10], got {}..{}", min_log2_channels,
      max_log2_channels);
  TESSERA_CHECK(min_fc >= 1 && min_fc <= max_fc, "random nets need 1 <= min_fc <= max_fc");
  TESSERA_CHECK(min_log2_features >= 1 && min_log2_features <= max_log2_features,
                "random net FC exponents must be ordered");
  for (double p : {p_stride2, p_pool, p_residual, p_branch, p_kernel1, p_bn, p_unfused, p_gap})
    TESSERA_CHECK(p >= 0.0 && p <= 1.0, "random net probabilities must be in [0, 1], got {}", p);
  TESSERA_CHECK(p_residual + p_branch <= 1.0, "p_residual + p_branch must be <= 1");
  TESSERA_CHECK(num_classes >= 1, "random nets need num_classes >= 1");
}

nlohmann::json RandomNetOptions::to_json() const {
  return {{"input_shape", input_shape},
          {"num_classes", num_classes},
          {"conv_units", {min_conv_units, max_conv_units}},
          {"log2_channels", {min_log2_channels, max_log2_channels}},
          {"p_stride2", p_stride2},
          {"max_downsample", max_downsample},
          {"p_pool", p_pool},
          {"p_residual", p_residual},
          {"p_branch", p_branch},
          {"p_kernel1", p_kernel1},
          {"p_bn", p_bn},
          {"p_unfused", p_unfused},
          {"p_gap", p_gap},
          {"fc", {min_fc, max_fc}},
          {"log2_features", {min_log2_features, max_log2_features}}};
}

namespace {

class Builder {
 public:
  Builder(Net& net, std::mt19937_64& rng, const RandomNetOptions& o)
      : net_(net), rng_(rng), o_(o) {}

  bool coin(double p) { return random::uniform01(rng_) < p; }
  std::string name(const char* base) { return fmt::format("{}{}", base, ++count_); }

  int64_t node(GraphNode n) { return net_.add(std::move(n)); }

  int64_t conv(int64_t input, int64_t in, int64_t out, int64_t k, int64_t stride, bool bn,
               bool relu, bool fused) {
    GraphNode c;
    c.name = name("conv");
    c.op = GraphOp::Conv;
    c.inputs = {input};
    c.in_channels = in;
    c.out_channels = out;
    c.kernel = k;
    c.stride = stride;
    c.padding = k / 2;
    c.bias = !bn;
    if (!fused) c.hints["fuse"] = false;
    const double std = std::sqrt(2.0 / static_cast<double>(k * k * out));
    net_.tensors[c.name + ".weight"] = torch::randn({out, in, k, k}) * std;
    if (c.bias) net_.tensors[c.name + ".bias"] = torch::randn({out}) * 0.01;
    int64_t last = node(c);
    if (bn) {
      GraphNode b;
      b.name = name("bn");
      b.op = GraphOp::BatchNorm;
      b.inputs = {last};
      b.out_channels = out;
      net_.tensors[b.name + ".weight"] = 1.0 + 0.1 * torch::randn({out});
      net_.tensors[b.name + ".bias"] = 0.1 * torch::randn({out});
      net_.tensors[b.name + ".running_mean"] = 0.1 * torch::randn({out});
      net_.tensors[b.name + ".running_var"] = 1.0 + 0.1 * torch::rand({out});
      last = node(b);
    }
    if (relu) last = simple(GraphOp::ReLU, {last});
    return last;
  }

  int64_t simple(GraphOp op, std::vector<int64_t> inputs) {
    GraphNode n;
    n.name = name(models::graph_op_name(op).c_str());
    n.op = op;
    n.inputs = std::move(inputs);
    return node(n);
  }

  int64_t channels() {
    return int64_t{1} << random::uniform_int(rng_, o_.min_log2_channels, o_.max_log2_channels);
  }

 private:
  Net& net_;
  std::mt19937_64& rng_;
  const RandomNetOptions& o_;
  int count_ = 0;
};

}  // namespace

Net random_net(const RandomNetOptions& o, uint64_t seed) {
  o.validate();
  auto rng = make_rng(seed, 0x0b5f);
  torch::manual_seed(seed);
  Net net;
  net.input_shape = o.input_shape;
  net.num_classes = o.num_classes;
  Builder b(net, rng, o);
  const int64_t units = random::uniform_int(rng, o.min_conv_units, o.max_conv_units);
  int64_t x = -1, c = o.input_shape[0], side = o.input_shape[1], downs = 0;
  for (int64_t u = 0; u < units; ++u) {
    const bool middle = u > 0 && u + 1 < units;
    const double kind = random::uniform01(rng);
    const bool bn = b.coin(o.p_bn);
    const bool fused = !b.coin(o.p_unfused);
    if (middle && kind < o.p_residual) {  // conv-bn-relu-conv-bn + identity, relu
      const int64_t h = b.conv(x, c, c, 3, 1, bn, true, fused);
      const int64_t y = b.conv(h, c, c, 3, 1, bn, false, fused);
      x = b.simple(GraphOp::ReLU, {b.simple(GraphOp::Add, {y, x})});
      continue;
    }
    if (middle && kind < o.p_residual + o.p_branch) {  // two convs, concatenated
      const int64_t out = b.channels();
      const int64_t l = b.conv(x, c, out / 2, 3, 1, bn, true, fused);
      const int64_t r = b.conv(x, c, out - out / 2, 3, 1, bn, true, fused);
      x = b.simple(GraphOp::Concat, {l, r});
      c = out;
      continue;
    }
    const int64_t out = b.channels();
    const int64_t k = b.coin(o.p_kernel1) ? 1 : 3;
    const bool stride2 = downs < o.max_downsample && side >= 4 && b.coin(o.p_stride2);
    x = b.conv(x, c, out, k, stride2 ? 2 : 1, bn, true, fused);
    c = out;
    if (stride2) {
      side = (side + 1) / 2;
      ++downs;
    }
    if (downs < o.max_downsample && side >= 4 && b.coin(o.p_pool)) {
      GraphNode p;
      p.name = b.name("maxpool");
      p.op = GraphOp::MaxPool;
      p.inputs = {x};
      p.kernel = p.stride = 2;
      p.ceil_mode = true;
      x = b.node(p);
      side = (side + 1) / 2;
      ++downs;
    }
  }
  if (b.coin(o.p_gap)) {
    x = b.simple(GraphOp::GlobalAvgPool, {x});
    side = 1;
  }
  x = b.simple(GraphOp::Flatten, {x});
  int64_t features = c * side * side;
  const int64_t n_fc = random::uniform_int(rng, o.min_fc, o.max_fc);
  for (int64_t f = 0; f < n_fc; ++f) {
    const bool last = f + 1 == n_fc;
    const int64_t out =
        last ? o.num_classes
             : int64_t{1} << random::uniform_int(rng, o.min_log2_features, o.max_log2_features);
    GraphNode fc;
    fc.name = b.name("fc");
    fc.op = GraphOp::Linear;
    fc.inputs = {x};
    fc.in_channels = features;
    fc.out_channels = out;
    net.tensors[fc.name + ".weight"] =
        torch::randn({out, features}) / std::sqrt(static_cast<double>(features));
    net.tensors[fc.name + ".bias"] = torch::zeros({out});
    x = b.node(fc);
    if (!last) x = b.simple(GraphOp::ReLU, {x});
    features = out;
  }
  net.shapes();
  return net;
}

}  // namespace tessera::obfuscate
