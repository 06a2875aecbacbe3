// Quantized model files: float and quantized files load, integers (flips included) survive a
// save/load round trip, and corrupt files are refused.
#include <gtest/gtest.h>

#include "tessera/bitflip/quantized_model.h"
#include "tessera/core/error.h"
#include "tessera/core/safetensors.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "test_support.h"

namespace tessera::bitflip {
namespace {

using tessera::testing::SeededTest;
using tessera::testing::TempDir;

models::Model small_resnet() {
  models::ModelConfig config;
  config.name = "resnet20";
  config.in_channels = 1;
  config.image_size = 32;
  config.width_mult = 0.25;
  return models::create(config);
}

TEST_F(SeededTest, QuantizedFileKeepsFlippedIntegersAndFloatFileIsQuantizedOnLoad) {
  TempDir dir;
  models::Model net = small_resnet();
  models::save(dir.file("float.safetensors"), net);
  QuantizedModel qm = load_quantized(dir.file("float.safetensors"));
  ASSERT_GT(qm.n_layers(), 10u);
  // The forward pass uses the dequantized integers.
  const torch::Tensor x = torch::rand({4, 1, 32, 32});
  QuantizedModel direct = quantize_model(models::load(dir.file("float.safetensors")));
  EXPECT_TRUE(torch::allclose(qm.predict(x), direct.predict(x)));
  // Flip an MSB, save, reload: the flip survives and the steps are unchanged.
  qm.weights[2].flip_bit(7, 7);
  qm.sync_layer(2);
  save_quantized(dir.file("q.safetensors"), qm);
  QuantizedModel back = load_quantized(dir.file("q.safetensors"));
  ASSERT_EQ(back.n_layers(), qm.n_layers());
  for (size_t l = 0; l < qm.n_layers(); ++l) {
    EXPECT_TRUE(torch::equal(back.weights[l].values, qm.weights[l].values));
    EXPECT_EQ(back.weights[l].step, qm.weights[l].step);
  }
  EXPECT_TRUE(torch::allclose(back.predict(x), qm.predict(x)));
  // clone() is deep.
  QuantizedModel copy = qm.clone();
  copy.weights[0].flip_bit(0, 7);
  EXPECT_FALSE(torch::equal(copy.weights[0].values, qm.weights[0].values));
}

TEST_F(SeededTest, OutOfRangeIntegersInAQuantizedFileAreRefused) {
  TempDir dir;
  QuantizedModel qm = quantize_model(small_resnet());
  save_quantized(dir.file("q.safetensors"), qm);
  auto file = safetensors::load(dir.file("q.safetensors"));
  for (auto& [name, tensor] : file.tensors) {
    if (name == qm.weights[0].name) tensor.view(-1)[0] = 300;
  }
  safetensors::save(dir.file("bad.safetensors"), file);
  try {
    load_quantized(dir.file("bad.safetensors"));
    FAIL() << "an out-of-range integer was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("outside"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tessera::bitflip
