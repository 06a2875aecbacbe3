// Forward shapes of every model on every data layout, cuts at every unit (forward and gradients
// equal the uncut model), and the analytic shape_after() against real forward shapes.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tessera/models/model.h"
#include "tessera/models/registry.h"
#include "tessera/models/vit.h"
#include "test_support.h"

namespace tessera::models {
namespace {

class ModelForward : public testing::SeededTest {};

const char* const kNames[] = {"vgg11_bn", "resnet20", "resnet18", "mobilenetv2", "vit"};

// A small variant of each model, so that cutting at every unit stays fast.
ModelConfig small_config(const std::string& name, int64_t in_channels, int64_t image_size) {
  ModelConfig config;
  config.name = name;
  config.in_channels = in_channels;
  config.image_size = image_size;
  config.num_classes = 7;
  if (name == "vit") {
    config.extra = {{"dim", 32}, {"depth", 3}, {"heads", 2}};
  } else {
    config.width_mult = 0.25;
  }
  // Dropout would make two forward passes in training mode differ.
  if (name == "vgg11_bn") config.extra = {{"dropout", 0.0}};
  return config;
}

std::vector<int64_t> sample_shape(const torch::Tensor& batch) {
  auto sizes = batch.sizes().vec();
  sizes.erase(sizes.begin());
  return sizes;
}

TEST_F(ModelForward, EveryModelGivesLogitsOnEveryLayout) {
  const std::pair<int64_t, int64_t> layouts[] = {{1, 28}, {1, 32}, {3, 32}};
  for (const char* name : kNames) {
    for (const auto& [channels, size] : layouts) {
      SCOPED_TRACE(fmt::format("{} on {}x{}x{}", name, channels, size, size));
      ModelConfig config;  // full width: the real networks
      config.name = name;
      config.in_channels = channels;
      config.image_size = size;
      config.num_classes = 13;
      Model model = create(config);
      model->eval();
      torch::NoGradGuard no_grad;
      torch::Tensor logits = model(torch::randn({2, channels, size, size}));
      EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{2, 13}));
      EXPECT_EQ(logits.scalar_type(), torch::kFloat32);
      EXPECT_TRUE(torch::isfinite(logits).all().item<bool>());
      EXPECT_EQ(model->shape_after(model->n_units()), (std::vector<int64_t>{13}));
    }
  }
}

TEST_F(ModelForward, CutAtEveryUnitEqualsUncutForward) {
  for (const char* name : kNames) {
    for (int64_t size : {28, 32}) {
      SCOPED_TRACE(fmt::format("{} at {}", name, size));
      Model model = create(small_config(name, 3, size));
      model->eval();
      torch::NoGradGuard no_grad;
      const torch::Tensor x = torch::randn({2, 3, size, size});
      const torch::Tensor full = model(x);
      const size_t n = model->n_units();
      for (size_t k = 0; k <= n; ++k) {
        const torch::Tensor smashed = model->forward_units(x, 0, k);
        const torch::Tensor out = model->forward_units(smashed, k, n);
        EXPECT_TRUE(torch::equal(out, full)) << "cut at unit " << k;
      }
    }
  }
}

TEST_F(ModelForward, ShapeAfterMatchesEveryUnitOutput) {
  for (const char* name : kNames) {
    for (int64_t size : {28, 32}) {
      SCOPED_TRACE(fmt::format("{} at {}", name, size));
      Model model = create(small_config(name, 1, size));
      model->eval();
      torch::NoGradGuard no_grad;
      torch::Tensor x = torch::randn({2, 1, size, size});
      EXPECT_EQ(model->shape_after(0), sample_shape(x));
      for (size_t k = 0; k < model->n_units(); ++k) {
        x = model->forward_units(x, k, k + 1);
        EXPECT_EQ(model->shape_after(k + 1), sample_shape(x))
            << "after unit " << k << " (" << model->units()[k].name << ")";
      }
    }
  }
}

TEST_F(ModelForward, GradientsThroughACutEqualUncutGradients) {
  // Training mode (batch-statistics BN): the split-learning setting.
  for (const char* name : kNames) {
    SCOPED_TRACE(name);
    Model model = create(small_config(name, 3, 32));
    model->train();
    const torch::Tensor x = torch::randn({3, 3, 32, 32});
    const torch::Tensor weights = torch::randn({3, 7});  // loss = sum(logits * weights)
    auto parameters = model->named_parameters();

    model->zero_grad();
    (model(x) * weights).sum().backward();
    std::vector<torch::Tensor> reference;
    for (const auto& item : parameters) reference.push_back(item.value().grad().clone());

    const size_t n = model->n_units();
    for (size_t k = 1; k < n; ++k) {
      model->zero_grad();
      const torch::Tensor smashed = model->forward_units(x, 0, k);  // client
      const torch::Tensor received = smashed.detach().requires_grad_(true);
      (model->forward_units(received, k, n) * weights).sum().backward();  // server
      smashed.backward(received.grad());  // client, with the gradient the server sent back
      size_t i = 0;
      for (const auto& item : parameters) {
        const torch::Tensor grad = item.value().grad();
        ASSERT_TRUE(grad.defined()) << item.key() << " has no gradient at cut " << k;
        // Same operations in the same order: equal up to float rounding of reassociation.
        EXPECT_TRUE(torch::allclose(grad, reference[i], 1e-5, 1e-7))
            << item.key() << " at cut " << k << ": max diff "
            << (grad - reference[i]).abs().max().item<float>();
        ++i;
      }
    }
  }
}

