// The ImageNet-style ResNet-50: parameter count against torchvision's published figure and a
// hand formula, layer shapes and MACs against a hand walk of He et al. 2016 Table 1, unit output
// shapes against a real forward pass, zero-init residual blocks and bad options.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "test_support.h"

namespace tessera::models {
namespace {

Model make_resnet50(int64_t channels, int64_t size, int64_t classes, double width,
                    nlohmann::json extra = nlohmann::json::object()) {
  ModelConfig config;
  config.name = "resnet50";
  config.in_channels = channels;
  config.image_size = size;
  config.num_classes = classes;
  config.width_mult = width;
  config.extra = std::move(extra);
  return create(config);
}

class ResNet50 : public tessera::testing::SeededTest {};

// Parameters by hand: convs (no bias) + BN (weight, bias) + FC (weight, bias).
int64_t hand_parameters(int64_t channels, int64_t classes, int64_t base) {
  const int64_t widths[] = {base, 2 * base, 4 * base, 8 * base};
  const int64_t blocks[] = {3, 4, 6, 3};
  int64_t n = base * channels * 49 + 2 * base, in = base;
  for (int s = 0; s < 4; ++s) {
    for (int64_t b = 0; b < blocks[s]; ++b) {
      const int64_t w = widths[s], out = 4 * w;
      n += in * w + 2 * w + w * w * 9 + 2 * w + w * out + 2 * out;
      if (b == 0) n += in * out + 2 * out;  // projection shortcut (stride or channel change)
      in = out;
    }
  }
  return n + in * classes + classes;
}

TEST_F(ResNet50, ParameterCountMatchesTorchvision) {
  // torchvision.models.resnet50(): 25,557,032 parameters.
  EXPECT_EQ(count_parameters(*make_resnet50(3, 224, 1000, 1.0)), 25'557'032);
  EXPECT_EQ(hand_parameters(3, 1000, 64), 25'557'032);
  // Width 0.5, one channel, ten classes: the Fashion-MNIST donor.
  EXPECT_EQ(count_parameters(*make_resnet50(1, 32, 10, 0.5)), hand_parameters(1, 10, 32));
}

TEST_F(ResNet50, ImageNetWorkloadMatchesTheLayerTable) {
  Model model = make_resnet50(3, 224, 1000, 1.0);
  const workload::Workload w = model->workload();
  const std::vector<workload::Layer> layers = w.weighted_layers();
  ASSERT_EQ(layers.size(), 54u);  // 53 convolutions + FC
  EXPECT_EQ(w.total_weights(), 25'502'912);
  // Stem: 7x7 stride 2, 224 -> 112; after the 3x3/2 max-pool the first stage runs at 56.
  EXPECT_EQ(layers[0].kernel_h, 7);
  EXPECT_EQ(layers[0].stride, 2);
  EXPECT_EQ(layers[0].out_h, 112);
  EXPECT_EQ(layers[1].in_h, 56);
  // Hand walk of every layer: name, shape and MACs (v1.5: the stride sits on the 3x3 conv).
  struct Expected {
    std::string name;
    int64_t in, out, k, stride, in_side, out_side;
  };
  std::vector<Expected> expected = {{"stem.conv", 3, 64, 7, 2, 224, 112}};
  const int64_t widths[] = {64, 128, 256, 512}, blocks[] = {3, 4, 6, 3};
  int64_t in = 64, side = 56, n = 0;
  for (int s = 0; s < 4; ++s) {
    for (int64_t b = 0; b < blocks[s]; ++b) {
      const std::string p = "block" + std::to_string(++n) + ".";
      const int64_t wd = widths[s], stride = (s > 0 && b == 0) ? 2 : 1;
      const int64_t out_side = (side - 1) / stride + 1;
      expected.push_back({p + "conv1.conv", in, wd, 1, 1, side, side});
      expected.push_back({p + "conv2.conv", wd, wd, 3, stride, side, out_side});
      expected.push_back({p + "conv3.conv", wd, 4 * wd, 1, 1, out_side, out_side});
      if (b == 0)
        expected.push_back({p + "downsample.conv", in, 4 * wd, 1, stride, side, out_side});
      in = 4 * wd;
      side = out_side;
    }
  }
  expected.push_back({"fc.linear", 2048, 1000, 1, 1, 1, 1});
  ASSERT_EQ(expected.size(), layers.size());
  int64_t macs = 0, hand_macs = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    SCOPED_TRACE(layers[i].name);
    const Expected& e = expected[i];
    EXPECT_EQ(layers[i].name, e.name);
    EXPECT_EQ(layers[i].in_channels, e.in);
    EXPECT_EQ(layers[i].out_channels, e.out);
    EXPECT_EQ(layers[i].kernel_h, e.k);
    EXPECT_EQ(layers[i].stride, e.stride);
    EXPECT_EQ(layers[i].in_h, e.in_side);
    EXPECT_EQ(layers[i].out_h, e.out_side);
    macs += layers[i].macs();
    hand_macs += e.out_side * e.out_side * e.out * e.in * e.k * e.k;
  }
  EXPECT_EQ(side, 7);
  EXPECT_EQ(macs, hand_macs);
  EXPECT_NEAR(static_cast<double>(macs), 4.09e9, 0.02e9);  // "4.1 GFLOPs" (multiply-adds)
}

TEST_F(ResNet50, UnitShapesMatchAForwardPass) {
  Model model = make_resnet50(1, 32, 10, 0.25);
  model->eval();
  ASSERT_EQ(model->n_units(), 21u);  // stem, maxpool, 16 blocks, pool, flatten, fc
  EXPECT_EQ(model->shape_after(1), (std::vector<int64_t>{16, 16, 16}));
  EXPECT_EQ(model->shape_after(2), (std::vector<int64_t>{16, 8, 8}));
  EXPECT_EQ(model->shape_after(18), (std::vector<int64_t>{512, 1, 1}));
  torch::NoGradGuard no_grad;
  torch::Tensor x = torch::rand({2, 1, 32, 32});
  for (size_t k = 0; k < model->n_units(); ++k) {
    x = model->forward_units(x, k, k + 1);
    std::vector<int64_t> expected = {2};
    for (int64_t d : model->shape_after(k + 1)) expected.push_back(d);
    EXPECT_EQ(x.sizes().vec(), expected) << model->units()[k].name;
  }
  EXPECT_EQ(x.sizes().vec(), (std::vector<int64_t>{2, 10}));
}

TEST_F(ResNet50, ZeroInitResidualMakesIdentityBlocks) {
  Model plain = make_resnet50(1, 32, 10, 0.25);
  Model zero = make_resnet50(1, 32, 10, 0.25, {{"zero_init_residual", 1}});
  plain->eval();
  zero->eval();
  torch::NoGradGuard no_grad;
  // block2 (unit 3) has no projection: with a zero last BN it passes a non-negative input on.
  const torch::Tensor x = torch::rand({2, 64, 8, 8});
  EXPECT_TRUE(torch::allclose(zero->forward_units(x, 3, 4), x));
  EXPECT_FALSE(torch::allclose(plain->forward_units(x, 3, 4), x));
}

TEST_F(ResNet50, RejectsBadOptions) {
  EXPECT_THROW(make_resnet50(1, 32, 10, 1.0, {{"zero_init_residual", 2}}), tessera::Error);
  EXPECT_THROW(make_resnet50(1, 32, 10, 1.0, {{"shortcut", "A"}}), tessera::Error);
  EXPECT_THROW(make_resnet50(1, 32, 10, 1.0, {{"zero_init_residual", "yes"}}), tessera::Error);
}

}  // namespace
}  // namespace tessera::models
