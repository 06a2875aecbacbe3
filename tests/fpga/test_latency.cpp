// The section 1.3 latency model against hand-computed values, the ResNet-18 GEMMs of the authors'
// code, the balanced split, and the timing of one ResNet-18 evaluation's shape.
#include <gtest/gtest.h>

#include <cmath>

#include "tessera/fpga/latency.h"
#include "tessera/fpga/workloads.h"
#include "test_support.h"

namespace tessera::fpga {
namespace {

TEST(FpgaLatency, ResNet18GemmsAreTheAuthorsArrays) {
  const std::vector<GemmShape> g = gemm_shapes(resnet18_imagenet());
  const std::vector<int64_t> m = {12544, 3136, 3136, 3136, 3136, 784, 784, 784, 784, 784, 196,
                                  196,   196,  196,  196,  49,   49,  49,  49,  49,  1};
  const std::vector<int64_t> k = {147,  576, 576,  576,  576,  576,  1152, 64,   1152, 1152, 1152,
                                  2304, 128, 2304, 2304, 2304, 4608, 256,  4608, 4608, 512};
  const std::vector<int64_t> n = {64,  64,  64,  64,  64,  128, 128, 128, 128, 128, 256,
                                  256, 256, 256, 256, 512, 512, 512, 512, 512, 1000};
  ASSERT_EQ(g.size(), 21u);
  for (size_t i = 0; i < g.size(); ++i) {
    EXPECT_EQ(g[i].m, m[i]) << g[i].name;
    EXPECT_EQ(g[i].k, k[i]) << g[i].name;
    EXPECT_EQ(g[i].n, n[i]) << g[i].name;
    EXPECT_EQ(g[i].edge, i == 0 || i == 20) << g[i].name;
  }
}

TEST(FpgaLatency, LutCoreMatchesAHandComputation) {
  // M 10, K 100; Dm = Dn = 2, Dk 64, Bm 8; 4 columns at a = 2, w = 3:
  // tm 5, tn 2, tk 2, regions 2, fetches 3, last 1, iters 10; lf 54, rf 58, ex 68;
  // delta = 10 + (2 - 3)(68 - 54) = -4; recv = ((2-3)(2-1)3 + 1) 68 + 3 delta = -148;
  // cycles = 238 + 54 * 10 / 2 + 58 * 3 * 2 - 148 = 708.
  const GemmShape g{"l", 10, 100, 8, false};
  LutCoreConfig core;
  core.dm = core.dn = 2;
  core.dk = 64;
  core.bm = 8;
  EXPECT_DOUBLE_EQ(lut_core_cycles(g, 4, LayerPrecision{3, 2}, core), 708.0);
  EXPECT_DOUBLE_EQ(lut_core_cycles(g, 0, LayerPrecision{3, 2}, core), 0.0);
  core.bm = 3;  // cannot hold one K tile of 2 bits x 2 tiles
  EXPECT_TRUE(std::isinf(lut_core_cycles(g, 4, LayerPrecision{3, 2}, core)));
}

TEST(FpgaLatency, DspCoreMatchesAHandComputation) {
  // M 3, K 100, 20 columns, 16x16 packed (K lanes 32): tk 4, tn 2; Lmem 8 -> Rl 2, Rmem 8 -> Rr 1;
  // TL 1, lastL 1, TR 2, lastR 0; readR 104, readL 97, sync 0; ex 22; LiteL 209, LiteR 193,
  // LiteLR 145; cycles = 1 * 2 * (22 + 104 + 97) + 2 * 209 + 193 + 145 + 32 = 1234.
  const GemmShape g{"l", 3, 100, 20, false};
  DspCoreConfig core;
  core.lmem = 8;
  core.rmem = 8;
  EXPECT_DOUBLE_EQ(dsp_core_cycles(g, 20, core, false), 1234.0);
  // 8-bit mode: K lanes 16, tk 7 -> Rl 1, Rr 0: the weight buffer cannot hold a tile.
  EXPECT_TRUE(std::isinf(dsp_core_cycles(g, 20, core, true)));
}

TEST(FpgaLatency, PackingHalvesTheKTilesOfMiddleLayers) {
  const std::vector<GemmShape> g = gemm_shapes(resnet18_imagenet());
  DspCoreConfig packed, eight;
  eight.pack_middle = false;
  EXPECT_TRUE(dsp_eight_bit(g[0], packed));
  EXPECT_FALSE(dsp_eight_bit(g[5], packed));
  EXPECT_LT(dsp_core_cycles(g[5], 128, packed, false),
            0.6 * dsp_core_cycles(g[5], 128, eight, true));
}

TEST(FpgaLatency, LayerLatencyIsTheSlowerCore) {
  const std::vector<GemmShape> g = gemm_shapes(resnet18_imagenet());
  const DspCoreConfig dsp;
  const LutCoreConfig lut;
  const LayerLatency l = layer_latency(g[6], 0.3, LayerPrecision{4, 3}, dsp, lut);
  EXPECT_EQ(l.lut_cols, 38);  // round(128 * 0.3) = round(38.4)
  EXPECT_EQ(l.dsp_cols, 90);  // round(128 * 0.7) = round(89.6)
  EXPECT_DOUBLE_EQ(l.lut_cycles, lut_core_cycles(g[6], 38, LayerPrecision{4, 3}, lut));
  EXPECT_DOUBLE_EQ(l.cycles(), std::max(l.lut_cycles, l.dsp_cycles));
  // Python's round: half to even.
  EXPECT_EQ(lut_columns(5, 0.5), 2);
  EXPECT_EQ(lut_columns(7, 0.5), 4);
  EXPECT_THROW(layer_latency(g[6], 1.5, LayerPrecision{4, 3}, dsp, lut), Error);
}

TEST(FpgaLatency, BalancedSplitEqualisesTheCoresWithinOneStep) {
  const std::vector<GemmShape> g = gemm_shapes(resnet18_imagenet());
  const DspCoreConfig dsp;
  const LutCoreConfig lut;
  for (size_t i = 0; i < g.size(); ++i) {
    for (const LayerPrecision p :
         {LayerPrecision{2, 2}, LayerPrecision{4, 3}, LayerPrecision{8, 8}}) {
      const double r = balanced_split(g[i], p, dsp, lut);
      const int j = static_cast<int>(std::lround(r * 100));
      if (j == 100) continue;  // the LUT core never becomes the slower one
      // The sign of L_dsp - L_lut changes between j - 1 and j + 1.
      const auto gap = [&](int s) {
        const LayerLatency l = layer_latency(g[i], std::clamp(s, 0, 100) / 100.0, p, dsp, lut);
        return l.dsp_cycles - l.lut_cycles;
      };
      EXPECT_TRUE(gap(j - 1) >= 0 || gap(j) >= 0) << g[i].name;
      EXPECT_LT(gap(j + 1), 0) << g[i].name << " j " << j;
    }
  }
}

TEST(FpgaLatency, NetworkLatencyIsTheSumOverLayersAtTheClock) {
  const std::vector<GemmShape> g = gemm_shapes(resnet18_imagenet());
  AcceleratorSpec spec;
  spec.device.clock_mhz = 200.0;
  const NetworkLatency n = network_latency(g, std::vector<LayerPrecision>(g.size(), {4, 4}), spec);
  double sum = 0.0;
  for (const auto& l : n.layers) sum += l.cycles();
  EXPECT_DOUBLE_EQ(n.cycles, sum);
  EXPECT_DOUBLE_EQ(n.ms, sum / 2e5);
  EXPECT_TRUE(n.feasible());
  // Lower LUT precision never makes the network slower.
  const NetworkLatency low =
      network_latency(g, std::vector<LayerPrecision>(g.size(), {2, 2}), spec);
  EXPECT_LT(low.cycles, n.cycles);
  EXPECT_THROW(network_latency(g, std::vector<LayerPrecision>(3, {4, 4}), spec), Error);
}

}  // namespace
}  // namespace tessera::fpga
