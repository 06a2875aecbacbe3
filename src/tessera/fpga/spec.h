// The N3H-Core accelerator spec: the FPGA device (DSP, LUT, BRAM, clock; the paper's boards as
// named presets), the DSP-core and LUT-core (BISMO) parameters, and the coefficients of the
// reconstructed resource model. Read from one JSON file; every field is validated and unknown
// fields are rejected (spec in, statistics out).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::fpga {

/// The chip's budget. Presets carry datasheet values (research/hw_security.md 1.6, [M]).
struct DeviceSpec {
  std::string name = "xc7z045";
  int64_t dsp = 900;         ///< DSP48 slices
  int64_t lut = 218600;      ///< 6-input LUTs
  int64_t bram = 545;        ///< 36 Kb block RAMs
  double clock_mhz = 100.0;  ///< the repository's cycle constants assume 100 MHz

  void validate() const;
  nlohmann::json to_json() const;
  /// A preset name (string) or an object {name, dsp, lut, bram, clock_mhz}.
  static DeviceSpec from_json(const nlohmann::json& json);
};

/// The named boards: "xc7z020", "xc7z045" (Mix&Match's Zynq boards), "zu2eg", "zu9eg" (the DPU
/// boards of N3H-Core Table 4). Throws tessera::Error listing the presets for another name.
DeviceSpec device_preset(const std::string& name);
std::vector<std::string> device_preset_names();

/// The DSP-based GEMM core (research/hw_security.md 1.2, 1.3): `rows` input channels (the K
/// side) x `cols` output channels (the N side), one DSP48 per cell. In packed mode each DSP
/// computes `pack` MACs (two 4-bit products), so the K side covers rows * pack values a cycle.
struct DspCoreConfig {
  int64_t rows = 16;        ///< K lanes (the repository fixes 16)
  int64_t cols = 16;        ///< N lanes (the repository fixes 16)
  int64_t pack = 2;         ///< MACs per DSP in the low-precision mode
  int middle_bits = 4;      ///< precision of the packed mode (middle layers)
  int edge_bits = 8;        ///< precision of the first and last layers (pack 1)
  int64_t lmem = 8192;      ///< activation (left) buffer depth Dl, in K-tile words
  int64_t rmem = 1024;      ///< weight (right) buffer depth Dr, in K-tile words
  bool pack_middle = true;  ///< false: every layer in 8-bit mode (the DPU-like baseline)
  bool enabled = true;      ///< false: no DSP core (the all-LUT baseline)

  void validate() const;
  nlohmann::json to_json() const;
  static DspCoreConfig from_json(const nlohmann::json& json);
};

/// The LUT-based bit-serial core (BISMO, research/hw_security.md 1.2): Dm x Dn dot-product units,
/// each Dk bits wide (AND + popcount), an LHS buffer of depth Bm (Dk-bit words per row), an RHS
/// buffer of depth rmem (the repository: 1024, "no impact" on latency), fetch width 64 bits.
struct LutCoreConfig {
  int64_t dm = 8;
  int64_t dn = 8;
  int64_t dk = 256;
  int64_t bm = 4096;
  int64_t rmem = 1024;
  int64_t fetch_bits = 64;
  bool enabled = true;  ///< false: no LUT core (the all-DSP baseline)

  void validate() const;
  nlohmann::json to_json() const;
  static LutCoreConfig from_json(const nlohmann::json& json);
};

/// RECONSTRUCTED resource model (the repository has none; research/hw_security.md 1.3): every
/// coefficient is an option. LUTs: the LUT core costs lut_per_bit per Dm*Dn*Dk AND/popcount bit
/// plus lut_per_unit per dot-product unit (accumulator, shifter) plus lut_core_fixed (control,
/// fetch); the DSP core costs lut_per_dsp per DSP (operand muxes, accumulators) plus
/// dsp_core_fixed_lut; the shell (ISA decoder, DMA) costs shell_lut. BRAM: each buffer takes
/// ceil(bits / bram_bits) blocks per bank (one bank per LUT-core row or DSP column).
struct ResourceModel {
  double lut_per_bit = 2.0;
  double lut_per_unit = 100.0;
  double lut_core_fixed = 5000.0;
  double lut_per_dsp = 30.0;
  double dsp_core_fixed_lut = 3000.0;
  double shell_lut = 8000.0;
  int64_t shell_dsp = 0;
  int64_t shell_bram = 8;
  int64_t bram_bits = 36864;    ///< one 36 Kb block
  int64_t activation_bits = 8;  ///< stored width of a DSP-core activation lane
  int64_t weight_bits = 8;      ///< stored width of a DSP-core weight lane

  void validate() const;
  nlohmann::json to_json() const;
  static ResourceModel from_json(const nlohmann::json& json);
};

/// The whole spec file: {"device": ..., "dsp_core": {...}, "lut_core": {...},
/// "resource_model": {...}}; every section optional (defaults above).
struct AcceleratorSpec {
  DeviceSpec device;
  DspCoreConfig dsp;
  LutCoreConfig lut;
  ResourceModel resources;

  void validate() const;
  nlohmann::json to_json() const;
  static AcceleratorSpec from_json(const nlohmann::json& json);
};

/// Reads and validates a spec JSON file.
AcceleratorSpec load_spec(const std::string& path);

/// Per-layer precision of the LUT-core share: weight and activation bits, each in 1..8.
struct LayerPrecision {
  int weight_bits = 8;
  int activation_bits = 8;
  /// Throws tessera::Error naming `where` unless both are in [1, 8].
  void validate(const std::string& where) const;
};

}  // namespace tessera::fpga
