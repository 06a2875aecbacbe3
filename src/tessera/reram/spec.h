// The ReRAM hardware spec: crossbar geometry, cell and weight precision, input and ADC handling,
// and optional per-component energy/latency/area figures. Read from a JSON file in which every
// field is validated and unknown fields are rejected (Timeloop/Accelergy style: spec in, stats
// out).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace tessera::reram {

/// How signed weights are stored (research/hw_security.md 2.2).
enum class WeightEncoding {
  /// Sign-magnitude on a positive and a negative crossbar array (the ISAAC/PRIME/NeuroSim
  /// differential pair): weight_bits - 1 magnitude bits, two arrays.
  Differential,
  /// One array holding the weight_bits two's-complement code; the MSB column is weighted
  /// negatively in the periphery.
  TwosComplement,
};

/// "differential" or "twos_complement".
std::string weight_encoding_name(WeightEncoding encoding);
/// Throws tessera::Error listing the valid names unless `name` is "differential" or
/// "twos_complement".
WeightEncoding parse_weight_encoding(const std::string& name);

/// Optional figures of one peripheral or array component, stored in canonical units
/// (energy pJ, latency ns, area um^2). Absent figures are std::nullopt.
struct ComponentCost {
  std::optional<double> energy_pj;   ///< per action (crossbar read, ADC conversion, shift-add)
  std::optional<double> latency_ns;  ///< per action
  std::optional<double> area_um2;    ///< per instance
};

/// Defaults (documented in docs/systems/reram.md): 128x128 crossbars (ISAAC, NeuroSim), 1-bit
/// cells, 8-bit weights on a differential pair, 8-bit inputs streamed 1 bit per cycle (1-bit DAC),
/// 8-bit ADC shared by 8 columns (NeuroSim), grouped layers packed block-diagonally.
struct HardwareSpec {
  std::string name;             ///< optional: e.g. a named baseline ("diff8")
  std::string reference;        ///< optional: the design or paper the spec stands for
  int64_t crossbar_rows = 128;  ///< wordlines per crossbar, 1..65536
  int64_t crossbar_cols = 128;  ///< bitlines per crossbar, 1..65536
  int cell_bits = 1;            ///< bits per ReRAM cell: 1 or 2
  int weight_bits = 8;          ///< fixed-point weight width, 2..16 (core/quant)
  WeightEncoding weight_encoding = WeightEncoding::Differential;
  int input_bits = 8;           ///< activation width
  int dac_bits = 1;             ///< input bits applied per cycle (1 = bit-serial), <= input_bits
  int adc_bits = 8;             ///< ADC resolution, 1..16
  int64_t columns_per_adc = 8;  ///< columns sharing one ADC (time-multiplexed), 1..crossbar_cols
  /// Pack the small weight matrices of grouped (e.g. depthwise) convolutions block-diagonally into
  /// one crossbar instead of one crossbar per group.
  bool pack_groups = true;
  ComponentCost crossbar;   ///< energy/latency per crossbar read cycle (all rows, one input bit)
  ComponentCost adc;        ///< energy/latency per conversion; area per ADC
  ComponentCost shift_add;  ///< energy/latency per shift-and-add; area per unit

  /// Magnitude (differential) or code (two's complement) bits stored per weight.
  int stored_bits() const;
  /// Cells (slices) per weight: ceil(stored_bits / cell_bits).
  int slices_per_weight() const;
  /// Crossbar arrays per weight matrix: 2 for differential, 1 for two's complement.
  int arrays() const;
  /// Read cycles per input vector: ceil(input_bits / dac_bits).
  int input_cycles() const;
  /// Throws tessera::Error naming the first bad field.
  void validate() const;

  nlohmann::json to_json() const;
  /// Validates every field; unknown fields, wrong types and bad units are errors.
  static HardwareSpec from_json(const nlohmann::json& json);
};

/// Reads and validates a spec JSON file.
HardwareSpec load_spec(const std::string& path);

/// The named baselines of docs/systems/reram.md (issue 16), each also a file in
/// src/tessera/reram/specs/baseline_NAME.json, with ISAAC-like component figures: "diff8" (the
/// headline: 8-bit sign-magnitude differential pair, 1-bit cells), "diff16" (16-bit weights),
/// "isaac2bit" (2-bit cells), "unpacked_dw" (diff8 without block-diagonal depthwise packing).
std::vector<HardwareSpec> named_baselines();

}  // namespace tessera::reram
