// Donors for the ImageNet-shaped networks: the registry's ResNet-50 and MobileNetV2 against the
// reram workloads, the copy/tile/draw of same-architecture weights, the at-chance guard, and one
// fine-tuning step checked against the straight-through estimator computed by hand.
#include <gtest/gtest.h>

#include <set>

#include "tessera/core/error.h"
#include "tessera/models/registry.h"
#include "tessera/reram/bench_donor.h"
#include "tessera/reram/imagenet.h"
#include "tessera/reram/sme.h"
#include "test_support.h"

namespace tessera::reram {
namespace {

class ReramDonor : public testing::SeededTest {};

models::Model make(const std::string& name, int64_t channels, int64_t size, int64_t classes,
                   double width = 1.0) {
  models::ModelConfig config;
  config.name = name;
  config.in_channels = channels;
  config.image_size = size;
  config.num_classes = classes;
  config.width_mult = width;
  return models::create(config);
}

TEST_F(ReramDonor, RegistryResNet50HasTheImagenetLayerShapes) {
  models::Model model = make("resnet50", 3, 224, 1000);
  const auto mine = model->workload().weighted_layers();
  const auto ref = resnet50_imagenet().weighted_layers();
  ASSERT_EQ(mine.size(), ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    SCOPED_TRACE(ref[i].name);
    EXPECT_EQ(mine[i].kind, ref[i].kind);
    EXPECT_EQ(mine[i].in_channels, ref[i].in_channels);
    EXPECT_EQ(mine[i].out_channels, ref[i].out_channels);
    EXPECT_EQ(mine[i].kernel_h, ref[i].kernel_h);
    EXPECT_EQ(mine[i].stride, ref[i].stride);
    EXPECT_EQ(mine[i].groups, ref[i].groups);
    EXPECT_EQ(mine[i].out_h, ref[i].out_h);
  }
}

TEST_F(ReramDonor, FashionMnistDonorsOfTheSameArchitectureAreRecognised) {
  // A 1-channel, 10-class ResNet-50 at 32x32 and the CIFAR-strided MobileNetV2 at 16x16 have the
  // ImageNet networks' weight shapes except the stem's input channels and the classifier.
  models::Model r50 = make("resnet50", 1, 32, 10);
  EXPECT_EQ(architecture_mismatch(resnet50_imagenet(), weight_donor(r50)), "");
  models::Model mb2 = make("mobilenetv2", 1, 16, 10);
  EXPECT_EQ(architecture_mismatch(mobilenetv2_imagenet(), weight_donor(mb2)), "");
  // Other networks or widths are not: their rows are resampled instead.
  models::Model r20 = make("resnet20", 1, 16, 10, 0.25);
  EXPECT_NE(architecture_mismatch(resnet50_imagenet(), weight_donor(r20)), "");
  models::Model half = make("resnet50", 1, 32, 10, 0.5);
  const std::string why = architecture_mismatch(resnet50_imagenet(), weight_donor(half));
  EXPECT_NE(why.find("layer 0"), std::string::npos) << why;  // stem: 32 vs 64 outputs
  EXPECT_NE(architecture_mismatch(mobilenetv2_imagenet(), weight_donor(r50)), "");
  EXPECT_THROW(same_architecture_weights(resnet50_imagenet(), weight_donor(half), 0), Error);
}

workload::Layer conv(const std::string& name, int64_t in, int64_t out, int64_t k) {
  workload::Layer l;
  l.name = name;
  l.kind = workload::OpKind::Conv2d;
  l.in_channels = in;
  l.out_channels = out;
  l.kernel_h = l.kernel_w = k;
  l.padding = k / 2;
  l.in_h = l.in_w = l.out_h = l.out_w = 4;
  return l;
}

workload::Layer linear(const std::string& name, int64_t in, int64_t out) {
  workload::Layer l;
  l.name = name;
  l.kind = workload::OpKind::Linear;
  l.in_channels = in;
  l.out_channels = out;
  return l;
}

TEST_F(ReramDonor, SameArchitectureWeightsCopyTileAndDraw) {
  WeightDonor donor;
  donor.layers = {conv("stem", 2, 4, 3), conv("pw", 4, 6, 1), linear("fc", 6, 3)};
  donor.weights = {torch::randn({4, 2, 3, 3}), torch::randn({6, 4, 1, 1}), torch::randn({3, 6})};
  workload::Workload target;
  target.model = "toy";
  target.input_shape = {5, 4, 4};
  target.layers = {conv("stem", 5, 4, 3), conv("pw", 4, 6, 1), linear("fc", 6, 50)};
  const auto w = same_architecture_weights(target, donor, 11);
  ASSERT_EQ(w.size(), 3u);
  ASSERT_EQ(w[0].sizes(), (c10::IntArrayRef{4, 5, 3, 3}));
  for (int64_t c = 0; c < 5; ++c) {
    EXPECT_TRUE(torch::equal(w[0].select(1, c), donor.weights[0].select(1, c % 2))) << c;
  }
  EXPECT_TRUE(torch::equal(w[1], donor.weights[1]));
  ASSERT_EQ(w[2].sizes(), (c10::IntArrayRef{50, 6}));
  // Every value of crossbar row r (input r) comes from the trained row r, and all three trained
  // outputs are drawn somewhere.
  std::set<float> drawn_from_row0;
  for (int64_t r = 0; r < 6; ++r) {
    for (int64_t o = 0; o < 50; ++o) {
      const float v = w[2][o][r].item<float>();
      bool found = false;
      for (int64_t k = 0; k < 3; ++k) found = found || donor.weights[2][k][r].item<float>() == v;
      EXPECT_TRUE(found) << o << " " << r;
      if (r == 0) drawn_from_row0.insert(v);
    }
  }
  EXPECT_EQ(drawn_from_row0.size(), 3u);
  EXPECT_TRUE(torch::equal(same_architecture_weights(target, donor, 11)[2], w[2]));  // seeded
  // A changed inner layer is a mismatch naming it.
  target.layers[1] = conv("pw", 4, 7, 1);
  target.layers[2] = linear("fc", 7, 50);
  const std::string why = architecture_mismatch(target, donor);
  EXPECT_NE(why.find("'pw'"), std::string::npos) << why;
  EXPECT_THROW(same_architecture_weights(target, donor, 11), Error);
}

TEST_F(ReramDonor, AtChanceGuardsTheAccuracyDrop) {
  EXPECT_TRUE(at_chance(0.0975, 10));  // last session's MobileNetV2 donor
  EXPECT_TRUE(at_chance(0.19, 10));
  EXPECT_FALSE(at_chance(0.21, 10));
  EXPECT_FALSE(at_chance(0.79, 10));
  EXPECT_TRUE(at_chance(0.55, 2));
  EXPECT_THROW(at_chance(0.5, 1), Error);
}

TEST_F(ReramDonor, OneFineTuningStepIsTheStraightThroughEstimator) {
  models::Model model = make("resnet20", 1, 8, 10, 0.25);
  model->eval();
  data::Dataset data;
  data.name = "random";
  data.images = torch::rand({16, 1, 8, 8});
  data.labels = torch::randint(0, 10, {16}, torch::kInt64);
  data.num_classes = 10;
  BitSparseOptions q;  // t=2, K=3, row
  const workload::Workload w = model->workload();

  // By hand: gradient of the loss at the bit-sparse weights, applied to the float weights.
  models::Model hand = models::clone(model);
  const auto sparse = bit_sparse_all(w, quantize_model(hand, w, 8), q);
  quant::load_into_module(sparse, *hand);
  hand->train();
  torch::nn::functional::cross_entropy(hand->forward(data.images), data.labels).backward();

  FineTuneOptions options;
  options.steps = 1;
  options.batch_size = 16;  // one batch: the whole data set
  options.lr = 0.1;
  models::Model tuned = fine_tune_quantized(model, 8, &q, data, options);

  auto original = model->named_parameters();
  auto grads = hand->named_parameters();
  int checked = 0;
  for (const auto& item : tuned->named_parameters()) {
    if (item.value().dim() < 2) continue;
    const torch::Tensor expected =
        original[item.key()] - options.lr * grads[item.key()].grad();  // first SGD step
    EXPECT_TRUE(torch::allclose(item.value(), expected, 1e-4, 1e-6)) << item.key();
    // The update moved the float weights, and they are not the quantized ones.
    EXPECT_FALSE(torch::equal(item.value(), original[item.key()])) << item.key();
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(w.weighted_layers().size()));
  EXPECT_FALSE(tuned->is_training());

  // The input model is untouched; zero steps return its weights; bad options are errors.
  models::Model same = fine_tune_quantized(model, 8, &q, data, FineTuneOptions{0});
  for (const auto& item : same->named_parameters()) {
    EXPECT_TRUE(torch::equal(item.value(), original[item.key()])) << item.key();
  }
  options.steps = -1;
  EXPECT_THROW(fine_tune_quantized(model, 8, &q, data, options), Error);
  options.steps = 1;
  options.lr = 0;
  EXPECT_THROW(fine_tune_quantized(model, 8, &q, data, options), Error);
}

}  // namespace
}  // namespace tessera::reram
