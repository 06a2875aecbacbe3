// Hostile model files (issue 22): tiny files declaring huge architectures, non-finite weights,
// negative BatchNorm variances and deeply nested metadata are refused with the file's name.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <string>

#include "tessera/core/error.h"
#include "tessera/core/safetensors.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "test_support.h"

namespace tessera::models {
namespace {

using ::tessera::testing::error_of;
using ::tessera::testing::TempDir;

class HostileModelFile : public testing::SeededTest {
 protected:
  /// A file with Tessera metadata `arch` and no tensors at all (a few hundred bytes).
  std::string tiny_file(const std::string& arch) {
    safetensors::File file;
    file.metadata[kArchKey] = arch;
    file.metadata[kFormatKey] = kFormatVersion;
    const std::string path = dir_.file("tiny.safetensors");
    safetensors::save(path, file);
    return path;
  }

  static Model small_model() {
    ModelConfig config;
    config.name = "resnet20";
    config.num_classes = 5;
    config.width_mult = 0.25;
    return create(config);
  }
  /// The first parameter or buffer of small_model() whose name contains `part`.
  static std::string tensor_name(const std::string& part) {
    Model model = small_model();
    for (const auto& item : model->named_parameters()) {
      if (item.key().find(part) != std::string::npos) return item.key();
    }
    for (const auto& item : model->named_buffers()) {
      if (item.key().find(part) != std::string::npos) return item.key();
    }
    return "";
  }

  /// small_model() saved, then one tensor edited by `edit` in the file.
  template <typename Edit>
  std::string edited_model(const std::string& tensor_name, Edit&& edit) {
    Model model = small_model();
    const std::string path = dir_.file("m.safetensors");
    save(path, model);
    safetensors::File file = safetensors::load(path);
    bool found = false;
    for (auto& [name, tensor] : file.tensors) {
      if (name == tensor_name) {
        edit(tensor);
        found = true;
      }
    }
    EXPECT_TRUE(found) << tensor_name;
    safetensors::save(path, file);
    return path;
  }

  TempDir dir_;
};

TEST_F(HostileModelFile, TinyFileOfAHugeArchitectureIsRefusedBeforeAllocating) {
  for (const std::string arch :
       {R"({"name": "vit", "extra": {"dim": 4096, "depth": 256}})",
        R"({"name": "resnet50", "in_channels": 3, "image_size": 224, "width_mult": 8.0})"}) {
    const std::string path = tiny_file(arch);
    const auto start = std::chrono::steady_clock::now();
    const std::string error = error_of([&] { load(path); });
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    EXPECT_NE(error.find(path), std::string::npos) << error;
    EXPECT_NE(error.find("needs more than"), std::string::npos) << error;
    EXPECT_LT(seconds, 5.0) << arch;
  }
}

TEST_F(HostileModelFile, DeeplyNestedArchitectureIsRefusedNotACrash) {
  const std::string deep = std::string(100'000, '[') + std::string(100'000, ']');
  const std::string path = tiny_file(R"({"name": "vit", "extra": {"dim": )" + deep + "}}");
  const std::string error = error_of([&] { load(path); });
  EXPECT_NE(error.find(path), std::string::npos);
  EXPECT_NE(error.find("nested deeper"), std::string::npos) << error.substr(0, 300);
}

TEST_F(HostileModelFile, NonFiniteWeightIsRefusedNamingTheTensor) {
  const std::string name = tensor_name("weight");
  ASSERT_FALSE(name.empty());
  for (const float bad : {std::nanf(""), INFINITY, -INFINITY}) {
    const std::string path = edited_model(name, [&](torch::Tensor& t) { t.view(-1)[3] = bad; });
    const std::string error = error_of([&] { load(path); });
    EXPECT_NE(error.find("'" + name + "'"), std::string::npos) << error;
    EXPECT_NE(error.find("NaN or Inf"), std::string::npos) << error;
  }
}

TEST_F(HostileModelFile, NegativeRunningVarianceIsRefused) {
  const std::string name = tensor_name("running_var");
  ASSERT_FALSE(name.empty());
  const std::string path = edited_model(name, [](torch::Tensor& t) { t.view(-1)[0] = -0.5; });
  const std::string error = error_of([&] { load(path); });
  EXPECT_NE(error.find(name), std::string::npos) << error;
  EXPECT_NE(error.find("negative"), std::string::npos) << error;
}

TEST_F(HostileModelFile, HonestFileStillLoads) {
  const std::string name = tensor_name("bias");
  ASSERT_FALSE(name.empty());
  const std::string path = edited_model(name, [](torch::Tensor& t) { t.fill_(0.25); });
  Model model = load(path);
  EXPECT_FLOAT_EQ(model->named_parameters()[name].view(-1)[0].item<float>(), 0.25f);
}

}  // namespace
}  // namespace tessera::models
