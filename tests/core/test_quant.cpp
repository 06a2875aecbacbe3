// core/quant: two's-complement codes against hand-computed values, quantization against a naive
// per-element reference, and quantize/load round trips on a small module.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cfenv>
#include <cmath>
#include <string>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/quant.h"
#include "test_support.h"

namespace tessera::quant {
namespace {

using ::tessera::testing::SeededTest;

struct CodeCase {
  int32_t value;
  int bits;
  uint32_t code;
};

TEST(QuantTwosComplement, MatchesHandComputedCodes) {
  const CodeCase cases[] = {{0, 8, 0x00},        {1, 8, 0x01},     {5, 8, 0x05},
                            {127, 8, 0x7F},      {-1, 8, 0xFF},    {-123, 8, 0x85},
                            {-127, 8, 0x81},     {-128, 8, 0x80},  {1, 2, 0b01},
                            {-1, 2, 0b11},       {-2, 2, 0b10},    {-3, 4, 0b1101},
                            {7, 4, 0b0111},      {-8, 4, 0b1000},  {-32768, 16, 0x8000},
                            {32767, 16, 0x7FFF}, {-1, 16, 0xFFFF}, {-300, 16, 0xFED4}};
  for (const auto& c : cases) {
    SCOPED_TRACE(::testing::Message() << c.value << " in " << c.bits << " bits");
    EXPECT_EQ(to_twos_complement(c.value, c.bits), c.code);
    EXPECT_EQ(from_twos_complement(c.code, c.bits), c.value);
  }
}

TEST(QuantTwosComplement, EveryCodeRoundTrips) {
  for (int bits = 2; bits <= 16; ++bits) {
    for (uint32_t code = 0; code < (1u << bits); ++code) {
      ASSERT_EQ(to_twos_complement(from_twos_complement(code, bits), bits), code)
          << "code " << code << " bits " << bits;
    }
  }
}

TEST(QuantTwosComplement, RejectsOutOfRangeValuesCodesAndWidths) {
  EXPECT_THROW(to_twos_complement(128, 8), Error);
  EXPECT_THROW(to_twos_complement(-129, 8), Error);
  EXPECT_THROW(to_twos_complement(2, 2), Error);
  EXPECT_THROW(from_twos_complement(256, 8), Error);
  EXPECT_THROW(to_twos_complement(0, 1), Error);
  EXPECT_THROW(to_twos_complement(0, 17), Error);
  EXPECT_THROW(from_twos_complement(0, 0), Error);
}

QuantizedTensor from_values(std::vector<int32_t> values, int bits) {
  QuantizedTensor q;
  q.name = "w";
  q.bits = bits;
  q.step = 0.5;
  q.values = torch::tensor(values, torch::kInt32);
  return q;
}

TEST(QuantBits, GetBitReadsTwosComplementBits) {
  const QuantizedTensor q = from_values({-123, 5, -1, 0}, 8);
  // -123 = 0x85 = 1000'0101
  const int expected_minus_123[8] = {1, 0, 1, 0, 0, 0, 0, 1};
  for (int bit = 0; bit < 8; ++bit) {
    EXPECT_EQ(q.get_bit(0, bit), expected_minus_123[bit]) << "bit " << bit;
    EXPECT_EQ(q.get_bit(1, bit), (5 >> bit) & 1) << "bit " << bit;
    EXPECT_EQ(q.get_bit(2, bit), 1) << "bit " << bit;
    EXPECT_EQ(q.get_bit(3, bit), 0) << "bit " << bit;
  }
}

TEST(QuantBits, FlipBitChangesTheValueAsTwosComplement) {
  QuantizedTensor q = from_values({5, -1, -1, 127, 0}, 8);
  q.flip_bit(0, 7);  // 0000'0101 -> 1000'0101 = -123
  EXPECT_EQ(q.values[0].item<int32_t>(), -123);
  q.flip_bit(0, 7);  // and back
  EXPECT_EQ(q.values[0].item<int32_t>(), 5);
  q.flip_bit(1, 0);  // 1111'1111 -> 1111'1110 = -2
  EXPECT_EQ(q.values[1].item<int32_t>(), -2);
  q.flip_bit(2, 7);  // 1111'1111 -> 0111'1111 = 127
  EXPECT_EQ(q.values[2].item<int32_t>(), 127);
  q.flip_bit(3, 7);  // 0111'1111 -> 1111'1111 = -1
  EXPECT_EQ(q.values[3].item<int32_t>(), -1);
  q.flip_bit(4, 7);  // 0 -> -128: the one value quantization never produces
  EXPECT_EQ(q.values[4].item<int32_t>(), -128);
  EXPECT_FLOAT_EQ(q.dequantize()[4].item<float>(), -64.0f);

  QuantizedTensor q4 = from_values({3}, 4);
  q4.flip_bit(0, 3);  // 0011 -> 1011 = -5
  EXPECT_EQ(q4.values[0].item<int32_t>(), -5);
}

TEST(QuantBits, BadIndexOrBitIsAnError) {
  QuantizedTensor q = from_values({1, 2}, 8);
  EXPECT_THROW(q.get_bit(2, 0), Error);
  EXPECT_THROW(q.get_bit(-1, 0), Error);
  EXPECT_THROW(q.get_bit(0, 8), Error);
  EXPECT_THROW(q.flip_bit(0, -1), Error);
  QuantizedTensor wrong_dtype = q;
  wrong_dtype.values = q.values.to(torch::kInt64);
  EXPECT_THROW(wrong_dtype.get_bit(0, 0), Error);
  QuantizedTensor out_of_range = from_values({200}, 8);
  EXPECT_THROW(out_of_range.flip_bit(0, 0), Error);
}

class QuantizeTest : public SeededTest {};

TEST_F(QuantizeTest, MatchesNaivePerElementReference) {
  ASSERT_EQ(std::fegetround(), FE_TONEAREST);  // nearbyint below rounds half to even
  const torch::Tensor w = torch::randn({6, 5, 3}) * 0.7;
  for (int bits : {2, 3, 4, 8, 12, 16}) {
    SCOPED_TRACE(::testing::Message() << bits << " bits");
    const QuantizedTensor q = quantize("layer.weight", w, bits);
    EXPECT_EQ(q.name, "layer.weight");
    EXPECT_EQ(q.bits, bits);
    EXPECT_EQ(q.values.scalar_type(), torch::kInt32);
    EXPECT_EQ(q.values.sizes(), w.sizes());
    // Independent reference: step = max|W| / (2^(n-1) - 1), round, clamp (research 3.1).
    const auto* data = w.data_ptr<float>();
    double max_abs = 0.0;
    for (int64_t i = 0; i < w.numel(); ++i) max_abs = std::max(max_abs, std::fabs(double{data[i]}));
    const double levels = std::pow(2.0, bits - 1) - 1.0;
    const double step = max_abs / levels;
    EXPECT_DOUBLE_EQ(q.step, step);
    const auto* values = q.values.data_ptr<int32_t>();
    for (int64_t i = 0; i < w.numel(); ++i) {
      const double expected = std::nearbyint(std::clamp(double{data[i]} / step, -levels, levels));
      ASSERT_EQ(values[i], static_cast<int32_t>(expected)) << "element " << i;
    }
  }
}

TEST_F(QuantizeTest, DequantizationErrorIsAtMostHalfAStep) {
  const torch::Tensor w = torch::randn({32, 16}) * 0.05;
  for (int bits = 2; bits <= 16; ++bits) {
    const QuantizedTensor q = quantize("w", w, bits);
    const torch::Tensor back = q.dequantize();
    EXPECT_EQ(back.scalar_type(), torch::kFloat32);
    const double max_err =
        (back.to(torch::kFloat64) - w.to(torch::kFloat64)).abs().max().item<double>();
    // step/2 from rounding, plus float32 rounding of the dequantized value.
    EXPECT_LE(max_err, q.step / 2 + 1e-6 * w.abs().max().item<double>()) << bits << " bits";
    const int32_t levels = (1 << (bits - 1)) - 1;
    EXPECT_LE(q.values.abs().max().item<int32_t>(), levels);
    // The largest |w| maps to exactly +-levels.
    EXPECT_EQ(q.values.abs().max().item<int32_t>(), levels);
  }
}

TEST_F(QuantizeTest, ZeroAndEmptyWeightsDoNotDivideByZero) {
  const QuantizedTensor zero = quantize("zero", torch::zeros({3, 4}), 8);
  EXPECT_EQ(zero.step, 1.0);
  EXPECT_EQ(zero.values.abs().sum().item<int64_t>(), 0);
  EXPECT_TRUE(torch::equal(zero.dequantize(), torch::zeros({3, 4})));
  const QuantizedTensor empty = quantize("empty", torch::empty({0, 4}), 8);
  EXPECT_EQ(empty.numel(), 0);
  EXPECT_EQ(empty.step, 1.0);
}

TEST_F(QuantizeTest, BadInputIsAnError) {
  EXPECT_THROW(quantize("w", torch::ones({2, 2}), 1), Error);
  EXPECT_THROW(quantize("w", torch::ones({2, 2}), 17), Error);
  EXPECT_THROW(quantize("w", torch::ones({2, 2}, torch::kInt32), 8), Error);
  EXPECT_THROW(quantize("w", torch::Tensor(), 8), Error);
  EXPECT_THROW(quantize("w", torch::tensor({1.0f, NAN}), 8), Error);
  EXPECT_THROW(quantize("w", torch::tensor({1.0f, INFINITY}), 8), Error);
}

torch::nn::Sequential small_net() {
  return torch::nn::Sequential(torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 4, 3)),
                               torch::nn::BatchNorm2d(4), torch::nn::ReLU(), torch::nn::Flatten(),
                               torch::nn::Linear(4 * 4 * 4, 3));
}

