// Workloads against hand-computed MAC totals (formulas written from the papers' layer tables,
// independent of the walker), layer names against parameter names (the core/quant convention),
// and parameter counts against the published figures.
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/models/describe.h"
#include "tessera/models/model.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "test_support.h"

namespace tessera::models {
namespace {

Model make(const std::string& name, int64_t channels, int64_t size, int64_t classes,
           nlohmann::json extra = nlohmann::json::object()) {
  ModelConfig config;
  config.name = name;
  config.in_channels = channels;
  config.image_size = size;
  config.num_classes = classes;
  config.extra = std::move(extra);
  return create(config);
}

// Output side of a 3x3, padding 1 convolution with this stride.
int64_t conv3_side(int64_t side, int64_t stride) { return (side - 1) / stride + 1; }

int64_t vgg11_macs(int64_t channels, int64_t size, int64_t classes, bool three_fc) {
  const int64_t layout[] = {64, 0, 128, 0, 256, 256, 0, 512, 512, 0, 512, 512, 0};
  int64_t side = size, in = channels, macs = 0;
  for (int64_t out : layout) {
    if (out == 0) {
      side = (side + 1) / 2;  // 2x2 max-pool, ceil mode
    } else {
      macs += side * side * out * in * 9;
      in = out;
    }
  }
  const int64_t features = in * side * side;
  return macs + (three_fc ? features * 512 + 512 * 512 + 512 * classes : features * classes);
}

int64_t resnet_macs(int64_t channels, int64_t size, int64_t classes,
                    const std::vector<int64_t>& widths, int64_t blocks, bool projection) {
  int64_t side = size, in = widths[0];
  int64_t macs = side * side * in * channels * 9;  // stem
  for (size_t stage = 0; stage < widths.size(); ++stage) {
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t stride = (stage > 0 && b == 0) ? 2 : 1;
      const int64_t out = widths[stage];
      const int64_t out_side = conv3_side(side, stride);
      macs += out_side * out_side * out * (in + out) * 9;  // conv1 + conv2
      if (projection && (stride != 1 || in != out)) macs += out_side * out_side * out * in;
      side = out_side;
      in = out;
    }
  }
  return macs + in * classes;
}

int64_t mobilenetv2_macs(int64_t channels, int64_t size, int64_t classes) {
  const int64_t table[][4] = {{1, 16, 1, 1}, {6, 24, 2, 1},  {6, 32, 3, 2}, {6, 64, 4, 2},
                              {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  int64_t side = size, in = 32;
  int64_t macs = side * side * 32 * channels * 9;
  for (const auto& row : table) {
    for (int64_t b = 0; b < row[2]; ++b) {
      const int64_t hidden = in * row[0];
      const int64_t out_side = conv3_side(side, b == 0 ? row[3] : 1);
      if (row[0] != 1) macs += side * side * hidden * in;  // expand 1x1
      macs += out_side * out_side * hidden * 9;            // depthwise 3x3
      macs += out_side * out_side * row[1] * hidden;       // project 1x1
      side = out_side;
      in = row[1];
    }
  }
  return macs + side * side * 1280 * in + 1280 * classes;
}

int64_t vit_macs(int64_t channels, int64_t size, int64_t classes, int64_t patch, int64_t dim,
                 int64_t depth, int64_t mlp) {
  const int64_t patches = (size / patch) * (size / patch), tokens = patches + 1;
  const int64_t per_block = tokens * dim * 3 * dim       // qkv
                            + 2 * tokens * tokens * dim  // Q K^T and probs V over all heads
                            + tokens * dim * dim         // projection
                            + 2 * tokens * dim * mlp;    // MLP
  return patches * dim * channels * patch * patch + depth * per_block + dim * classes;
}

TEST(ModelWorkload, MacsMatchHandFormulas) {
  struct Case {
    std::string name;
    int64_t channels, size;
    nlohmann::json extra;
    int64_t expected;
  };
  const std::vector<Case> cases = {
      {"vgg11_bn", 3, 32, nlohmann::json::object(), vgg11_macs(3, 32, 10, true)},
      {"vgg11_bn", 1, 28, nlohmann::json::object(), vgg11_macs(1, 28, 10, true)},
      {"vgg11_bn", 3, 32, {{"classifier", "fc1"}}, vgg11_macs(3, 32, 10, false)},
      {"resnet20", 3, 32, nlohmann::json::object(), resnet_macs(3, 32, 10, {16, 32, 64}, 3, false)},
      {"resnet20", 1, 28, nlohmann::json::object(), resnet_macs(1, 28, 10, {16, 32, 64}, 3, false)},
      {"resnet20", 3, 32, {{"shortcut", "B"}}, resnet_macs(3, 32, 10, {16, 32, 64}, 3, true)},
      {"resnet18", 3, 32, nlohmann::json::object(),
       resnet_macs(3, 32, 10, {64, 128, 256, 512}, 2, true)},
      {"resnet18", 1, 28, nlohmann::json::object(),
       resnet_macs(1, 28, 10, {64, 128, 256, 512}, 2, true)},
      {"mobilenetv2", 3, 32, nlohmann::json::object(), mobilenetv2_macs(3, 32, 10)},
      {"mobilenetv2", 1, 28, nlohmann::json::object(), mobilenetv2_macs(1, 28, 10)},
      {"vit", 3, 32, nlohmann::json::object(), vit_macs(3, 32, 10, 4, 64, 6, 128)},
      {"vit",
       1,
       28,
       {{"dim", 48}, {"heads", 3}, {"depth", 2}, {"mlp_ratio", 4.0}},
       vit_macs(1, 28, 10, 4, 48, 2, 192)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name + " " + c.extra.dump() + " at " + std::to_string(c.size));
    Model model = make(c.name, c.channels, c.size, 10, c.extra);
    const workload::Workload work = model->workload();
    EXPECT_EQ(work.model, c.name);
    EXPECT_EQ(work.input_shape, (std::vector<int64_t>{c.channels, c.size, c.size}));
    EXPECT_EQ(work.total_macs(), c.expected);
  }
}

TEST(ModelWorkload, LiteratureTotalsAtCifarSize) {
  // ResNet-20: 40.55 M conv+fc MACs (the 40.8 M often quoted also counts BN and additions).
  EXPECT_EQ(make("resnet20", 3, 32, 10)->workload().total_macs(), 40'551'040);
  // VGG-11 CIFAR: 152.76 M conv MACs + 0.53 M for the three FC layers.
  EXPECT_EQ(make("vgg11_bn", 3, 32, 10)->workload().total_macs(), 153'293'824);
}

TEST(ModelWorkload, WeightedLayerNamesAreParameterNames) {
  for (const char* name : {"vgg11_bn", "resnet20", "resnet18", "mobilenetv2", "vit"}) {
    SCOPED_TRACE(name);
    Model model = make(name, 3, 32, 10);
    const workload::Workload work = model->workload();
    auto parameters = model->named_parameters();
    // The core/quant selection: parameters named "*weight" with dim >= 2.
    std::set<std::string> quantized;
    int64_t quantized_elements = 0;
    for (const auto& item : parameters) {
      const std::string& key = item.key();
      if (item.value().dim() >= 2 && key.size() >= 6 && key.substr(key.size() - 6) == "weight") {
        quantized.insert(key);
        quantized_elements += item.value().numel();
      }
    }
    std::set<std::string> described;
    for (const auto& layer : work.weighted_layers()) {
      const std::string key = layer.name + ".weight";
      ASSERT_TRUE(parameters.contains(key)) << key;
      EXPECT_EQ(parameters[key].numel(), layer.weight_count()) << key;
      described.insert(key);
    }
    EXPECT_EQ(described, quantized);
    EXPECT_EQ(work.total_weights(), quantized_elements);
  }
}

TEST(ModelWorkload, LayerSequenceOfResNet18) {
  const workload::Workload work = make("resnet18", 3, 32, 10)->workload();
  const auto weighted = work.weighted_layers();
  ASSERT_EQ(weighted.size(), 21u);  // 17 3x3 convs, 3 projection shortcuts, 1 fc
  EXPECT_EQ(weighted.front().name, "stem.conv");
  EXPECT_EQ(weighted.back().name, "fc.linear");
  EXPECT_EQ(weighted.back().kind, workload::OpKind::Linear);
  // block3 opens stage 2: 64 -> 128 with stride 2 on a 32x32 map.
  bool found = false;
  for (const auto& layer : weighted) {
    if (layer.name != "block3.conv1.conv") continue;
    found = true;
    EXPECT_EQ(layer.in_channels, 64);
    EXPECT_EQ(layer.out_channels, 128);
    EXPECT_EQ(layer.stride, 2);
    EXPECT_EQ(layer.in_h, 32);
    EXPECT_EQ(layer.out_h, 16);
  }
  EXPECT_TRUE(found);
}

TEST(ModelWorkload, DescribingAnUnknownModuleIsAnError) {
  struct Opaque : torch::nn::Module {};
  Opaque module;
  std::vector<workload::Layer> layers;
  EXPECT_THROW(describe_module("mystery", module, {3, 8, 8}, layers), Error);
  torch::nn::Conv2d conv(torch::nn::Conv2dOptions(4, 8, 3));
  EXPECT_THROW(describe_module("conv", *conv, {3, 8, 8}, layers), Error);  // wrong channels
}

TEST(ModelWorkload, WindowOutputSizeFollowsPyTorch) {
  // Checked against torch::max_pool2d, including ceil mode's dropped last window.
  for (int64_t in : {1, 2, 3, 7, 8, 28}) {
    for (int64_t kernel : {1, 2, 3}) {
      for (int64_t stride : {1, 2, 3}) {
        for (int64_t padding = 0; padding <= kernel / 2; ++padding) {
          for (bool ceil_mode : {false, true}) {
            if (in + 2 * padding < kernel) continue;
            const auto out = torch::max_pool2d(torch::zeros({1, 1, in, in}), kernel, stride,
                                               padding, 1, ceil_mode);
            EXPECT_EQ(window_output_size(in, kernel, stride, padding, ceil_mode), out.size(2))
                << in << " " << kernel << " " << stride << " " << padding << " " << ceil_mode;
          }
        }
      }
    }
  }
  // Ceil mode keeps a 1x1 map at 1x1 (VGG's last pool on small inputs).
  EXPECT_EQ(window_output_size(1, 2, 2, 0, true),
            torch::max_pool2d(torch::zeros({1, 1, 1, 1}), 2, 2, 0, 1, true).size(2));
}

TEST(ModelParameters, CountsMatchPublishedFigures) {
  EXPECT_EQ(count_parameters(*make("resnet20", 3, 32, 10)), 269'722);  // "0.27M" (He et al.)
  EXPECT_EQ(count_parameters(*make("resnet18", 3, 32, 10)), 11'173'962);
  EXPECT_EQ(count_parameters(*make("mobilenetv2", 3, 32, 10)), 2'236'682);  // torchvision, 10 cls
  // VGG-11-BN CIFAR (research/sfl.md 5.1): 9,225,984 conv+BN + 530,442 FC.
  EXPECT_EQ(count_parameters(*make("vgg11_bn", 3, 32, 10)), 9'756'426);
  // ViT by hand: patch conv, class token, position embedding, 6 blocks, head.
  const int64_t dim = 64, tokens = 65, mlp = 128;
  const int64_t block = 4 * dim + (dim * 3 * dim + 3 * dim) + (dim * dim + dim) +
                        (dim * mlp + mlp) + (mlp * dim + dim);
  EXPECT_EQ(count_parameters(*make("vit", 3, 32, 10)),
            (3 * 16 * dim + dim) + dim + tokens * dim + 6 * block + (2 * dim + dim * 10 + 10));
}

}  // namespace
}  // namespace tessera::models
