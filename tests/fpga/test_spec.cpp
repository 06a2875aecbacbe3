// Accelerator spec: presets, JSON round trip, and every kind of bad field (zero-sized arrays,
// bits outside 1-8, unknown fields, a workload layer with a zero dimension).
#include <gtest/gtest.h>

#include "tessera/core/error.h"
#include "tessera/fpga/latency.h"
#include "tessera/fpga/spec.h"
#include "tessera/fpga/workloads.h"
#include "test_support.h"

namespace tessera::fpga {
namespace {

using nlohmann::json;
using testing::error_of;

TEST(FpgaSpec, PresetsCarryTheBoardsBudgets) {
  EXPECT_EQ(device_preset("xc7z020").dsp, 220);
  EXPECT_EQ(device_preset("xc7z020").lut, 53200);
  EXPECT_EQ(device_preset("xc7z045").dsp, 900);
  EXPECT_EQ(device_preset("zu9eg").dsp, 2520);
  EXPECT_NE(error_of([] { device_preset("xc9000"); }).find("xc7z020"), std::string::npos);
}

TEST(FpgaSpec, JsonRoundTripKeepsEveryField) {
  const json j = json::parse(R"({"device": {"preset": "xc7z020", "clock_mhz": 150},
    "dsp_core": {"rows": 8, "cols": 12, "pack": 2, "lmem": 4096, "rmem": 2048},
    "lut_core": {"dm": 4, "dn": 6, "dk": 128, "bm": 2048},
    "resource_model": {"lut_per_bit": 1.5, "shell_bram": 4}})");
  const AcceleratorSpec spec = AcceleratorSpec::from_json(j);
  EXPECT_EQ(spec.device.dsp, 220);
  EXPECT_DOUBLE_EQ(spec.device.clock_mhz, 150.0);
  EXPECT_EQ(spec.dsp.cols, 12);
  EXPECT_EQ(spec.lut.dk, 128);
  EXPECT_DOUBLE_EQ(spec.resources.lut_per_bit, 1.5);
  const AcceleratorSpec again = AcceleratorSpec::from_json(spec.to_json());
  EXPECT_EQ(again.to_json(), spec.to_json());
  EXPECT_EQ(AcceleratorSpec::from_json(json::parse(R"({"device": "zu2eg"})")).device.lut, 47232);
}

TEST(FpgaSpec, ZeroSizedArraysAreClearErrors) {
  for (const char* bad :
       {R"({"dsp_core": {"rows": 0}})", R"({"dsp_core": {"cols": 0}})",
        R"({"lut_core": {"dm": 0}})", R"({"lut_core": {"dn": 0}})", R"({"lut_core": {"dk": 0}})",
        R"({"lut_core": {"bm": 0}})", R"({"device": {"dsp": 0}})"}) {
    const std::string message = error_of([&] { AcceleratorSpec::from_json(json::parse(bad)); });
    EXPECT_NE(message.find("must be in [1, 2^31]"), std::string::npos) << bad << ": " << message;
  }
}

TEST(FpgaSpec, BitsOutsideOneToEightAreClearErrors) {
  EXPECT_NE(error_of([] {
              LayerPrecision{0, 4}.validate("layer x");
            }).find("weight bits 0"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              LayerPrecision{4, 9}.validate("layer x");
            }).find("activation bits 9"),
            std::string::npos);
  EXPECT_NO_THROW((LayerPrecision{1, 8}.validate("layer x")));
  EXPECT_NE(error_of([] {
              AcceleratorSpec::from_json(json::parse(R"({"dsp_core": {"middle_bits": 12}})"));
            }).find("middle_bits = 12"),
            std::string::npos);
}

TEST(FpgaSpec, UnknownFieldsAndWrongTypesAreRejected) {
  EXPECT_NE(error_of([] {
              AcceleratorSpec::from_json(json::parse(R"({"lut": {}})"));
            }).find("unknown field 'lut'"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              AcceleratorSpec::from_json(json::parse(R"({"lut_core": {"dm": "eight"}})"));
            }).find("lut_core.dm must be an integer"),
            std::string::npos);
  EXPECT_THROW(
      AcceleratorSpec::from_json(json::parse(R"({"resource_model": {"lut_per_bit": -1}})")), Error);
}

TEST(FpgaSpec, WorkloadLayerWithAZeroDimensionIsAClearError) {
  workload::Workload w = resnet18_imagenet();
  w.layers[3].out_channels = 0;
  const std::string message = error_of([&] { gemm_shapes(w); });
  EXPECT_NE(message.find("layer1.1.conv1"), std::string::npos) << message;
}

TEST(FpgaSpec, LoadSpecNamesTheFileOnBadJson) {
  testing::TempDir dir;
  testing::write_bytes(dir.file("bad.json"), "{not json");
  EXPECT_NE(error_of([&] { load_spec(dir.file("bad.json")); }).find("bad.json"), std::string::npos);
}

}  // namespace
}  // namespace tessera::fpga
