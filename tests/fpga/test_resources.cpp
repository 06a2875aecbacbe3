// The reconstructed resource model: totals against a hand computation, and budget rejection.
#include <gtest/gtest.h>

#include "tessera/fpga/resources.h"
#include "test_support.h"

namespace tessera::fpga {
namespace {

TEST(FpgaResources, DefaultTotalsMatchAHandComputation) {
  const AcceleratorSpec spec;  // xc7z045, 16x16 DSP core, 8x8x256 LUT core
  const ResourceReport r = estimate_resources(spec);
  // DSP core: 256 DSPs; 30 * 256 + 3000 LUTs; ceil(8192*128/36864) + 16 * ceil(2*1024*128/36864)
  EXPECT_EQ(r.dsp_core.dsp, 256);
  EXPECT_EQ(r.dsp_core.lut, 10680);
  EXPECT_EQ(r.dsp_core.bram, 29 + 16 * 8);
  // LUT core: 2 * 64 * 256 + 100 * 64 + 5000 LUTs; 8 * ceil(4096*256/36864) + 8 *
  // ceil(1024*256/36864)
  EXPECT_EQ(r.lut_core.dsp, 0);
  EXPECT_EQ(r.lut_core.lut, 44168);
  EXPECT_EQ(r.lut_core.bram, 8 * 29 + 8 * 8);
  EXPECT_EQ(r.total.dsp, 256);
  EXPECT_EQ(r.total.lut, 10680 + 44168 + 8000);
  EXPECT_EQ(r.total.bram, 157 + 296 + 8);
  EXPECT_TRUE(r.fits);
  EXPECT_NEAR(r.max_utilization, 461.0 / 545.0, 1e-12);
}

TEST(FpgaResources, DesignsOverTheBudgetAreRejectedWithTheResourceNamed) {
  AcceleratorSpec spec;
  spec.lut.dm = spec.lut.dn = 50;  // 50 * 50 * 256 AND/popcount bits: far over 218,600 LUTs
  const ResourceReport r = estimate_resources(spec);
  EXPECT_FALSE(r.fits);
  EXPECT_NE(r.over.find("lut"), std::string::npos) << r.over;
  spec = AcceleratorSpec();
  spec.device = device_preset("xc7z020");  // 220 DSPs < 256
  EXPECT_NE(estimate_resources(spec).over.find("dsp 256 > 220"), std::string::npos);
}

TEST(FpgaResources, DisabledCoresCostNothingAndCoefficientsAreUsed) {
  AcceleratorSpec spec;
  spec.lut.enabled = false;
  EXPECT_EQ(estimate_resources(spec).lut_core.lut, 0);
  spec.resources.lut_per_dsp = 0.0;
  spec.resources.dsp_core_fixed_lut = 0.0;
  EXPECT_EQ(estimate_resources(spec).dsp_core.lut, 0);
  EXPECT_EQ(bram_blocks(3, 1024, 36, 36864), 3);
  EXPECT_EQ(bram_blocks(1, 1025, 36, 36864), 2);
}

}  // namespace
}  // namespace tessera::fpga
