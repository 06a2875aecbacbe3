// Hardware spec parsing and validation: every field checked, unknown fields rejected, units
// converted to pJ / ns / um^2.
#include "tessera/reram/spec.h"

#include <cmath>
#include <set>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/json.h"

namespace tessera::reram {

std::string weight_encoding_name(WeightEncoding encoding) {
  return encoding == WeightEncoding::Differential ? "differential" : "twos_complement";
}

WeightEncoding parse_weight_encoding(const std::string& name) {
  if (name == "differential") return WeightEncoding::Differential;
  if (name == "twos_complement") return WeightEncoding::TwosComplement;
  TESSERA_CHECK(false, "spec: weight_encoding '{}' is not one of: differential, twos_complement",
                name);
  return WeightEncoding::Differential;
}

int HardwareSpec::stored_bits() const {
  return weight_encoding == WeightEncoding::Differential ? weight_bits - 1 : weight_bits;
}

int HardwareSpec::slices_per_weight() const { return (stored_bits() + cell_bits - 1) / cell_bits; }

int HardwareSpec::arrays() const { return weight_encoding == WeightEncoding::Differential ? 2 : 1; }

int HardwareSpec::input_cycles() const { return (input_bits + dac_bits - 1) / dac_bits; }

void HardwareSpec::validate() const {
  TESSERA_CHECK(crossbar_rows >= 1 && crossbar_rows <= 65536,
                "spec: crossbar_rows = {} must be in [1, 65536]", crossbar_rows);
  TESSERA_CHECK(crossbar_cols >= 1 && crossbar_cols <= 65536,
                "spec: crossbar_cols = {} must be in [1, 65536]", crossbar_cols);
  // Checked first so that e.g. cell_bits 2 with weight_bits 1 names the actual conflict.
  TESSERA_CHECK(cell_bits <= weight_bits, "spec: cell_bits = {} exceeds weight_bits = {}",
                cell_bits, weight_bits);
  TESSERA_CHECK(cell_bits == 1 || cell_bits == 2, "spec: cell_bits = {} must be 1 or 2", cell_bits);
  TESSERA_CHECK(weight_bits >= 2 && weight_bits <= 16, "spec: weight_bits = {} must be in [2, 16]",
                weight_bits);
  TESSERA_CHECK(input_bits >= 1 && input_bits <= 32, "spec: input_bits = {} must be in [1, 32]",
                input_bits);
  TESSERA_CHECK(dac_bits >= 1 && dac_bits <= input_bits,
                "spec: dac_bits = {} must be in [1, input_bits = {}]", dac_bits, input_bits);
  TESSERA_CHECK(adc_bits >= 1 && adc_bits <= 16, "spec: adc_bits = {} must be in [1, 16]",
                adc_bits);
  TESSERA_CHECK(columns_per_adc >= 1 && columns_per_adc <= crossbar_cols,
                "spec: columns_per_adc = {} must be in [1, crossbar_cols = {}]", columns_per_adc,
                crossbar_cols);
  for (const ComponentCost* cost : {&crossbar, &adc, &shift_add}) {
    for (const std::optional<double>& v : {cost->energy_pj, cost->latency_ns, cost->area_um2}) {
      TESSERA_CHECK(!v || (*v >= 0.0 && std::isfinite(*v)),
                    "spec: component figure {} must be finite and >= 0", v ? *v : 0.0);
    }
  }
}

namespace {

// Canonical-unit factors. Energy -> pJ, latency -> ns, area -> um^2.
double unit_factor(const std::string& quantity, const std::string& unit, const std::string& where) {
  if (quantity == "energy") {
    if (unit == "fJ") return 1e-3;
    if (unit == "pJ") return 1.0;
    if (unit == "nJ") return 1e3;
    if (unit == "uJ") return 1e6;
    TESSERA_CHECK(false, "spec: {} unit '{}' is not one of fJ, pJ, nJ, uJ", where, unit);
  } else if (quantity == "latency") {
    if (unit == "ps") return 1e-3;
    if (unit == "ns") return 1.0;
    if (unit == "us") return 1e3;
    if (unit == "ms") return 1e6;
    TESSERA_CHECK(false, "spec: {} unit '{}' is not one of ps, ns, us, ms", where, unit);
  } else {
    if (unit == "um^2") return 1.0;
    if (unit == "mm^2") return 1e6;
    TESSERA_CHECK(false, "spec: {} unit '{}' is not one of um^2, mm^2", where, unit);
  }
  return 1.0;
}

void reject_unknown(const nlohmann::json& json, const std::set<std::string>& known,
                    const std::string& where) {
  TESSERA_CHECK(json.is_object(), "spec: {} must be a JSON object, got {}", where, json.dump());
  for (const auto& item : json.items()) {
    TESSERA_CHECK(known.count(item.key()) > 0, "spec: unknown field '{}' in {}", item.key(), where);
  }
}

int64_t get_int(const nlohmann::json& json, const std::string& key, int64_t fallback) {
  if (!json.contains(key)) return fallback;
  const auto& v = json.at(key);
  TESSERA_CHECK(v.is_number_integer(), "spec: field '{}' must be an integer, got {}", key,
                v.dump());
  return v.get<int64_t>();
}

std::optional<double> get_figure(const nlohmann::json& component, const std::string& key,
                                 const std::string& quantity, const std::string& where) {
  if (!component.contains(key)) return std::nullopt;
  const auto& figure = component.at(key);
  const std::string field = where + "." + key;
  reject_unknown(figure, {"value", "unit"}, field);
  TESSERA_CHECK(figure.contains("value") && figure.at("value").is_number(),
                "spec: {} needs a numeric 'value', got {}", field, figure.dump());
  TESSERA_CHECK(figure.contains("unit") && figure.at("unit").is_string(),
                "spec: {} needs a 'unit' string, got {}", field, figure.dump());
  return figure.at("value").get<double>() *
         unit_factor(quantity, figure.at("unit").get<std::string>(), field);
}

ComponentCost parse_component(const nlohmann::json& json, const std::string& name) {
  const std::string where = "components." + name;
  reject_unknown(json, {"energy", "latency", "area"}, where);
  ComponentCost cost;
  cost.energy_pj = get_figure(json, "energy", "energy", where);
  cost.latency_ns = get_figure(json, "latency", "latency", where);
  cost.area_um2 = get_figure(json, "area", "area", where);
  return cost;
}

nlohmann::json component_json(const ComponentCost& cost) {
  nlohmann::json j = nlohmann::json::object();
  if (cost.energy_pj) j["energy"] = {{"value", *cost.energy_pj}, {"unit", "pJ"}};
  if (cost.latency_ns) j["latency"] = {{"value", *cost.latency_ns}, {"unit", "ns"}};
  if (cost.area_um2) j["area"] = {{"value", *cost.area_um2}, {"unit", "um^2"}};
  return j;
}

}  // namespace

nlohmann::json HardwareSpec::to_json() const {
  nlohmann::json j = {{"crossbar_rows", crossbar_rows},
                      {"crossbar_cols", crossbar_cols},
                      {"cell_bits", cell_bits},
                      {"weight_bits", weight_bits},
                      {"weight_encoding", weight_encoding_name(weight_encoding)},
                      {"input_bits", input_bits},
                      {"dac_bits", dac_bits},
                      {"adc_bits", adc_bits},
                      {"columns_per_adc", columns_per_adc},
                      {"pack_groups", pack_groups}};
  nlohmann::json components = nlohmann::json::object();
  const std::vector<std::pair<std::string, const ComponentCost*>> named = {
      {"crossbar", &crossbar}, {"adc", &adc}, {"shift_add", &shift_add}};
  for (const auto& [name, cost] : named) {
    nlohmann::json c = component_json(*cost);
    if (!c.empty()) components[name] = c;
  }
  if (!components.empty()) j["components"] = components;
  if (!name.empty()) j["name"] = name;
  if (!reference.empty()) j["reference"] = reference;
  return j;
}

HardwareSpec HardwareSpec::from_json(const nlohmann::json& json) {
  reject_unknown(json,
                 {"name", "reference", "crossbar_rows", "crossbar_cols", "cell_bits", "weight_bits",
                  "weight_encoding", "input_bits", "dac_bits", "adc_bits", "columns_per_adc",
                  "pack_groups", "components"},
                 "the spec");
  HardwareSpec spec;
  for (const auto& [key, field] : {std::pair{"name", &spec.name}, {"reference", &spec.reference}}) {
    if (!json.contains(key)) continue;
    TESSERA_CHECK(json.at(key).is_string(), "spec: {} must be a string, got {}", key,
                  json.at(key).dump());
    *field = json.at(key).get<std::string>();
  }
  spec.crossbar_rows = get_int(json, "crossbar_rows", spec.crossbar_rows);
  spec.crossbar_cols = get_int(json, "crossbar_cols", spec.crossbar_cols);
  // Narrowing is checked before the cast so that 2^40 is not silently wrapped into range.
  const auto small = [&](const std::string& key, int fallback) {
    const int64_t v = get_int(json, key, fallback);
    TESSERA_CHECK(v >= -1000000 && v <= 1000000, "spec: field '{}' = {} is out of range", key, v);
    return static_cast<int>(v);
  };
  spec.cell_bits = small("cell_bits", spec.cell_bits);
  spec.weight_bits = small("weight_bits", spec.weight_bits);
  spec.input_bits = small("input_bits", spec.input_bits);
  spec.dac_bits = small("dac_bits", spec.dac_bits);
  spec.adc_bits = small("adc_bits", spec.adc_bits);
  spec.columns_per_adc = get_int(json, "columns_per_adc", spec.columns_per_adc);
  if (json.contains("weight_encoding")) {
    const auto& v = json.at("weight_encoding");
    TESSERA_CHECK(v.is_string(), "spec: weight_encoding must be a string, got {}", v.dump());
    spec.weight_encoding = parse_weight_encoding(v.get<std::string>());
  }
  if (json.contains("pack_groups")) {
    const auto& v = json.at("pack_groups");
    TESSERA_CHECK(v.is_boolean(), "spec: pack_groups must be true or false, got {}", v.dump());
    spec.pack_groups = v.get<bool>();
  }
  if (json.contains("components")) {
    const auto& components = json.at("components");
    reject_unknown(components, {"crossbar", "adc", "shift_add"}, "components");
    if (components.contains("crossbar"))
      spec.crossbar = parse_component(components.at("crossbar"), "crossbar");
    if (components.contains("adc")) spec.adc = parse_component(components.at("adc"), "adc");
    if (components.contains("shift_add"))
      spec.shift_add = parse_component(components.at("shift_add"), "shift_add");
  }
  spec.validate();
  return spec;
}

HardwareSpec load_spec(const std::string& path) {
  const std::string text = read_file(path);
  const nlohmann::json json = parse_json(text, fmt::format("spec: {}", path));
  try {
    return HardwareSpec::from_json(json);
  } catch (const Error& e) {
    TESSERA_CHECK(false, "{}: {}", path, e.what());
  }
  return {};
}

std::vector<HardwareSpec> named_baselines() {
  HardwareSpec isaac;  // ISAAC-like figures (specs/isaac_like.json; from memory, not verified)
  isaac.crossbar = {30.0, 100.0, 25.0};
  isaac.adc = {1.6, 0.78, 1200.0};
  isaac.shift_add = {0.04, std::nullopt, 60.0};
  HardwareSpec diff8 = isaac, diff16 = isaac, isaac2 = isaac, unpacked = isaac;
  diff8.name = "diff8";
  diff8.reference =
      "8-bit sign-magnitude on a differential pair of 1-bit-cell 128x128 arrays (PRIME/NeuroSim "
      "style), the same bit width and cells as SME's own mapping";
  diff16.name = "diff16";
  diff16.weight_bits = 16;
  diff16.reference = "16-bit weights (ISAAC's width) on a differential pair of 1-bit cells";
  isaac2.name = "isaac2bit";
  isaac2.cell_bits = 2;
  isaac2.reference = "ISAAC-style multi-bit cells: 8-bit differential weights in 2-bit cells";
  unpacked.name = "unpacked_dw";
  unpacked.pack_groups = false;
  unpacked.reference = "diff8 with one crossbar per depthwise group (a naive mapper)";
  return {diff8, diff16, isaac2, unpacked};
}

}  // namespace tessera::reram