TEST_F(QuantizeTest, QuantizeModuleTakesConvAndLinearWeightsOnly) {
  auto net = small_net();
  const auto weights = quantize_module(*net, 4);
  ASSERT_EQ(weights.size(), 2u);
  EXPECT_EQ(weights[0].name, "0.weight");
  EXPECT_EQ(weights[0].values.sizes(), (std::vector<int64_t>{4, 1, 3, 3}));
  EXPECT_EQ(weights[1].name, "4.weight");
  EXPECT_EQ(weights[1].values.sizes(), (std::vector<int64_t>{3, 64}));
  for (const auto& q : weights) EXPECT_EQ(q.bits, 4);
  EXPECT_THROW(quantize_module(*net, 20), Error);
}

TEST_F(QuantizeTest, LoadIntoModuleWritesDequantizedWeightsAndKeepsTheRest) {
  auto net = small_net();
  const torch::Tensor conv_bias = net->named_parameters()["0.bias"].clone();
  const torch::Tensor bn_weight = net->named_parameters()["1.weight"].clone();
  auto weights = quantize_module(*net, 3);
  weights[1].flip_bit(0, 2);  // a fault, to see that the values really come from `weights`
  load_into_module(weights, *net);
  auto params = net->named_parameters();
  EXPECT_TRUE(torch::equal(params["0.weight"], weights[0].dequantize()));
  EXPECT_TRUE(torch::equal(params["4.weight"], weights[1].dequantize()));
  EXPECT_TRUE(torch::equal(params["0.bias"], conv_bias));
  EXPECT_TRUE(torch::equal(params["1.weight"], bn_weight));
  EXPECT_TRUE(params["0.weight"].requires_grad());
  // The quantized model still trains: gradients flow to the loaded parameters.
  const torch::Tensor y = net->forward(torch::randn({2, 1, 6, 6}));
  y.sum().backward();
  EXPECT_TRUE(params["4.weight"].grad().defined());
  // Quantizing again is idempotent: same integers (values sit exactly on the grid).
  const auto again = quantize_module(*net, 3);
  EXPECT_TRUE(torch::equal(again[0].values, weights[0].values));
}

TEST_F(QuantizeTest, LoadIntoModuleRejectsMismatchesWithoutChangingTheModule) {
  auto net = small_net();
  const torch::Tensor before = net->named_parameters()["0.weight"].clone();
  auto weights = quantize_module(*net, 8);
  weights[0].values.zero_();  // would change the conv weight if it were written

  auto renamed = weights;
  renamed[1].name = "9.weight";
  EXPECT_THROW(load_into_module(renamed, *net), Error);

  auto reshaped = weights;
  reshaped[1].values = torch::zeros({64, 3}, torch::kInt32);
  try {
    load_into_module(reshaped, *net);
    FAIL() << "expected tessera::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("4.weight"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(torch::equal(net->named_parameters()["0.weight"], before));
}

}  // namespace
}  // namespace tessera::quant
