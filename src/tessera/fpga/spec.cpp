// Accelerator spec parsing and validation: presets, every field checked, unknown fields rejected.
#include "tessera/fpga/spec.h"

#include <cmath>
#include <set>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/json.h"

namespace tessera::fpga {

namespace {

// Fields no design reaches; they bound what a hostile file can make us compute.
constexpr int64_t kMaxCount = int64_t{1} << 31;

void reject_unknown(const nlohmann::json& json, const std::set<std::string>& known,
                    const std::string& where) {
  TESSERA_CHECK(json.is_object(), "fpga spec: {} must be a JSON object, got {}", where,
                json.dump());
  for (const auto& item : json.items()) {
    TESSERA_CHECK(known.count(item.key()) > 0, "fpga spec: unknown field '{}' in {}", item.key(),
                  where);
  }
}

void read_int(const nlohmann::json& json, const std::string& key, const std::string& where,
              int64_t& field) {
  if (!json.contains(key)) return;
  const auto& v = json.at(key);
  TESSERA_CHECK(v.is_number_integer(), "fpga spec: {}.{} must be an integer, got {}", where, key,
                v.dump());
  TESSERA_CHECK(!v.is_number_unsigned() || v.get<uint64_t>() <= static_cast<uint64_t>(kMaxCount),
                "fpga spec: {}.{} = {} is out of range", where, key, v.dump());
  field = v.get<int64_t>();
  TESSERA_CHECK(std::abs(field) <= kMaxCount, "fpga spec: {}.{} = {} is out of range", where, key,
                field);
}

void read_int(const nlohmann::json& json, const std::string& key, const std::string& where,
              int& field) {
  int64_t wide = field;
  read_int(json, key, where, wide);
  field = static_cast<int>(wide);
}

void read_double(const nlohmann::json& json, const std::string& key, const std::string& where,
                 double& field) {
  if (!json.contains(key)) return;
  const auto& v = json.at(key);
  TESSERA_CHECK(v.is_number(), "fpga spec: {}.{} must be a number, got {}", where, key, v.dump());
  field = v.get<double>();
}

void read_bool(const nlohmann::json& json, const std::string& key, const std::string& where,
               bool& field) {
  if (!json.contains(key)) return;
  const auto& v = json.at(key);
  TESSERA_CHECK(v.is_boolean(), "fpga spec: {}.{} must be true or false, got {}", where, key,
                v.dump());
  field = v.get<bool>();
}

void check_positive(int64_t value, const std::string& field) {
  TESSERA_CHECK(value >= 1 && value <= kMaxCount, "fpga spec: {} = {} must be in [1, 2^31]", field,
                value);
}

void check_coefficient(double value, const std::string& field) {
  TESSERA_CHECK(std::isfinite(value) && value >= 0.0,
                "fpga spec: resource_model.{} = {} must be finite and >= 0", field, value);
}

}  // namespace

// ------------------------------------------------------------------------------------ device

std::vector<std::string> device_preset_names() { return {"xc7z020", "xc7z045", "zu2eg", "zu9eg"}; }

DeviceSpec device_preset(const std::string& name) {
  // Datasheet figures (DS190 Zynq-7000, DS891 Zynq UltraScale+): DSP slices, LUTs, 36 Kb BRAMs.
  // The clock stays at the 100 MHz the repository's cycle constants assume.
  if (name == "xc7z020") return {name, 220, 53200, 140, 100.0};
  if (name == "xc7z045") return {name, 900, 218600, 545, 100.0};
  if (name == "zu2eg") return {name, 240, 47232, 150, 100.0};
  if (name == "zu9eg") return {name, 2520, 274080, 912, 100.0};
  std::string known;
  for (const auto& n : device_preset_names()) known += (known.empty() ? "" : ", ") + n;
  TESSERA_CHECK(false, "fpga spec: unknown device preset '{}' (expected one of: {})", name, known);
  return {};
}

void DeviceSpec::validate() const {
  check_positive(dsp, "device.dsp");
  check_positive(lut, "device.lut");
  check_positive(bram, "device.bram");
  TESSERA_CHECK(std::isfinite(clock_mhz) && clock_mhz > 0.0 && clock_mhz <= 10000.0,
                "fpga spec: device.clock_mhz = {} must be in (0, 10000]", clock_mhz);
}

nlohmann::json DeviceSpec::to_json() const {
  return {{"name", name}, {"dsp", dsp}, {"lut", lut}, {"bram", bram}, {"clock_mhz", clock_mhz}};
}

DeviceSpec DeviceSpec::from_json(const nlohmann::json& json) {
  if (json.is_string()) return device_preset(json.get<std::string>());
  reject_unknown(json, {"name", "preset", "dsp", "lut", "bram", "clock_mhz"}, "device");
  DeviceSpec d;
  if (json.contains("preset")) {
    TESSERA_CHECK(json.at("preset").is_string(), "fpga spec: device.preset must be a string");
    d = device_preset(json.at("preset").get<std::string>());
  } else {
    d.name = "custom";
  }
  if (json.contains("name")) {
    TESSERA_CHECK(json.at("name").is_string(), "fpga spec: device.name must be a string");
    d.name = json.at("name").get<std::string>();
  }
  read_int(json, "dsp", "device", d.dsp);
  read_int(json, "lut", "device", d.lut);
  read_int(json, "bram", "device", d.bram);
  read_double(json, "clock_mhz", "device", d.clock_mhz);
  d.validate();
  return d;
}

// ------------------------------------------------------------------------------------- cores

void DspCoreConfig::validate() const {
  check_positive(rows, "dsp_core.rows");
  check_positive(cols, "dsp_core.cols");
  TESSERA_CHECK(pack >= 1 && pack <= 4, "fpga spec: dsp_core.pack = {} must be in [1, 4]", pack);
  TESSERA_CHECK(middle_bits >= 1 && middle_bits <= 8,
                "fpga spec: dsp_core.middle_bits = {} must be in [1, 8]", middle_bits);
  TESSERA_CHECK(edge_bits >= 1 && edge_bits <= 8,
                "fpga spec: dsp_core.edge_bits = {} must be in [1, 8]", edge_bits);
  check_positive(lmem, "dsp_core.lmem");
  check_positive(rmem, "dsp_core.rmem");
}

nlohmann::json DspCoreConfig::to_json() const {
  return {{"rows", rows},           {"cols", cols}, {"pack", pack}, {"middle_bits", middle_bits},
          {"edge_bits", edge_bits}, {"lmem", lmem}, {"rmem", rmem}, {"pack_middle", pack_middle},
          {"enabled", enabled}};
}

DspCoreConfig DspCoreConfig::from_json(const nlohmann::json& json) {
  reject_unknown(json,
                 {"rows", "cols", "pack", "middle_bits", "edge_bits", "lmem", "rmem", "pack_middle",
                  "enabled"},
                 "dsp_core");
  DspCoreConfig c;
  read_int(json, "rows", "dsp_core", c.rows);
  read_int(json, "cols", "dsp_core", c.cols);
  read_int(json, "pack", "dsp_core", c.pack);
  read_int(json, "middle_bits", "dsp_core", c.middle_bits);
  read_int(json, "edge_bits", "dsp_core", c.edge_bits);
  read_int(json, "lmem", "dsp_core", c.lmem);
  read_int(json, "rmem", "dsp_core", c.rmem);
  read_bool(json, "pack_middle", "dsp_core", c.pack_middle);
  read_bool(json, "enabled", "dsp_core", c.enabled);
  c.validate();
  return c;
}

void LutCoreConfig::validate() const {
  check_positive(dm, "lut_core.dm");
  check_positive(dn, "lut_core.dn");
  check_positive(dk, "lut_core.dk");
  check_positive(bm, "lut_core.bm");
  check_positive(rmem, "lut_core.rmem");
  check_positive(fetch_bits, "lut_core.fetch_bits");
}

nlohmann::json LutCoreConfig::to_json() const {
  return {{"dm", dm},          {"dn", dn},     {"dk", dk},
          {"bm", bm},          {"rmem", rmem}, {"fetch_bits", fetch_bits},
          {"enabled", enabled}};
}

LutCoreConfig LutCoreConfig::from_json(const nlohmann::json& json) {
  reject_unknown(json, {"dm", "dn", "dk", "bm", "rmem", "fetch_bits", "enabled"}, "lut_core");
  LutCoreConfig c;
  read_int(json, "dm", "lut_core", c.dm);
  read_int(json, "dn", "lut_core", c.dn);
  read_int(json, "dk", "lut_core", c.dk);
  read_int(json, "bm", "lut_core", c.bm);
  read_int(json, "rmem", "lut_core", c.rmem);
  read_int(json, "fetch_bits", "lut_core", c.fetch_bits);
  read_bool(json, "enabled", "lut_core", c.enabled);
  c.validate();
  return c;
}

// ---------------------------------------------------------------------------- resource model

void ResourceModel::validate() const {
  check_coefficient(lut_per_bit, "lut_per_bit");
  check_coefficient(lut_per_unit, "lut_per_unit");
  check_coefficient(lut_core_fixed, "lut_core_fixed");
  check_coefficient(lut_per_dsp, "lut_per_dsp");
  check_coefficient(dsp_core_fixed_lut, "dsp_core_fixed_lut");
  check_coefficient(shell_lut, "shell_lut");
  TESSERA_CHECK(shell_dsp >= 0 && shell_dsp <= kMaxCount,
                "fpga spec: resource_model.shell_dsp = {} must be >= 0", shell_dsp);
  TESSERA_CHECK(shell_bram >= 0 && shell_bram <= kMaxCount,
                "fpga spec: resource_model.shell_bram = {} must be >= 0", shell_bram);
  check_positive(bram_bits, "resource_model.bram_bits");
  check_positive(activation_bits, "resource_model.activation_bits");
  check_positive(weight_bits, "resource_model.weight_bits");
}

nlohmann::json ResourceModel::to_json() const {
  return {{"lut_per_bit", lut_per_bit},
          {"lut_per_unit", lut_per_unit},
          {"lut_core_fixed", lut_core_fixed},
          {"lut_per_dsp", lut_per_dsp},
          {"dsp_core_fixed_lut", dsp_core_fixed_lut},
          {"shell_lut", shell_lut},
          {"shell_dsp", shell_dsp},
          {"shell_bram", shell_bram},
          {"bram_bits", bram_bits},
          {"activation_bits", activation_bits},
          {"weight_bits", weight_bits}};
}

ResourceModel ResourceModel::from_json(const nlohmann::json& json) {
  reject_unknown(
      json,
      {"lut_per_bit", "lut_per_unit", "lut_core_fixed", "lut_per_dsp", "dsp_core_fixed_lut",
       "shell_lut", "shell_dsp", "shell_bram", "bram_bits", "activation_bits", "weight_bits"},
      "resource_model");
  ResourceModel m;
  const std::string w = "resource_model";
  read_double(json, "lut_per_bit", w, m.lut_per_bit);
  read_double(json, "lut_per_unit", w, m.lut_per_unit);
  read_double(json, "lut_core_fixed", w, m.lut_core_fixed);
  read_double(json, "lut_per_dsp", w, m.lut_per_dsp);
  read_double(json, "dsp_core_fixed_lut", w, m.dsp_core_fixed_lut);
  read_double(json, "shell_lut", w, m.shell_lut);
  read_int(json, "shell_dsp", w, m.shell_dsp);
  read_int(json, "shell_bram", w, m.shell_bram);
  read_int(json, "bram_bits", w, m.bram_bits);
  read_int(json, "activation_bits", w, m.activation_bits);
  read_int(json, "weight_bits", w, m.weight_bits);
  m.validate();
  return m;
}

// ------------------------------------------------------------------------------- whole spec

void AcceleratorSpec::validate() const {
  device.validate();
  dsp.validate();
  lut.validate();
  resources.validate();
}

nlohmann::json AcceleratorSpec::to_json() const {
  return {{"device", device.to_json()},
          {"dsp_core", dsp.to_json()},
          {"lut_core", lut.to_json()},
          {"resource_model", resources.to_json()}};
}

AcceleratorSpec AcceleratorSpec::from_json(const nlohmann::json& json) {
  reject_unknown(json, {"device", "dsp_core", "lut_core", "resource_model"}, "the spec");
  AcceleratorSpec s;
  if (json.contains("device")) s.device = DeviceSpec::from_json(json.at("device"));
  if (json.contains("dsp_core")) s.dsp = DspCoreConfig::from_json(json.at("dsp_core"));
  if (json.contains("lut_core")) s.lut = LutCoreConfig::from_json(json.at("lut_core"));
  if (json.contains("resource_model"))
    s.resources = ResourceModel::from_json(json.at("resource_model"));
  s.validate();
  return s;
}

AcceleratorSpec load_spec(const std::string& path) {
  const std::string text = read_file(path);
  const nlohmann::json json = parse_json(text, fmt::format("fpga spec '{}'", path));
  return AcceleratorSpec::from_json(json);
}

void LayerPrecision::validate(const std::string& where) const {
  TESSERA_CHECK(weight_bits >= 1 && weight_bits <= 8, "{}: weight bits {} must be in [1, 8]", where,
                weight_bits);
  TESSERA_CHECK(activation_bits >= 1 && activation_bits <= 8,
                "{}: activation bits {} must be in [1, 8]", where, activation_bits);
}

}  // namespace tessera::fpga
