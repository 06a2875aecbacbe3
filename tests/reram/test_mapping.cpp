// Crossbar counts of small layers against hand-computed values, for each mapping, cell width and
// encoding; zero crossbars, squeeze-out packing and bad layers.
#include <gtest/gtest.h>

#include "layers.h"
#include "tessera/core/error.h"
#include "tessera/reram/mapping.h"
#include "test_support.h"

namespace tessera::reram {
namespace {

using testing_layers::depthwise;
using testing_layers::linear;

HardwareSpec spec_with(int cell_bits, WeightEncoding encoding, int64_t size = 128,
                       int weight_bits = 8) {
  HardwareSpec s;
  s.crossbar_rows = s.crossbar_cols = size;
  s.cell_bits = cell_bits;
  s.weight_bits = weight_bits;
  s.weight_encoding = encoding;
  s.columns_per_adc = std::min<int64_t>(s.columns_per_adc, size);
  return s;
}

const MappingOptions kBaseline{false, false};
const MappingOptions kSplice{true, false};
const MappingOptions kSqueeze{false, true};
const MappingOptions kSme{true, true};

TEST(ReramMapping, ShapeOnlyCountsMatchHandComputedFormulas) {
  // Linear 256 -> 64 on 128x128. Baseline: arrays * ceil(R/S) * ceil(C*slices/S);
  // splice: arrays * slices * ceil(R/S) * ceil(C/S).
  struct Case {
    int cell_bits;
    WeightEncoding encoding;
    int64_t baseline, spliced;
  };
  const Case cases[] = {
      {1, WeightEncoding::Differential, 2 * 2 * 4, 2 * 7 * 2 * 1},  // 7 slices: ceil(448/128)=4
      {2, WeightEncoding::Differential, 2 * 2 * 2, 2 * 4 * 2 * 1},  // 4 slices: ceil(256/128)=2
      {1, WeightEncoding::TwosComplement, 1 * 2 * 4, 1 * 8 * 2 * 1},
      {2, WeightEncoding::TwosComplement, 1 * 2 * 2, 1 * 4 * 2 * 1},
  };
  for (const Case& c : cases) {
    const HardwareSpec spec = spec_with(c.cell_bits, c.encoding);
    EXPECT_EQ(map_layer(linear(256, 64), nullptr, spec, kBaseline).crossbars, c.baseline)
        << c.cell_bits << " " << weight_encoding_name(c.encoding);
    EXPECT_EQ(map_layer(linear(256, 64), nullptr, spec, kSplice).crossbars, c.spliced)
        << c.cell_bits << " " << weight_encoding_name(c.encoding);
  }
}

TEST(ReramMapping, DepthwiseGroupsPackBlockDiagonally) {
  // 16 groups of 9 rows x 1 column. Baseline (7 slices): min(128/9, 128/7) = 14 groups per
  // crossbar -> 2 arrays * ceil(16/14) = 4. Spliced: 14 matrices of 1 column -> 14 * 2 = 28.
  HardwareSpec spec = spec_with(1, WeightEncoding::Differential);
  EXPECT_EQ(map_layer(depthwise(16), nullptr, spec, kBaseline).crossbars, 4);
  EXPECT_EQ(map_layer(depthwise(16), nullptr, spec, kSplice).crossbars, 28);
  spec.pack_groups = false;  // one crossbar per group and matrix
  EXPECT_EQ(map_layer(depthwise(16), nullptr, spec, kBaseline).crossbars, 32);
  EXPECT_EQ(map_layer(depthwise(16), nullptr, spec, kSplice).crossbars, 224);
}

// The 4x2 example worked by hand in docs/systems/reram.md: 4x4 crossbars, 4-bit weights
// (3 magnitude bits), outputs o0 = [3, 0, -1, 0], o1 = [0, 0, 2, 0] over rows r0..r3.
quant::QuantizedTensor tiny_weights() {
  quant::QuantizedTensor q;
  q.name = "fc.weight";
  q.bits = 4;
  q.values = torch::tensor({3, 0, -1, 0, 0, 0, 2, 0}, torch::kInt32).view({2, 4});
  return q;
}

TEST(ReramMapping, TinyLayerOneBitCellsByHand) {
  const HardwareSpec spec = spec_with(1, WeightEncoding::Differential, 4, 4);
  const quant::QuantizedTensor q = tiny_weights();
  const workload::Layer layer = linear(4, 2);
  // Baseline: per array ceil(4/4) * ceil(2*3/4) = 2 -> 4; the negative array's second column
  // block (o1's slices 1, 2) is all zero.
  LayerStats base = map_layer(layer, &q, spec, kBaseline);
  EXPECT_EQ(base.crossbars, 4);
  EXPECT_EQ(base.zero_crossbars, 1);
  EXPECT_EQ(base.nonzero_cells, 4);  // 3 -> bits 0,1; 2 -> bit 1; -1 -> bit 0
  EXPECT_EQ(base.mapped_cells, 2 * 4 * 2 * 3);
  // Squeeze-out alone: positive array keeps columns (o0,s0) (o0,s1) (o1,s1) and rows r0, r2:
  // a 2x3 block; negative array keeps (o0,s0) and row r2: 1x1. Both fit one crossbar.
  LayerStats squeezed = map_layer(layer, &q, spec, kSqueeze);
  EXPECT_EQ(squeezed.crossbars, 1);
  EXPECT_EQ(squeezed.crossbars_before_squeeze, 4);
  EXPECT_EQ(squeezed.zero_crossbars, 1);
  EXPECT_EQ(squeezed.mapped_cells, 2 * 3 + 1);
  EXPECT_EQ(squeezed.index_entries, 3);
  // Splicing: 2 arrays * 3 slices = 6 crossbars; zero planes: pos s2, neg s1, neg s2.
  LayerStats spliced = map_layer(layer, &q, spec, kSplice);
  EXPECT_EQ(spliced.crossbars, 6);
  EXPECT_EQ(spliced.zero_crossbars, 3);
  // SME: blocks 1x1 (pos s0), 2x2 (pos s1), 1x1 (neg s0) -> 4 rows, 4 columns: one crossbar.
  LayerStats sme = map_layer(layer, &q, spec, kSme);
  EXPECT_EQ(sme.crossbars, 1);
  EXPECT_EQ(sme.mapped_cells, 1 + 4 + 1);
  EXPECT_EQ(sme.nonzero_cells, 4);
}

TEST(ReramMapping, TinyLayerTwoBitCellsByHand) {
  // 3 magnitude bits in 2-bit cells: slice 0 = bits 0-1, slice 1 = bit 2.
  const HardwareSpec spec = spec_with(2, WeightEncoding::Differential, 4, 4);
  const quant::QuantizedTensor q = tiny_weights();
  const workload::Layer layer = linear(4, 2);
  LayerStats base = map_layer(layer, &q, spec, kBaseline);
  EXPECT_EQ(base.crossbars, 2);  // per array ceil(4/4) * ceil(2*2/4) = 1
  EXPECT_EQ(base.zero_crossbars, 0);
  EXPECT_EQ(base.nonzero_cells, 3);  // 3, 2, 1 each fit slice 0
  LayerStats spliced = map_layer(layer, &q, spec, kSplice);
  EXPECT_EQ(spliced.crossbars, 4);
  EXPECT_EQ(spliced.zero_crossbars, 2);  // slice 1 of both arrays
  // SME: pos slice 0 keeps o0, o1 x r0, r2 (2x2); neg slice 0 keeps o0 x r2 (1x1).
  LayerStats sme = map_layer(layer, &q, spec, kSme);
  EXPECT_EQ(sme.crossbars, 1);
  EXPECT_EQ(sme.mapped_cells, 5);
}

TEST(ReramMapping, TwosComplementNegativeValuesFillTheHighSlices) {
  // -1 in 4-bit two's complement is 1111: all four slices of o0 are non-zero in row r2.
  const HardwareSpec spec = spec_with(1, WeightEncoding::TwosComplement, 4, 4);
  const quant::QuantizedTensor q = tiny_weights();
  LayerStats spliced = map_layer(linear(4, 2), &q, spec, kSplice);
  EXPECT_EQ(spliced.crossbars, 4);  // 4 slices * ceil(4/4) * ceil(2/4)
  EXPECT_EQ(spliced.zero_crossbars, 0);
  EXPECT_EQ(spliced.nonzero_cells, 2 + 1 + 4);
}

TEST(ReramMapping, CostsFollowTheSpecFigures) {
  HardwareSpec spec = spec_with(1, WeightEncoding::Differential, 4, 4);
  spec.input_bits = 4;
  spec.columns_per_adc = 2;
  spec.crossbar.energy_pj = 1.0;
  spec.adc.energy_pj = 0.5;
  spec.crossbar.latency_ns = 10.0;
  spec.adc.latency_ns = 1.0;
  const quant::QuantizedTensor q = tiny_weights();
  workload::Layer layer = linear(4, 2);
  layer.out_h = 3;  // applied to 3 rows (tokens)
  LayerStats st = map_layer(layer, &q, spec, kBaseline);
  // 4 crossbars, 3 positions, 4 input cycles -> 48 reads; columns: per array 4 + 2 = 6 -> 12
  // bitlines -> 12 * 12 = 144 conversions.
  EXPECT_EQ(st.crossbar_reads, 48);
  EXPECT_EQ(st.adc_conversions, 144);
  EXPECT_DOUBLE_EQ(*st.energy_pj, 48 * 1.0 + 144 * 0.5);
  // Widest crossbar has 4 columns, 2 per ADC -> 2 conversions in series per cycle.
  EXPECT_DOUBLE_EQ(*st.latency_ns, 3 * 4 * (10.0 + 2 * 1.0));
  EXPECT_FALSE(st.area_um2.has_value());
}

TEST(ReramMapping, BadLayersAndWeightsAreErrors) {
  const HardwareSpec spec = spec_with(1, WeightEncoding::Differential, 4, 4);
  workload::Layer pool = linear(4, 4);
  pool.kind = workload::OpKind::Pool;
  EXPECT_THROW(map_layer(pool, nullptr, spec, kBaseline), Error);
  workload::Layer bad = depthwise(16);
  bad.out_h = 5;  // does not follow from 8x8, k3, s1, p1
  EXPECT_THROW(map_layer(bad, nullptr, spec, kBaseline), Error);
  bad = depthwise(16);
  bad.groups = 3;  // 16 channels not divisible by 3
  EXPECT_THROW(map_layer(bad, nullptr, spec, kBaseline), Error);
  // Squeeze-out needs values; shapes must match; values must fit the encoding.
  EXPECT_THROW(map_layer(linear(4, 2), nullptr, spec, kSme), Error);
  quant::QuantizedTensor q = tiny_weights();
  EXPECT_THROW(map_layer(linear(4, 3), &q, spec, kBaseline), Error);
  q.values[0][0] = -8;  // |-8| needs 4 magnitude bits
  EXPECT_THROW(map_layer(linear(4, 2), &q, spec, kBaseline), Error);
  q = tiny_weights();
  q.bits = 8;
  EXPECT_THROW(map_layer(linear(4, 2), &q, spec, kBaseline), Error);
}

}  // namespace
}  // namespace tessera::reram
