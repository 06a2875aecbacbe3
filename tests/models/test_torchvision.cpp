// torchvision names: known names per architecture, the export -> import round trip of every
// mapped architecture, and one clear error per bad state dict.
#include <gtest/gtest.h>

#include "tessera/core/safetensors.h"
#include "tessera/models/registry.h"
#include "tessera/models/torchvision.h"
#include "test_support.h"

namespace tessera::models {
namespace {

using testing::error_of;
using testing::TempDir;

ModelConfig config_of(const std::string& name, double width = 0.25) {
  ModelConfig c;
  c.name = name;
  c.in_channels = 3;
  c.image_size = 32;
  c.num_classes = 7;
  if (name != "vit") c.width_mult = width;
  return c;
}

bool has_value(const std::map<std::string, std::string>& names, const std::string& tv) {
  for (const auto& [k, v] : names) {
    if (v == tv) return true;
  }
  return false;
}

class TorchvisionTest : public testing::SeededTest {
 protected:
  TempDir dir;
};

TEST_F(TorchvisionTest, KnownNames) {
  Model resnet = create(config_of("resnet18"));
  const auto r = torchvision_names(resnet);
  EXPECT_EQ(r.at("stem.conv.weight"), "conv1.weight");
  EXPECT_EQ(r.at("stem.bn.running_var"), "bn1.running_var");
  EXPECT_EQ(r.at("block3.conv1.conv.weight"), "layer2.0.conv1.weight");
  EXPECT_EQ(r.at("block3.shortcut.bn.weight"), "layer2.0.downsample.1.weight");
  EXPECT_EQ(r.at("block8.conv2.bn.num_batches_tracked"), "layer4.1.bn2.num_batches_tracked");
  EXPECT_EQ(r.at("fc.linear.bias"), "fc.bias");

  Model vgg = create(config_of("vgg11_bn"));
  const auto v = torchvision_names(vgg);
  EXPECT_EQ(v.at("conv1.conv.weight"), "features.0.weight");
  EXPECT_EQ(v.at("conv2.bn.bias"), "features.5.bias");
  EXPECT_EQ(v.at("conv8.conv.weight"), "features.25.weight");
  EXPECT_EQ(v.at("fc3.linear.weight"), "classifier.6.weight");

  Model mobile = create(config_of("mobilenetv2"));
  const auto m = torchvision_names(mobile);
  EXPECT_TRUE(has_value(m, "features.0.0.weight"));
  EXPECT_TRUE(has_value(m, "features.1.conv.0.0.weight"));  // expand ratio 1: depthwise first
  EXPECT_TRUE(has_value(m, "features.1.conv.1.weight"));
  EXPECT_TRUE(has_value(m, "features.2.conv.0.0.weight"));  // expansion
  EXPECT_TRUE(has_value(m, "features.2.conv.3.running_mean"));
  EXPECT_TRUE(has_value(m, "features.18.1.bias"));
  EXPECT_TRUE(has_value(m, "classifier.1.weight"));

  Model vit = create(config_of("vit"));
  const auto t = torchvision_names(vit);
  EXPECT_EQ(t.at("patch_embed.cls_token"), "class_token");
  EXPECT_EQ(t.at("encoder1.attn.qkv.weight"),
            "encoder.layers.encoder_layer_0.self_attention.in_proj_weight");
  EXPECT_EQ(t.at("encoder2.fc2.bias"), "encoder.layers.encoder_layer_1.mlp.3.bias");
  EXPECT_EQ(t.at("head.fc.weight"), "heads.head.weight");
}

TEST_F(TorchvisionTest, ExportImportRoundTripEveryArchitecture) {
  for (const std::string name :
       {"resnet20", "resnet18", "resnet50", "vgg11_bn", "mobilenetv2", "vit"}) {
    SCOPED_TRACE(name);
    Model model = create(config_of(name));
    {
      torch::NoGradGuard no_grad;  // non-trivial BN statistics, so that buffers matter
      for (auto& b : model->named_buffers()) {
        if (b.value().is_floating_point()) b.value().uniform_(0.5, 1.5);
      }
    }
    const std::string path = dir.file(name + ".safetensors");
    export_torchvision(path, model);
    Model back = import_torchvision(path, config_of(name));
    model->eval();
    back->eval();
    const torch::Tensor x = torch::rand({2, 3, 32, 32});
    EXPECT_TRUE(torch::equal(model->forward(x), back->forward(x)));
  }
}

TEST_F(TorchvisionTest, BadStateDictsNameTheTensor) {
  Model model = create(config_of("resnet20"));
  const std::string path = dir.file("good.safetensors");
  export_torchvision(path, model);
  const safetensors::File good = safetensors::load(path);
  auto write_variant = [&](const std::string& name, auto edit) {
    safetensors::File f = good;
    edit(f);
    const std::string p = dir.file(name);
    safetensors::save(p, f);
    return p;
  };
  const std::string missing = write_variant(
      "missing.safetensors", [](safetensors::File& f) { f.tensors.erase(f.tensors.begin()); });
  EXPECT_NE(error_of([&] {
              import_torchvision(missing, config_of("resnet20"));
            }).find("tensor 'conv1.weight' (Tessera 'stem.conv.weight') of resnet20 is missing"),
            std::string::npos);
  const std::string misshaped = write_variant("shape.safetensors", [](safetensors::File& f) {
    for (auto& [n, t] : f.tensors) {
      if (n == "fc.weight") t = torch::zeros({3, 3});
    }
  });
  EXPECT_NE(error_of([&] {
              import_torchvision(misshaped, config_of("resnet20"));
            }).find("tensor 'fc.weight' has shape [3, 3]"),
            std::string::npos);
  const std::string unknown = write_variant("unknown.safetensors", [](safetensors::File& f) {
    f.tensors.emplace_back("layer9.0.conv1.weight", torch::zeros({1}));
  });
  EXPECT_NE(error_of([&] {
              import_torchvision(unknown, config_of("resnet20"));
            }).find("unknown tensor 'layer9.0.conv1.weight'"),
            std::string::npos);
  const std::string half = write_variant("half.safetensors", [](safetensors::File& f) {
    for (auto& [n, t] : f.tensors) {
      if (t.is_floating_point()) t = t.to(torch::kFloat16);
    }
  });
  EXPECT_NO_THROW(import_torchvision(half, config_of("resnet20")));
  const std::string nan = write_variant("nan.safetensors", [](safetensors::File& f) {
    for (auto& [n, t] : f.tensors) {
      if (n == "bn1.weight") t = torch::full_like(t, NAN);
    }
  });
  EXPECT_NE(error_of([&] {
              import_torchvision(nan, config_of("resnet20"));
            }).find("'bn1.weight' holds NaN or Inf"),
            std::string::npos);
  EXPECT_NE(
      error_of([&] { import_torchvision(path, config_of("resnet18")); }).find("resnet18 expects"),
      std::string::npos);
}

}  // namespace
}  // namespace tessera::models
