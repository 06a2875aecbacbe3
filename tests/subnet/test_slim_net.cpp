// The width-sliceable ResNet: a sub-net slice equals a standalone narrower network (torch::nn
// modules) built with the same weights, permutation keeps the function, BN statistics per
// sub-net, the one-file format, MACs by hand, and bad input.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>

#include "tessera/core/error.h"
#include "tessera/core/seed.h"
#include "tessera/subnet/slim_net.h"
#include "test_support.h"

namespace tessera::subnet {
namespace {

using tessera::testing::error_of;
using tessera::testing::SeededTest;
using tessera::testing::TempDir;

class SlimNetTest : public SeededTest {};

SlimNetOptions tiny_options() {
  SlimNetOptions o;
  o.in_channels = 1;
  o.image_size = 8;
  o.num_classes = 4;
  o.stage_channels = {6, 10};
  o.blocks_per_stage = 2;
  return o;
}

/// Random BN affine and statistics in every set, so that a slicing error shows in the output.
void randomize(SlimNet& net) {
  torch::NoGradGuard no_grad;
  for (auto& p : net->named_parameters()) {
    if (p.key().find("gamma") != std::string::npos) p.value().uniform_(0.5, 1.5);
    if (p.key().find("beta") != std::string::npos) p.value().uniform_(-0.3, 0.3);
  }
  for (int64_t k = 0; k < net->n_subnets(); ++k)
    for (size_t l = 0; l < net->bn_names().size(); ++l) {
      net->bn_mean(k, static_cast<int64_t>(l)).uniform_(-0.2, 0.2);
      net->bn_var(k, static_cast<int64_t>(l)).uniform_(0.5, 2.0);
    }
  net->mark_weights_changed();
}

/// A standalone narrower ResNet from torch::nn modules with the sliced weights of `net`.
struct Standalone {
  std::map<std::string, torch::nn::Conv2d> convs;
  std::map<std::string, torch::nn::BatchNorm2d> bns;
  torch::nn::Linear fc{nullptr};
};

Standalone build_standalone(SlimNet& net, const SubnetSpec& spec, int64_t k) {
  const auto params = net->named_parameters();
  const auto names = net->bn_names();
  const int64_t S = net->n_stages(), per = net->options().blocks_per_stage;
  auto w = [&](int64_t slot) { return slot < 0 ? int64_t{1} : spec.widths[size_t(slot)]; };
  Standalone s;
  torch::NoGradGuard no_grad;
  auto make = [&](size_t layer, int64_t out_slot, int64_t in_slot, int64_t stride, int64_t kernel) {
    const std::string n = names[layer];
    std::string p = n;
    std::replace(p.begin(), p.end(), '.', '_');
    const int64_t out = w(out_slot), in = w(in_slot);
    torch::nn::Conv2d conv(
        torch::nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel / 2).bias(false));
    conv->weight.copy_(params[p + "_weight"].slice(0, 0, out).slice(1, 0, in));
    torch::nn::BatchNorm2d bn(out);
    bn->weight.copy_(params[p + "_gamma"].slice(0, 0, out));
    bn->bias.copy_(params[p + "_beta"].slice(0, 0, out));
    bn->running_mean.copy_(net->bn_mean(k, int64_t(layer)).slice(0, 0, out));
    bn->running_var.copy_(net->bn_var(k, int64_t(layer)).slice(0, 0, out));
    bn->eval();
    s.convs.emplace(n, conv);
    s.bns.emplace(n, bn);
  };
  size_t layer = 0;
  make(layer++, 0, -1, 1, 3);
  int64_t stream = 0;
  for (int64_t st = 0; st < S; ++st)
    for (int64_t b = 0; b < per; ++b) {
      const int64_t inner = S + st * per + b, stride = (st > 0 && b == 0) ? 2 : 1;
      make(layer++, inner, stream, stride, 3);
      make(layer++, st, inner, 1, 3);
      if (stream != st) make(layer++, st, stream, stride, 1);
      stream = st;
    }
  const int64_t last = w(S - 1);
  s.fc = torch::nn::Linear(last, net->options().num_classes);
  s.fc->weight.copy_(params["fc_weight"].slice(1, 0, last));
  s.fc->bias.copy_(params["fc_bias"]);
  return s;
}

torch::Tensor run_standalone(Standalone& s, SlimNet& net, torch::Tensor x) {
  auto cb = [&](const std::string& n, const torch::Tensor& in) {
    return s.bns.at(n)->forward(s.convs.at(n)->forward(in));
  };
  x = torch::relu(cb("stem", x));
  int64_t stream = 0, index = 0;
  for (int64_t st = 0; st < net->n_stages(); ++st)
    for (int64_t b = 0; b < net->options().blocks_per_stage; ++b) {
      const std::string n = "block" + std::to_string(++index);
      torch::Tensor y = cb(n + ".conv2", torch::relu(cb(n + ".conv1", x)));
      const torch::Tensor shortcut = stream != st ? cb(n + ".shortcut", x) : x;
      x = torch::relu(y + shortcut);
      stream = st;
    }
  return s.fc->forward(torch::adaptive_avg_pool2d(x, {1, 1}).flatten(1));
}

TEST_F(SlimNetTest, SliceEqualsStandaloneNarrowerNetwork) {
  SlimNet net(tiny_options());
  const SubnetSpec narrow{{4, 7, 3, 6, 10, 5}};  // streams 4/7, inner 3,6 | 10,5
  net->set_subnets({net->full_spec(), narrow});
  randomize(net);
  net->eval();
  const torch::Tensor x = torch::rand({5, 1, 8, 8});
  for (int64_t k = 0; k < 2; ++k) {
    const SubnetSpec spec = net->subnets()[size_t(k)];
    Standalone reference = build_standalone(net, spec, k);
    torch::NoGradGuard no_grad;
    const torch::Tensor expected = run_standalone(reference, net, x);
    net->set_subnet(k);
    EXPECT_TRUE(torch::allclose(net->forward(x), expected, 1e-5, 1e-5)) << "sub-net " << k;
    EXPECT_TRUE(torch::allclose(net->forward_spec(x, spec, k), expected, 1e-5, 1e-5));
  }
  // The sub-nets differ (a wrong slice that ignored the spec would not).
  torch::NoGradGuard no_grad;
  net->set_subnet(0);
  const torch::Tensor full = net->forward(x);
  net->set_subnet(1);
  EXPECT_FALSE(torch::allclose(full, net->forward(x), 1e-3, 1e-3));
}

TEST_F(SlimNetTest, PermutingChannelsKeepsTheFunction) {
  SlimNet net(tiny_options());
  randomize(net);
  net->eval();
  const torch::Tensor x = torch::rand({3, 1, 8, 8});
  torch::NoGradGuard no_grad;
  const torch::Tensor before = net->forward(x);
  for (int64_t slot = 0; slot < net->n_slots(); ++slot) {
    std::vector<int64_t> order(size_t(net->slot_max(slot)));
    for (size_t i = 0; i < order.size(); ++i) order[i] = int64_t(order.size() - 1 - i);
    net->permute_slot(slot, order);
  }
  EXPECT_TRUE(torch::allclose(net->forward(x), before, 1e-5, 1e-5));
  EXPECT_NE(error_of([&] { net->permute_slot(0, {0, 0, 1, 2, 3, 4}); }), "");
}

TEST_F(SlimNetTest, EachSubnetHasItsOwnBnStatistics) {
  SlimNet net(tiny_options());
  const SubnetSpec half{{3, 5, 3, 3, 5, 5}};
  net->set_subnets({net->full_spec(), half});
  net->train();
  const torch::Tensor x = torch::rand({8, 1, 8, 8}) * 3 + 1;
  {
    torch::NoGradGuard no_grad;
    net->forward_spec(x, half, 1);  // updates set 1 only
  }
  // Set 0 is untouched (mean 0), set 1 moved towards the batch mean.
  EXPECT_EQ(net->bn_mean(0, 0).abs().sum().item<double>(), 0.0);
  EXPECT_GT(net->bn_mean(1, 0).slice(0, 0, 3).abs().sum().item<double>(), 0.0);
  EXPECT_EQ(net->bn_mean(1, 0).slice(0, 3, 6).abs().sum().item<double>(), 0.0);  // outside slice
  // In eval mode sub-net 1 normalises with set 1: changing set 0 does not change its output.
  net->eval();
  torch::NoGradGuard no_grad;
  net->set_subnet(1);
  const torch::Tensor y1 = net->forward(x);
  net->bn_mean(0, 0).fill_(0.7);
  net->set_subnet(1);
  EXPECT_TRUE(torch::allclose(net->forward(x), y1));
  net->bn_mean(1, 0).fill_(0.7);
  net->set_subnet(1);
  EXPECT_FALSE(torch::allclose(net->forward(x), y1));
}

TEST_F(SlimNetTest, OneFileHoldsEverySubnetAndItsBnStatistics) {
  TempDir dir;
  SlimNet net(tiny_options());
  net->set_subnets(
      {net->full_spec(), SubnetSpec{{4, 6, 2, 6, 8, 4}}, SubnetSpec{{2, 2, 2, 2, 2, 2}}});
  randomize(net);
  net->eval();
  save_slim_net(dir.file("n.safetensors"), net, {{"stage", "test"}});
  LoadedSlimNet loaded = load_slim_net(dir.file("n.safetensors"));
  EXPECT_EQ(loaded.info.at("stage"), "test");
  ASSERT_EQ(loaded.net->n_subnets(), 3);
  const torch::Tensor x = torch::rand({2, 1, 8, 8});
  torch::NoGradGuard no_grad;
  for (int64_t k = 0; k < 3; ++k) {
    net->set_subnet(k);
    loaded.net->set_subnet(k);  // switching in place, no reload
    EXPECT_EQ(loaded.net->active(), k);
    EXPECT_TRUE(torch::allclose(loaded.net->forward(x), net->forward(x)));
  }
}

TEST_F(SlimNetTest, MacsByHand) {
  SlimNetOptions o;
  o.image_size = 8;
  o.num_classes = 3;
  o.stage_channels = {4, 6};
  o.blocks_per_stage = 1;
  SlimNet net(o);
  // widths: stream 2/3, inner 4 (block1), 5 (block2)
  const SubnetSpec spec{{2, 3, 4, 5}};
  const int64_t stem = 2 * 1 * 9 * 64;
  const int64_t block1 = 4 * 2 * 9 * 64 + 2 * 4 * 9 * 64;
  const int64_t block2 = 5 * 2 * 9 * 16 + 3 * 5 * 9 * 16 + 3 * 2 * 16;  // stride 2: 4x4
  EXPECT_EQ(net->macs(spec), stem + block1 + block2 + 3 * 3);
}

TEST_F(SlimNetTest, BadInputIsAClearError) {
  SlimNet net(tiny_options());
  EXPECT_NE(error_of([&] { net->set_subnet(1); }).find("out of range"), std::string::npos);
  EXPECT_NE(error_of([&] { net->set_subnet(-1); }).find("out of range"), std::string::npos);
  EXPECT_NE(error_of([&] {
              net->macs(SubnetSpec{{1, 2}});
            }).find("needs 6 widths"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              net->macs(SubnetSpec{{7, 1, 1, 1, 1, 1}});
            }).find("not in [1, 6]"),
            std::string::npos);
  EXPECT_NE(error_of([&] { net->set_subnets({}); }), "");
  TempDir dir;
  tessera::testing::write_bytes(dir.file("bad.safetensors"), "not a file");
  EXPECT_NE(error_of([&] { load_slim_net(dir.file("bad.safetensors")); }), "");
  SlimNetOptions bad = tiny_options();
  bad.stage_channels = {};
  EXPECT_NE(error_of([&] { SlimNet n(bad); }).find("stage_channels"), std::string::npos);
  EXPECT_NE(error_of([&] {
              SlimNetOptions::from_json({{"typo", 1}});
            }).find("unknown key"),
            std::string::npos);
}

}  // namespace
}  // namespace tessera::subnet
