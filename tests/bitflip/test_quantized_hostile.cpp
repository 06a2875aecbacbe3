// Hostile quantized model files (issue 22): a float bit width, a layer listed twice, a tensor
// that is not part of the model and a non-finite float tensor are each refused, naming the file.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>

#include "tessera/bitflip/quantized_model.h"
#include "tessera/core/error.h"
#include "tessera/core/safetensors.h"
#include "tessera/models/registry.h"
#include "test_support.h"

namespace tessera::bitflip {
namespace {

using tessera::testing::error_of;
using tessera::testing::TempDir;

class HostileQuantizedFile : public tessera::testing::SeededTest {
 protected:
  /// A quantized ResNet-20 saved, its file edited by `edit`, written back; returns the path.
  std::string edited(const std::function<void(safetensors::File&, nlohmann::json&)>& edit) {
    models::ModelConfig config;
    config.name = "resnet20";
    config.width_mult = 0.25;
    qm_ = quantize_model(models::create(config));
    const std::string path = dir_.file("q.safetensors");
    save_quantized(path, qm_);
    safetensors::File file = safetensors::load(path);
    nlohmann::json meta = nlohmann::json::parse(file.metadata.at("tessera.bitflip"));
    edit(file, meta);
    file.metadata["tessera.bitflip"] = meta.dump();
    safetensors::save(path, file);
    return path;
  }
  void expect_refused(const std::string& path, const std::string& part) {
    const std::string error = error_of([&] { load_quantized(path); });
    EXPECT_NE(error.find(path), std::string::npos) << error;
    EXPECT_NE(error.find(part), std::string::npos) << error;
  }
  QuantizedModel qm_;
  TempDir dir_;
};

TEST_F(HostileQuantizedFile, FloatBitWidthIsRefused) {
  expect_refused(edited([](safetensors::File&, nlohmann::json& meta) { meta["bits"] = 8.9; }),
                 "bits must be an integer");
}

TEST_F(HostileQuantizedFile, LayerListedTwiceIsRefused) {
  expect_refused(edited([](safetensors::File&, nlohmann::json& meta) {
                   meta["layers"].push_back(meta["layers"][0]);
                 }),
                 "listed twice");
}

TEST_F(HostileQuantizedFile, ExtraTensorIsRefused) {
  expect_refused(edited([](safetensors::File& file, nlohmann::json&) {
                   file.tensors.emplace_back("extra.weight", torch::zeros({2}));
                 }),
                 "extra entries");
}

TEST_F(HostileQuantizedFile, NonFiniteFloatTensorIsRefused) {
  std::string name;
  const std::string path = edited([&](safetensors::File& file, nlohmann::json&) {
    for (auto& [key, tensor] : file.tensors) {
      if (name.empty() && tensor.is_floating_point()) {
        name = key;
        tensor.view(-1)[0] = std::nanf("");
      }
    }
  });
  ASSERT_FALSE(name.empty());
  expect_refused(path, name);
}

}  // namespace
}  // namespace tessera::bitflip
