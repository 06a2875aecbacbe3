// Bit-sparse quantization against hand-computed projection tables and naive checks; quantization
// round trips.
#include <gtest/gtest.h>

#include <set>

#include "tessera/core/error.h"
#include "tessera/reram/bit_sparse.h"
#include "test_support.h"

namespace tessera::reram {
namespace {

class ReramBitSparse : public testing::SeededTest {};

TEST_F(ReramBitSparse, ProjectionTableMatchesHandComputedValues) {
  // 3 magnitude bits, one term, all positions: representable {0, 1, 2, 4}; ties go down.
  EXPECT_EQ(projection_table(3, 0b111, 1), (std::vector<int32_t>{0, 1, 2, 2, 4, 4, 4, 4}));
  // Two terms from positions {0, 2}: {0, 1, 4, 5}.
  EXPECT_EQ(projection_table(3, 0b101, 2), (std::vector<int32_t>{0, 1, 1, 4, 4, 5, 5, 5}));
  // All terms, all positions: the identity.
  EXPECT_EQ(projection_table(3, 0b111, 3), (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7}));
}

TEST_F(ReramBitSparse, UniformQuantizationRoundTrips) {
  const torch::Tensor w = torch::randn({16, 8, 3, 3});
  const quant::QuantizedTensor q = quant::quantize("w", w, 8);
  const quant::QuantizedTensor again = quant::quantize("w", q.dequantize(), 8);
  EXPECT_TRUE(torch::equal(q.values, again.values));
  EXPECT_NEAR(again.step, q.step, 1e-9 * q.step);
  for (int32_t v = -128; v <= 127; ++v) {
    EXPECT_EQ(quant::from_twos_complement(quant::to_twos_complement(v, 8), 8), v);
  }
}

TEST_F(ReramBitSparse, ResultIsAFixedPointAndObeysTermsAndPositions) {
  const torch::Tensor w = torch::randn({32, 4, 3, 3}) * torch::rand({1, 4, 3, 3});
  for (PositionScope scope : {PositionScope::Layer, PositionScope::Row}) {
    BitSparseOptions opt;
    opt.max_terms = 2;
    opt.n_positions = 3;
    opt.scope = scope;
    const quant::QuantizedTensor q = bit_sparse_quantize("w", w, 8, opt);
    const quant::QuantizedTensor twice = bit_sparse_quantize(q, opt);
    EXPECT_TRUE(torch::equal(q.values, twice.values)) << position_scope_name(scope);
    const torch::Tensor v = q.values.reshape({32, 36});
    const int64_t n_scopes = scope == PositionScope::Row ? 36 : 1;
    for (int64_t s = 0; s < n_scopes; ++s) {
      uint32_t positions = 0;
      for (int64_t o = 0; o < 32; ++o) {
        for (int64_t r = 0; r < 36; ++r) {
          if (scope == PositionScope::Row && r != s) continue;
          const uint32_t m = static_cast<uint32_t>(std::abs(v[o][r].item<int32_t>()));
          EXPECT_LE(__builtin_popcount(m), 2);
          positions |= m;
        }
      }
      EXPECT_LE(__builtin_popcount(positions), 3) << position_scope_name(scope) << " scope " << s;
    }
  }
}

TEST_F(ReramBitSparse, ChoosesTheLeastSquaredErrorPositions) {
  // Every magnitude is 12 = 8 + 4: with 2 positions and 2 terms the exact answer is {2, 3}.
  const torch::Tensor values = torch::full({4, 5}, 12, torch::kInt32);
  quant::QuantizedTensor q{"w", values.clone(), 0.1, 8};
  q.values[1][2] = -12;
  BitSparseOptions opt;
  opt.max_terms = 2;
  opt.n_positions = 2;
  opt.scope = PositionScope::Layer;
  const quant::QuantizedTensor out = bit_sparse_quantize(q, opt);
  EXPECT_TRUE(torch::equal(out.values, q.values));
  // One position, one term: 12 goes to 8 (error 16) rather than 16 (also 16): ties go down.
  opt.n_positions = 1;
  opt.max_terms = 1;
  const quant::QuantizedTensor one = bit_sparse_quantize(q, opt);
  EXPECT_EQ(one.values[0][0].item<int32_t>(), 8);
  EXPECT_EQ(one.values[1][2].item<int32_t>(), -8);
}

TEST_F(ReramBitSparse, RaisesBitSparsity) {
  const torch::Tensor w = torch::randn({64, 64});
  const quant::QuantizedTensor uniform = quant::quantize("w", w, 8);
  BitSparseOptions opt;
  const quant::QuantizedTensor sparse = bit_sparse_quantize(uniform, opt);
  EXPECT_GT(magnitude_bit_sparsity(sparse), magnitude_bit_sparsity(uniform) + 0.1);
  // The per-row choice can be no worse than any fixed set of 3 positions (naive reference).
  auto squared_error = [&](const torch::Tensor& a) {
    return (a - uniform.values).to(torch::kFloat64).pow(2).sum().item<double>();
  };
  const double chosen = squared_error(sparse.values);
  for (uint32_t mask : {0b1110000u, 0b0111000u, 0b0011100u, 0b1010100u}) {
    const std::vector<int32_t> table = projection_table(7, mask, 2);
    torch::Tensor fixed = uniform.values.clone();
    for (int64_t i = 0; i < fixed.numel(); ++i) {
      const int32_t v = fixed.view({-1})[i].item<int32_t>();
      fixed.view({-1})[i] = v < 0 ? -table[-v] : table[v];
    }
    EXPECT_LE(chosen, squared_error(fixed)) << "mask " << mask;
  }
}

TEST_F(ReramBitSparse, BadOptionsAndGroupsAreErrors) {
  const quant::QuantizedTensor q = quant::quantize("w", torch::randn({6, 4}), 8);
  BitSparseOptions opt;
  opt.max_terms = 0;
  EXPECT_THROW(bit_sparse_quantize(q, opt), Error);
  opt.max_terms = 2;
  opt.n_positions = 8;
  EXPECT_THROW(bit_sparse_quantize(q, opt), Error);
  opt.n_positions = 3;
  EXPECT_THROW(bit_sparse_quantize(q, opt, 4), Error);  // 6 outputs, 4 groups
  EXPECT_THROW(parse_position_scope("column"), Error);
}

}  // namespace
}  // namespace tessera::reram
