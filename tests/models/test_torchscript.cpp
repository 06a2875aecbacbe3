// TorchScript import: a small CNN scripted from C++ (as torch.jit.script would save it) loads as
// a Model whose outputs, gradients, workload, save/clone and errors are checked.
#include <gtest/gtest.h>
#include <torch/script.h>

#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "tessera/models/torchscript.h"
#include "test_support.h"

namespace tessera::models {
namespace {

using testing::error_of;
using testing::TempDir;

torch::jit::Module make_conv(int64_t in, int64_t out) {
  torch::jit::Module conv("Conv");
  conv.register_parameter("weight", torch::randn({out, in, 3, 3}) * 0.3, false);
  conv.register_parameter("bias", torch::randn({out}) * 0.1, false);
  conv.define(R"(
def forward(self, x):
    return torch.conv2d(x, self.weight, self.bias, [1, 1], [1, 1], [1, 1], 1)
)");
  return conv;
}

// conv(1->4, 3x3) -> relu -> maxpool 2 -> flatten -> linear(4*14*14 -> 3): it takes 28x28 only.
torch::jit::Module make_cnn() {
  torch::jit::Module fc("Fc");
  fc.register_parameter("weight", torch::randn({3, 4 * 14 * 14}) * 0.05, false);
  fc.register_parameter("bias", torch::zeros({3}), false);
  fc.define(R"(
def forward(self, x):
    return torch.linear(x, self.weight, self.bias)
)");
  torch::jit::Module net("Net");
  net.register_module("conv1", make_conv(1, 4));
  net.register_module("fc", fc);
  net.define(R"(
def forward(self, x):
    y = torch.relu(self.conv1.forward(x))
    y = torch.max_pool2d(y, [2, 2], [2, 2], [0, 0], [1, 1], False)
    return self.fc.forward(torch.flatten(y, 1))
)");
  return net;
}

class TorchScriptTest : public testing::SeededTest {
 protected:
  std::string write(torch::jit::Module module, const std::string& name = "net.pt") {
    const std::string path = dir.file(name);
    module.save(path);
    return path;
  }
  TempDir dir;
};

TEST_F(TorchScriptTest, LoadsByContentWithTheScriptsOutputs) {
  torch::jit::Module net = make_cnn();
  const std::string path = write(net, "model.safetensors");  // the name does not matter
  ASSERT_TRUE(is_torchscript_file(path));
  Model model = load(path);
  ASSERT_TRUE(is_imported(model));
  EXPECT_EQ(model->config().name, kTorchScriptArch);
  EXPECT_EQ(model->config().in_channels, 1);
  EXPECT_EQ(model->config().image_size, 28);  // 32 does not fit the linear layer
  EXPECT_EQ(model->config().num_classes, 3);
  const torch::Tensor x = torch::rand({5, 1, 28, 28});
  model->eval();
  const torch::Tensor expected = net.forward({x}).toTensor();
  EXPECT_TRUE(torch::equal(model->forward(x), expected));
}

TEST_F(TorchScriptTest, ParametersAreTheScriptsTensorsAndCarryGradients) {
  Model model = load(write(make_cnn()));
  auto params = model->named_parameters();
  ASSERT_EQ(params.size(), 4u);
  ASSERT_NE(params.find("script.conv1.weight"), nullptr);
  ASSERT_NE(params.find("script.fc.bias"), nullptr);
  // A write into the Model's parameter changes what the TorchScript forward computes.
  const torch::Tensor x = torch::rand({2, 1, 28, 28});
  {
    torch::NoGradGuard no_grad;
    params["script.fc.weight"].zero_();
    params["script.fc.bias"].fill_(2.5);
  }
  EXPECT_TRUE(torch::allclose(model->forward(x), torch::full({2, 3}, 2.5)));
  // Gradients reach the shared tensors.
  for (auto& p : model->parameters()) p.set_requires_grad(true);
  model->forward(x).sum().backward();
  ASSERT_TRUE(params["script.fc.bias"].grad().defined());
  EXPECT_TRUE(torch::allclose(params["script.fc.bias"].grad(), torch::full({3}, 2.0)));
  EXPECT_TRUE(params["script.conv1.weight"].grad().defined());
}

TEST_F(TorchScriptTest, WorkloadIsTracedWithParameterNames) {
  Model model = load(write(make_cnn()));
  const workload::Workload w = model->workload();
  const auto weighted = w.weighted_layers();
  ASSERT_EQ(weighted.size(), 2u);
  EXPECT_EQ(weighted[0].name, "script.conv1");
  EXPECT_EQ(weighted[0].kind, workload::OpKind::Conv2d);
  EXPECT_EQ(weighted[0].in_channels, 1);
  EXPECT_EQ(weighted[0].out_channels, 4);
  EXPECT_EQ(weighted[0].padding, 1);
  EXPECT_EQ(weighted[0].out_h, 28);
  EXPECT_EQ(weighted[1].name, "script.fc");
  EXPECT_EQ(weighted[1].kind, workload::OpKind::Linear);
  EXPECT_EQ(weighted[1].in_channels, 4 * 14 * 14);
  EXPECT_EQ(weighted[1].out_channels, 3);
  const auto params = model->named_parameters();
  for (const auto& l : weighted) EXPECT_NE(params.find(l.name + ".weight"), nullptr) << l.name;
  // Weightless ops: the ReLU and the pooling, with the pooling's output side.
  bool pooled = false;
  for (const auto& l : w.layers) {
    if (l.kind == workload::OpKind::Pool) {
      pooled = true;
      EXPECT_EQ(l.in_h, 28);
      EXPECT_EQ(l.out_h, 14);
    }
  }
  EXPECT_TRUE(pooled);
  EXPECT_EQ(w.total_macs(), 4 * 9 * 28 * 28 + 3 * 4 * 14 * 14);
}

TEST_F(TorchScriptTest, SaveKeepsWeightsAndShapeAndCloneIsDeep) {
  Model model = load(write(make_cnn()));
  {
    torch::NoGradGuard no_grad;
    model->named_parameters()["script.conv1.bias"].fill_(0.75);
  }
  const std::string saved = dir.file("saved.pt");
  save(saved, model);
  Model again = load(saved);
  EXPECT_EQ(again->config().image_size, 28);
  const torch::Tensor x = torch::rand({3, 1, 28, 28});
  model->eval();
  again->eval();
  EXPECT_TRUE(torch::equal(model->forward(x), again->forward(x)));
  EXPECT_EQ(read_config(saved).num_classes, 3);

  Model copy = clone(model);
  {
    torch::NoGradGuard no_grad;
    copy->named_parameters()["script.fc.bias"].fill_(-9.0);
  }
  EXPECT_FALSE(torch::equal(model->forward(x), copy->forward(x)));
  EXPECT_TRUE(torch::equal(model->forward(x), again->forward(x)));
}

TEST_F(TorchScriptTest, ShapeFromTheExtraFile) {
  // A global-pooling net runs at any side: tessera.json pins the one it was trained at.
  torch::jit::Module net("Pool");
  net.register_module("conv1", make_conv(3, 2));
  net.define(R"(
def forward(self, x):
    return torch.mean(self.conv1.forward(x), [2, 3])
)");
  const std::string path = dir.file("pool.pt");
  net.save(path, {{kScriptExtraFile, R"({"image_size": 96})"}});
  Model model = load(path);
  EXPECT_EQ(model->config().in_channels, 3);
  EXPECT_EQ(model->config().image_size, 96);
  EXPECT_EQ(model->config().num_classes, 2);
}

TEST_F(TorchScriptTest, BadFilesGiveOneClearError) {
  const std::string corrupt = dir.file("corrupt.pt");
  testing::write_bytes(corrupt, std::string("PK\x03\x04", 4) + std::string(100, 'x'));
  EXPECT_NE(error_of([&] { load(corrupt); }).find("not a readable TorchScript file"),
            std::string::npos);

  torch::jit::Module empty("Empty");
  empty.define("def forward(self, x):\n    return x\n");
  EXPECT_NE(error_of([&] { load(write(empty, "empty.pt")); }).find("has no parameters"),
            std::string::npos);

  torch::jit::Module nan_net = make_cnn();
  nan_net.attr("fc").toModule().attr("bias").toTensor()[1] = NAN;
  const std::string nan_error = error_of([&] { load(write(nan_net, "nan.pt")); });
  EXPECT_NE(nan_error.find("'fc.bias' holds NaN or Inf"), std::string::npos) << nan_error;

  torch::jit::Module pair("Pair");
  pair.register_module("conv1", make_conv(1, 2));
  pair.define("def forward(self, x):\n    y = self.conv1.forward(x)\n    return (y, y)\n");
  EXPECT_NE(error_of([&] { load(write(pair, "pair.pt")); }).find("no input side"),
            std::string::npos);

  EXPECT_NE(error_of([&] { create(ModelConfig{kTorchScriptArch}); }).find("TorchScript file"),
            std::string::npos);
}

TEST_F(TorchScriptTest, UnitsAreRequiredClearly) {
  Model model = load(write(make_cnn()));
  EXPECT_NE(error_of([&] { require_units(model, "split learning"); }).find("imported TorchScript"),
            std::string::npos);
  Model own = create(ModelConfig{"resnet20"});
  EXPECT_NO_THROW(require_units(own, "split learning"));
}

}  // namespace
}  // namespace tessera::models
