// Tessera model files: round trip, and every kind of corrupt or foreign file.
#include <gtest/gtest.h>

#include <string>

#include "tessera/core/error.h"
#include "tessera/core/safetensors.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "test_support.h"

namespace tessera::models {
namespace {

class ModelIo : public testing::SeededTest {
 protected:
  // A ResNet-20 (shortcut B, so it has projection convs too) whose BN running statistics
  // differ from their initial values, so the round trip must carry the buffers.
  Model trained_model() {
    ModelConfig config;
    config.name = "resnet20";
    config.in_channels = 3;
    config.num_classes = 5;
    config.width_mult = 0.5;
    config.extra = {{"shortcut", "B"}};
    Model model = create(config);
    model->train();
    torch::NoGradGuard no_grad;
    for (int i = 0; i < 3; ++i) model(torch::randn({4, 3, 32, 32}) * 2 + 1);
    return model;
  }

  // Saves a trained model, lets `edit` change the raw file contents, writes them back.
  template <typename Edit>
  std::string corrupted(const std::string& file_name, Edit&& edit) {
    Model model = trained_model();
    const std::string path = dir_.file(file_name);
    save(path, model);
    safetensors::File file = safetensors::load(path);
    edit(file);
    safetensors::save(path, file);
    return path;
  }

  template <typename Fn>
  void expect_error(Fn&& fn, std::initializer_list<std::string> needles) {
    try {
      fn();
      FAIL() << "expected tessera::Error";
    } catch (const Error& e) {
      const std::string message = e.what();
      for (const auto& needle : needles) {
        EXPECT_NE(message.find(needle), std::string::npos)
            << "message '" << message << "' lacks '" << needle << "'";
      }
    }
  }

