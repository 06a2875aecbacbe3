// The deployed int8 model and the fused check: the fused read equals the naive per-group check
// and a plain dequantization on random codes and keys; the deployed forward equals the
// fake-quantized float model; one flipped bit of the deployed memory changes the output and is
// detected.
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "tessera/bitflip/bench_commands.h"
#include "tessera/bitflip/deployed.h"
#include "tessera/bitflip/fused_check.h"
#include "tessera/bitflip/guard.h"
#include "tessera/bitflip/radar.h"
#include "tessera/core/error.h"
#include "tessera/models/registry.h"
#include "test_support.h"

namespace tessera::bitflip {
namespace {

using tessera::testing::error_of;
using tessera::testing::SeededTest;

/// The naive per-group checksum of 3.3 over the layout's elements (padding reads as 0).
uint8_t naive_signature(const LayerLayout& layout, const int8_t* codes, int64_t g) {
  std::vector<int32_t> w;
  std::vector<int8_t> k;
  for (int64_t j = 0; j < layout.group_size; ++j) {
    w.push_back(codes[layout.element(g, j)]);
    k.push_back(static_cast<int8_t>(layout.key(j)));
  }
  return group_checksum(w.data(), k.data(), static_cast<int64_t>(w.size()), 8).signature();
}

TEST_F(SeededTest, FusedCheckEqualsNaivePerGroupCheckOnRandomCodesAndKeys) {
  std::mt19937_64 rng(11);
  int64_t n_groups_checked = 0, n_odd_slots = 0;
  for (int trial = 0; trial < 24; ++trial) {
    const int64_t g_size = std::vector<int64_t>{2, 3, 5, 8, 16, 32, 64}[rng() % 7];
    const int64_t block = std::vector<int64_t>{32, 256, 1000, 4096}[rng() % 4];
    const int64_t n = 1 + static_cast<int64_t>(rng() % 6000);
    quant::QuantizedTensor q;
    q.name = "layer" + std::to_string(trial);
    q.bits = 8;
    q.step = 0.01;
    q.values = torch::empty({n}, torch::kInt32);
    for (int64_t i = 0; i < n; ++i)  // all of [-128, 127], -128 included (a flipped 0)
      q.values.data_ptr<int32_t>()[i] = static_cast<int32_t>(rng() % 256) - 128;
    const Radar radar(RadarKey::from_seed(rng()), RadarOptions{g_size, 2, block}, {q});
    const LayerLayout& layout = radar.layout(0);
    std::vector<int8_t> codes(static_cast<size_t>(layout.padded), 0);
    for (int64_t i = 0; i < n; ++i) codes[i] = static_cast<int8_t>(q.values.data_ptr<int32_t>()[i]);
    const auto slots = static_cast<size_t>(layout.n_slots());
    for (const CheckKernel kernel : supported_check_kernels()) {
      SCOPED_TRACE(fmt::format("trial {} G {} block {} n {} slots {} kernel {}", trial, g_size,
                               block, n, layout.n_slots(), check_kernel_name(kernel)));
      std::vector<uint32_t> a(slots), b(slots);
      std::vector<float> out(static_cast<size_t>(layout.padded), -1.0f);
      fused_read(layout, codes.data(), out.data(), 0.25f, a.data(), b.data(), kernel);
      for (int64_t g = 0; g < layout.n_groups(); ++g) {
        const uint8_t fused = static_cast<uint8_t>((((a[g / 32] >> (g % 32)) & 1u) << 1) |
                                                   ((b[g / 32] >> (g % 32)) & 1u));
        ASSERT_EQ(fused, naive_signature(layout, codes.data(), g)) << "group " << g;
      }
      for (int64_t i = 0; i < layout.padded; ++i) ASSERT_EQ(out[i], codes[i] * 0.25f) << i;
      // Without an output buffer: the same masks.
      std::vector<uint32_t> a2(slots), b2(slots);
      fused_read(layout, codes.data(), nullptr, 0.0f, a2.data(), b2.data(), kernel);
      EXPECT_EQ(a2, a);
      EXPECT_EQ(b2, b);
      // And the int32 path of Radar::sign gives the same signatures.
      std::vector<uint8_t> from_masks;
      for (int64_t g = 0; g < layout.n_groups(); ++g)
        from_masks.push_back(static_cast<uint8_t>((((a[g / 32] >> (g % 32)) & 1u) << 1) |
                                                  ((b[g / 32] >> (g % 32)) & 1u)));
      EXPECT_EQ(from_masks, radar.sign({q}).layers[0].signatures);
    }
    n_groups_checked += layout.n_groups();
    n_odd_slots += layout.n_slots() % 2;
    for (const CheckKernel kernel : supported_check_kernels()) {
      std::vector<float> plain(static_cast<size_t>(n));
      dequantize_codes(codes.data(), n, 0.5f, plain.data(), kernel);
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(plain[i], codes[i] * 0.5f) << i;
    }
  }
  EXPECT_GT(n_groups_checked, 1000);
  EXPECT_GT(n_odd_slots, 0);  // the AVX-512 kernel's one-slot tail ran too
}

TEST(CheckKernel, EveryKernelTheCpuHasCanBeForcedAndOthersAreRefused) {
  const CheckKernel best = best_check_kernel();
  const auto supported = supported_check_kernels();
  ASSERT_FALSE(supported.empty());
  EXPECT_EQ(supported.front(), CheckKernel::kScalar);
  EXPECT_EQ(supported.back(), best);
  for (const CheckKernel k : {CheckKernel::kScalar, CheckKernel::kAvx2, CheckKernel::kAvx512}) {
    const bool has = std::find(supported.begin(), supported.end(), k) != supported.end();
    if (has) {
      set_check_kernel(k);
      EXPECT_EQ(check_kernel(), k);
    } else {
      const std::string what = error_of([&] { set_check_kernel(k); });
      EXPECT_NE(what.find("not supported"), std::string::npos) << what;
    }
  }
  set_check_kernel(best);
  EXPECT_EQ(check_kernel(), best);
}

models::Model small_resnet() {
  models::ModelConfig config;
  config.name = "resnet20";
  config.in_channels = 1;
  config.image_size = 32;
  config.width_mult = 0.5;
  return models::create(config);
}

TEST_F(SeededTest, DeployedForwardReadsTheCodesAndEqualsTheFakeQuantizedModel) {
  QuantizedModel qm = quantize_model(small_resnet(), 8);
  const Radar radar(RadarKey::from_seed(2), RadarOptions{8, 2}, qm.weights);
  DeployedModel deployed = DeployedModel::deploy(qm, &radar);
  const torch::Tensor x = torch::rand({3, 1, 32, 32});
  const torch::Tensor expected = qm.predict(x);
  EXPECT_TRUE(torch::allclose(deployed.forward(x), expected, 1e-4, 1e-5));
  // The weight memory is int8 (one byte a weight plus padding) and no float copy is kept: the
  // reused buffer holds one unit's weights, far fewer than the model's.
  EXPECT_LT(deployed.memory_bytes(), 2 * qm.n_weights());
  EXPECT_LT(deployed.buffer_floats(), qm.n_weights() / 2);
  for (size_t l = 0; l < deployed.n_layers(); ++l)
    EXPECT_EQ(deployed.layer(l).param.data_ptr<float>() - deployed.layer(0).param.data_ptr<float>(),
              deployed.layer(l).buffer_offset - deployed.layer(0).buffer_offset);
  // Without a RADAR layout the padding is to 32 codes only; both give the same output.
  DeployedModel plain = DeployedModel::deploy(qm);
  EXPECT_TRUE(torch::allclose(plain.forward(x), expected, 1e-4, 1e-5));
  EXPECT_NE(error_of([&] { radar.check(plain, radar.sign(qm.weights)); }).find("layout"),
            std::string::npos);
  // A model that is not 8-bit cannot be deployed.
  EXPECT_NE(
      error_of([&] { DeployedModel::deploy(quantize_model(small_resnet(), 6)); }).find("int8"),
      std::string::npos);
}

TEST_F(SeededTest, OneFlippedBitOfTheDeployedMemoryChangesTheOutputAndIsDetected) {
  QuantizedModel qm = quantize_model(small_resnet(), 8);
  const torch::Tensor x = torch::rand({4, 1, 32, 32});
  for (const int64_t g_size : {8, 16}) {
    const Radar radar(RadarKey::from_seed(3), RadarOptions{g_size, 2}, qm.weights);
    DeployedModel deployed = DeployedModel::deploy(qm, &radar);
    const GoldenSignatures golden = radar.sign(deployed);
    const torch::Tensor clean = deployed.forward(x);
    // The stem's weight 7: one byte of the weight memory, bit 7 (the sign bit).
    const size_t layer = 0;
    const int64_t index = 7;
    deployed.memory()[deployed.layer(layer).offset + index] ^= 0x80;
    EXPECT_FALSE(torch::allclose(deployed.forward(x), clean, 1e-4, 1e-5));
    const CheckResult check = radar.check(deployed, golden);
    EXPECT_EQ(check.n_flagged_groups(), 1);
    EXPECT_TRUE(check.is_flagged(layer, radar.layout(layer).group_of(index)));
    // The guard finds it in the same read that feeds the forward pass.
    RadarGuard guard(deployed, radar, golden, GuardOptions{1, false});
    guard.forward(x);
    EXPECT_EQ(guard.stats().n_detections, 1);
    EXPECT_TRUE(guard.last_check().is_flagged(layer, radar.layout(layer).group_of(index)));
  }
}

TEST_F(SeededTest, FlipsIntoTheDeployedMemoryAreCheckedAndSnapshotsRestore) {
  QuantizedModel qm = quantize_model(small_resnet(), 8);
  DeployedModel deployed = DeployedModel::deploy(qm);
  const torch::Tensor before = deployed.snapshot();
  const auto& q = qm.weights[2];
  BitFlip flip;
  flip.layer = q.name;
  flip.index = 11;
  flip.bit = 7;
  flip.old_value = q.values.data_ptr<int32_t>()[11];
  flip.new_value =
      quant::from_twos_complement(quant::to_twos_complement(flip.old_value, 8) ^ 0x80u, 8);
  deployed.apply_flips({flip});
  EXPECT_EQ(deployed.codes(2)[11], flip.new_value);
  // The same flip again no longer matches the memory: refused, nothing changed.
  EXPECT_NE(error_of([&] { deployed.apply_flips({flip}); }).find("another model"),
            std::string::npos);
  EXPECT_EQ(deployed.codes(2)[11], flip.new_value);
  // copy_codes_to writes the flipped code back into a quantized model.
  QuantizedModel back = qm.clone();
  deployed.copy_codes_to(back);
  EXPECT_EQ(back.weights[2].values.data_ptr<int32_t>()[11], flip.new_value);
  deployed.restore(before);
  EXPECT_EQ(deployed.codes(2)[11], flip.old_value);
}

}  // namespace
}  // namespace tessera::bitflip
