// Hardware spec: defaults, JSON round trip, unit conversion and every kind of bad field.
#include <gtest/gtest.h>

#include "tessera/core/error.h"
#include "tessera/reram/spec.h"
#include "test_support.h"

namespace tessera::reram {
namespace {

using nlohmann::json;

TEST(ReramSpec, DefaultsMatchIsaacAndNeuroSim) {
  const HardwareSpec spec = HardwareSpec::from_json(json::object());
  EXPECT_EQ(spec.crossbar_rows, 128);
  EXPECT_EQ(spec.crossbar_cols, 128);
  EXPECT_EQ(spec.cell_bits, 1);
  EXPECT_EQ(spec.weight_bits, 8);
  EXPECT_EQ(spec.slices_per_weight(), 7);  // 7 magnitude bits on a differential pair
  EXPECT_EQ(spec.arrays(), 2);
  EXPECT_EQ(spec.input_cycles(), 8);
}

TEST(ReramSpec, JsonRoundTripKeepsEveryFieldAndConvertsUnits) {
  const json j = json::parse(R"({"crossbar_rows": 64, "crossbar_cols": 256, "cell_bits": 2,
    "weight_bits": 6, "weight_encoding": "twos_complement", "input_bits": 4, "dac_bits": 2,
    "adc_bits": 5, "columns_per_adc": 16, "pack_groups": false,
    "components": {"crossbar": {"energy": {"value": 2, "unit": "nJ"},
                                "latency": {"value": 100, "unit": "ns"}},
                   "adc": {"area": {"value": 0.5, "unit": "mm^2"},
                           "latency": {"value": 500, "unit": "ps"}}}})");
  const HardwareSpec spec = HardwareSpec::from_json(j);
  EXPECT_EQ(spec.slices_per_weight(), 3);  // ceil(6 / 2)
  EXPECT_EQ(spec.arrays(), 1);
  EXPECT_EQ(spec.input_cycles(), 2);
  EXPECT_DOUBLE_EQ(*spec.crossbar.energy_pj, 2000.0);
  EXPECT_DOUBLE_EQ(*spec.adc.area_um2, 5e5);
  EXPECT_DOUBLE_EQ(*spec.adc.latency_ns, 0.5);
  EXPECT_FALSE(spec.shift_add.energy_pj.has_value());
  const HardwareSpec again = HardwareSpec::from_json(spec.to_json());
  EXPECT_EQ(again.to_json(), spec.to_json());
}

TEST(ReramSpec, BadFieldsGiveErrorsNamingTheValue) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {R"({"crossbar_rows": 0})", "crossbar_rows = 0"},
      {R"({"crossbar_cols": -128})", "crossbar_cols = -128"},
      {R"({"cell_bits": 3})", "cell_bits = 3"},
      {R"({"cell_bits": 2, "weight_bits": 1})", "cell_bits = 2 exceeds weight_bits = 1"},
      {R"({"weight_bits": 17})", "weight_bits = 17"},
      {R"({"crossbar_row": 128})", "unknown field 'crossbar_row'"},
      {R"({"crossbar_rows": 12.5})", "must be an integer"},
      {R"({"dac_bits": 9})", "dac_bits = 9"},
      {R"({"weight_encoding": "offset"})", "'offset'"},
      {R"({"columns_per_adc": 0})", "columns_per_adc = 0"},
      {R"({"components": {"dac": {}}})", "unknown field 'dac'"},
      {R"({"components": {"adc": {"energy": {"value": 1, "unit": "J"}}}})", "unit 'J'"},
      {R"({"components": {"adc": {"energy": {"value": -1, "unit": "pJ"}}}})", "-1"},
      {R"({"components": {"adc": {"energy": {"value": 1}}}})", "needs a 'unit'"},
      {R"({"pack_groups": 1})", "pack_groups"},
  };
  for (const auto& [text, expected] : cases) {
    try {
      HardwareSpec::from_json(json::parse(text));
      ADD_FAILURE() << "no error for " << text;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(expected), std::string::npos)
          << text << " -> " << e.what();
    }
  }
}

TEST(ReramSpec, LoadReportsPathAndBadJson) {
  testing::TempDir dir;
  testing::write_bytes(dir.file("bad.json"), "{\"crossbar_rows\": ");
  EXPECT_THROW(load_spec(dir.file("bad.json")), Error);
  EXPECT_THROW(load_spec(dir.file("missing.json")), Error);
  testing::write_bytes(dir.file("ok.json"), "{\"crossbar_rows\": 256}");
  EXPECT_EQ(load_spec(dir.file("ok.json")).crossbar_rows, 256);
}

}  // namespace
}  // namespace tessera::reram