  testing::TempDir dir_;
};

TEST_F(ModelIo, RoundTripGivesIdenticalOutputs) {
  Model model = trained_model();
  const std::string path = dir_.file("model.safetensors");
  save(path, model);
  Model loaded = load(path);
  EXPECT_EQ(loaded->config().to_json(), model->config().to_json());
  EXPECT_EQ(read_config(path).to_json(), model->config().to_json());

  model->eval();
  loaded->eval();
  const torch::Tensor x = torch::randn({3, 3, 32, 32});
  EXPECT_TRUE(torch::equal(model(x), loaded(x)));
  auto buffers = loaded->named_buffers();
  for (const auto& item : model->named_buffers()) {
    EXPECT_TRUE(torch::equal(item.value(), buffers[item.key()])) << item.key();
  }
  // The running statistics really moved away from their initial values.
  EXPECT_FALSE(torch::equal(buffers["stem.bn.running_mean"],
                            torch::zeros_like(buffers["stem.bn.running_mean"])));
}

TEST_F(ModelIo, FileHoldsNamedTensorsAndArchitectureMetadata) {
  Model model = trained_model();
  const std::string path = dir_.file("model.safetensors");
  save(path, model);
  const safetensors::File file = safetensors::load(path);
  EXPECT_EQ(file.metadata.at("tessera.format"), "1");
  EXPECT_EQ(nlohmann::json::parse(file.metadata.at("tessera.arch")), model->config().to_json());
  EXPECT_EQ(file.tensors.size(), model->named_parameters().size() + model->named_buffers().size());
  EXPECT_TRUE(file.contains("stem.conv.weight"));
  EXPECT_TRUE(file.contains("block4.shortcut.conv.weight"));
  EXPECT_EQ(file.at("stem.bn.num_batches_tracked").scalar_type(), torch::kInt64);
  EXPECT_EQ(file.at("stem.bn.num_batches_tracked").item<int64_t>(), 3);
}

TEST_F(ModelIo, EveryModelRoundTrips) {
  for (const auto& info : list_models()) {
    SCOPED_TRACE(info.name);
    ModelConfig config;
    config.name = info.name;
    if (info.name != "vit") config.width_mult = 0.25;
    Model model = create(config);
    model->eval();
    const std::string path = dir_.file(info.name + ".safetensors");
    save(path, model);
    Model loaded = load(path);
    loaded->eval();
    const torch::Tensor x = torch::randn({2, 1, 32, 32});
    EXPECT_TRUE(torch::equal(model(x), loaded(x)));
  }
}

TEST_F(ModelIo, MissingTensorIsNamed) {
  const std::string path = corrupted("missing.safetensors", [](safetensors::File& file) {
    for (auto it = file.tensors.begin(); it != file.tensors.end(); ++it) {
      if (it->first == "block2.conv1.conv.weight") {
        file.tensors.erase(it);
        break;
      }
    }
  });
  expect_error([&] { load(path); }, {"block2.conv1.conv.weight", "missing", path});
}

TEST_F(ModelIo, WrongShapeIsNamed) {
  const std::string path = corrupted("shape.safetensors", [](safetensors::File& file) {
    for (auto& [name, tensor] : file.tensors) {
      if (name == "fc.linear.weight") tensor = torch::zeros({6, tensor.size(1)});
    }
  });
  expect_error([&] { load(path); }, {"fc.linear.weight", "shape", "[6, 32]", "[5, 32]", path});
}

TEST_F(ModelIo, WrongDtypeIsNamed) {
  const std::string path = corrupted("dtype.safetensors", [](safetensors::File& file) {
    for (auto& [name, tensor] : file.tensors) {
      if (name == "stem.bn.running_var") tensor = tensor.to(torch::kFloat64);
    }
  });
  expect_error([&] { load(path); }, {"stem.bn.running_var", "dtype", path});
}

TEST_F(ModelIo, UnexpectedTensorIsNamed) {
  const std::string path = corrupted("extra.safetensors", [](safetensors::File& file) {
    file.tensors.emplace_back("decoder.weight", torch::zeros({2, 2}));
  });
  expect_error([&] { load(path); }, {"decoder.weight", "unexpected", path});
}

TEST_F(ModelIo, FileWithoutMetadataIsNotATesseraModel) {
  const std::string path =
      corrupted("plain.safetensors", [](safetensors::File& file) { file.metadata.clear(); });
  expect_error([&] { load(path); }, {"not a Tessera model", path});
  expect_error([&] { read_config(path); }, {"not a Tessera model"});
}

TEST_F(ModelIo, BadArchitectureMetadataIsAnError) {
  const std::string bad_json = corrupted("json.safetensors", [](safetensors::File& file) {
    file.metadata["tessera.arch"] = "{\"name\": ";
  });
  expect_error([&] { load(bad_json); }, {"tessera.arch", "JSON", bad_json});
  const std::string unknown = corrupted("unknown.safetensors", [](safetensors::File& file) {
    file.metadata["tessera.arch"] = R"({"name": "densenet"})";
  });
  expect_error([&] { load(unknown); }, {"densenet", "vgg11_bn", unknown});
  const std::string future = corrupted(
      "format.safetensors", [](safetensors::File& file) { file.metadata["tessera.format"] = "2"; });
  expect_error([&] { load(future); }, {"format", "'2'"});
}

TEST_F(ModelIo, GarbageAndAbsentFilesAreErrors) {
  const std::string garbage = dir_.file("garbage.safetensors");
  testing::write_bytes(garbage, std::string("\x10\x00\x00\x00\x00\x00\x00\x00{not json}", 18));
  EXPECT_THROW(load(garbage), Error);
  EXPECT_THROW(load(dir_.file("absent.safetensors")), Error);
}

TEST_F(ModelIo, SaveReplacesAnExistingFile) {
  Model first = trained_model();
  const std::string path = dir_.file("model.safetensors");
  save(path, first);
  ModelConfig config;
  config.name = "vit";
  Model second = create(config);
  save(path, second);
  EXPECT_EQ(load(path)->config().name, "vit");
}

TEST(ModelParameterCount, CountsEveryParameterElement) {
  torch::nn::Linear linear(3, 4);  // 12 weights + 4 biases
  EXPECT_EQ(count_parameters(*linear), 16);
  torch::nn::BatchNorm2d bn(5);  // weight and bias; running stats are buffers
  EXPECT_EQ(count_parameters(*bn), 10);
}

}  // namespace
}  // namespace tessera::models