TEST_F(ModelForward, VggUnitsFollowTheSplitLearningCutLayers) {
  // research/sfl.md 1.4: cutlayer k = first k cfg entries; smashed sizes at 3x32x32.
  ModelConfig config;
  config.name = "vgg11_bn";
  config.in_channels = 3;
  Model model = create(config);
  ASSERT_EQ(model->n_units(), 17u);
  const std::vector<std::string> kinds = {"conv", "pool",    "conv", "pool", "conv", "conv",
                                          "pool", "conv",    "conv", "pool", "conv", "conv",
                                          "pool", "flatten", "fc",   "fc",   "fc"};
  for (size_t i = 0; i < kinds.size(); ++i) EXPECT_EQ(model->units()[i].kind, kinds[i]) << i;
  EXPECT_EQ(model->shape_after(2), (std::vector<int64_t>{64, 16, 16}));
  EXPECT_EQ(model->shape_after(4), (std::vector<int64_t>{128, 8, 8}));
  EXPECT_EQ(model->shape_after(5), (std::vector<int64_t>{256, 8, 8}));
  EXPECT_EQ(model->shape_after(10), (std::vector<int64_t>{512, 2, 2}));
  EXPECT_EQ(model->shape_after(14), (std::vector<int64_t>{512}));

  config.extra = {{"classifier", "fc1"}};
  Model single = create(config);
  ASSERT_EQ(single->n_units(), 15u);
  EXPECT_EQ(single->units().back().name, "fc");
}

TEST_F(ModelForward, ResNet20UnitsAreStemBlocksPoolFlattenFc) {
  ModelConfig config;
  config.name = "resnet20";
  config.in_channels = 3;
  Model model = create(config);
  ASSERT_EQ(model->n_units(), 13u);
  EXPECT_EQ(model->units()[0].name, "stem");
  for (size_t i = 1; i <= 9; ++i) EXPECT_EQ(model->units()[i].kind, "block");
  EXPECT_EQ(model->shape_after(4), (std::vector<int64_t>{16, 32, 32}));
  EXPECT_EQ(model->shape_after(7), (std::vector<int64_t>{32, 16, 16}));
  EXPECT_EQ(model->shape_after(10), (std::vector<int64_t>{64, 8, 8}));
}

TEST_F(ModelForward, VitAttentionProbabilitiesAreRowStochasticAndHeadMaskWorks) {
  ModelConfig config;
  config.name = "vit";
  Model model = create(config);
  model->eval();
  auto vit = std::dynamic_pointer_cast<VitImpl>(model.ptr());
  ASSERT_TRUE(vit != nullptr);
  ASSERT_EQ(vit->blocks().size(), 6u);
  torch::NoGradGuard no_grad;
  const torch::Tensor tokens = model->forward_units(torch::randn({2, 1, 32, 32}), 0, 1);
  ASSERT_EQ(tokens.sizes(), (std::vector<int64_t>{2, 65, 64}));
  auto& block = vit->blocks()[0];
  auto [out, probs] = block->forward_with_probs(tokens);
  ASSERT_EQ(probs.sizes(), (std::vector<int64_t>{2, 4, 65, 65}));
  EXPECT_TRUE(torch::allclose(probs.sum(-1), torch::ones({2, 4, 65}), 1e-5, 1e-6));
  EXPECT_TRUE(torch::equal(out, block(tokens)));

  // Masking every head leaves only the projection bias: attn(x) = proj.bias.
  auto attention = block->attn;
  auto [masked, unused] = attention->forward_with_probs(tokens, torch::zeros({4}));
  EXPECT_TRUE(torch::allclose(masked, attention->proj->bias.expand_as(masked)));
  // A mask of ones changes nothing.
  auto [kept, unused2] = attention->forward_with_probs(tokens, torch::ones({2, 4}));
  EXPECT_TRUE(torch::allclose(kept, attention(tokens)));
}

}  // namespace
}  // namespace tessera::models
