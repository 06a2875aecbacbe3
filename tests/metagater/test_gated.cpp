// The gated Conv-4: the straight-through gate's gradient against finite differences, channel
// skipping equal to masking (also with whole layers switched off), MACs by hand.
#include <gtest/gtest.h>

#include "tessera/metagater/gated.h"
#include "test_support.h"

namespace tessera::metagater {
namespace {

using tessera::testing::SeededTest;

class Gated : public SeededTest {};

// L(g) = sum(c * g * y) + 0.1 (sum(g * y))^2: smooth in a continuous gate g.
torch::Tensor gate_loss(const torch::Tensor& g, const torch::Tensor& y, const torch::Tensor& c) {
  const torch::Tensor s = (g * y).sum();
  return (c * g * y).sum() + 0.1 * s * s;
}

TEST_F(Gated, StraightThroughGradientMatchesFiniteDifferences) {
  auto opts = torch::TensorOptions().dtype(torch::kDouble);
  const torch::Tensor y = torch::randn({3, 5}, opts);
  const torch::Tensor c = torch::randn({3, 5}, opts);
  torch::Tensor z = torch::randn({3, 5}, opts);
  z = z + z.sign() * 0.2;  // away from the decision boundary
  z.requires_grad_(true);
  const torch::Tensor g = ste_gate(z);
  // The forward value is the hard decision.
  EXPECT_TRUE(torch::equal(g.detach(), (z.detach() > 0).to(torch::kDouble)));
  gate_loss(g, y, c).backward();
  // Reference: dL/dg at the hard gate by central differences, times sigmoid'(z) by central
  // differences: the straight-through estimator's definition, computed independently.
  const torch::Tensor g0 = (z.detach() > 0).to(torch::kDouble);
  const double h = 1e-6;
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t j = 0; j < 5; ++j) {
      torch::Tensor gp = g0.clone(), gm = g0.clone();
      gp[i][j] += h;
      gm[i][j] -= h;
      const double dl_dg =
          (gate_loss(gp, y, c).item<double>() - gate_loss(gm, y, c).item<double>()) / (2 * h);
      const double zij = z[i][j].item<double>();
      const double dsig =
          (1 / (1 + std::exp(-(zij + h))) - 1 / (1 + std::exp(-(zij - h)))) / (2 * h);
      EXPECT_NEAR(z.grad()[i][j].item<double>(), dl_dg * dsig, 1e-6) << i << "," << j;
    }
  }
}

GatedNet mixed_gate_net() {
  GatedNetOptions o;
  o.image_size = 16;
  o.width = 8;
  o.layers = 3;
  o.ways = 4;
  o.gate_bias_init = 0.0;
  GatedNet net(o);
  torch::NoGradGuard no_grad;
  for (size_t i = 2; i < net->params().gates.size(); i += 4) net->params().gates[i].normal_(0, 1);
  return net;
}

TEST_F(Gated, ChannelSkippingEqualsMasking) {
  GatedNet net = mixed_gate_net();
  const Params p = net->params();
  const torch::Tensor support = torch::rand({10, 1, 16, 16});
  const torch::Tensor query = torch::rand({12, 1, 16, 16});
  torch::NoGradGuard no_grad;
  for (double threshold : {0.0, 0.3, 1e9}) {
    BnStats stats;
    net->forward(p, support, 10, GateMode::infer, threshold, nullptr, &stats);
    const ForwardOut masked = net->forward(p, query, 0, GateMode::infer, threshold, &stats);
    double active = 0.0;
    for (const auto& g : masked.gates) active += g.mean().item<double>() / 3.0;
    if (threshold == 0.0) {
      EXPECT_GT(active, 0.2);  // a real mix of skipped and kept channels
      EXPECT_LT(active, 0.8);
    }
    if (threshold == 1e9) EXPECT_EQ(active, 0.0);  // every layer switched off
    for (int64_t i = 0; i < 12; ++i) {
      const torch::Tensor skipped = net->forward_skip(p, query.narrow(0, i, 1), stats, threshold);
      EXPECT_TRUE(torch::allclose(skipped, masked.logits.narrow(0, i, 1), 1e-4, 1e-5))
          << "threshold " << threshold << " image " << i;
    }
  }
}

TEST_F(Gated, MacsCountActiveChannels) {
  GatedNetOptions o;
  o.image_size = 8;
  o.width = 4;
  o.layers = 2;
  o.ways = 3;
  o.gate_hidden = 2;
  GatedNet net(o);
  // conv 1 x 2 x 9 x 64 + conv 2 x 3 x 9 x 16, gates (1x2 + 2x4) + (2x2 + 2x4) (the first FC
  // reads only the active inputs), head 3 x 3.
  EXPECT_DOUBLE_EQ(net->macs({2, 3}), 1152.0 + 864.0 + 10.0 + 12.0 + 9.0);
  // Dense: 1x4x9x64 + 4x4x9x16 + 4x3, no gates.
  EXPECT_DOUBLE_EQ(net->dense_macs(), 2304.0 + 2304.0 + 12.0);
}

TEST_F(Gated, BadShapesAreErrors) {
  GatedNetOptions o;
  o.image_size = 8;
  o.layers = 4;
  EXPECT_THROW(GatedNet{o}, Error);  // 8 px cannot take four max pools
  o.layers = 2;
  GatedNet net(o);
  EXPECT_THROW(net->forward(net->params(), torch::rand({2, 3, 8, 8}), 2, GateMode::train), Error);
  EXPECT_THROW(net->forward(net->params(), torch::rand({2, 1, 8, 8}), 0, GateMode::train), Error);
}

}  // namespace
}  // namespace tessera::metagater
