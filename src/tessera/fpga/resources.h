// The RECONSTRUCTED resource model (research/hw_security.md 1.3: the repository has none): DSP,
// LUT and BRAM use of a design from its core parameters and the coefficients of ResourceModel,
// and the check against the device's budget (designs over budget are rejected).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

#include "tessera/fpga/spec.h"

namespace tessera::fpga {

/// Resource use of one part or of the whole design.
struct ResourceUsage {
  int64_t dsp = 0;
  int64_t lut = 0;
  int64_t bram = 0;  ///< 36 Kb blocks

  ResourceUsage& operator+=(const ResourceUsage& other);
  nlohmann::json to_json() const;
};

/// Per part and in total.
struct ResourceReport {
  ResourceUsage dsp_core, lut_core, shell, total;
  /// Largest of total / budget over DSP, LUT and BRAM.
  double max_utilization = 0.0;
  bool fits = false;  ///< total <= device budget on every resource
  std::string over;   ///< "" or e.g. "bram 612 > 545"
  nlohmann::json to_json() const;
};

/// DSP core: rows * cols DSPs; lut_per_dsp * rows * cols + dsp_core_fixed_lut LUTs; BRAM: the
/// activation buffer (lmem words of rows * activation_bits) in one bank, the double-buffered
/// weight buffer (2 * rmem words of rows * weight_bits) in one bank per column.
ResourceUsage dsp_core_resources(const DspCoreConfig& core, const ResourceModel& model);
/// LUT core: lut_per_bit * Dm*Dn*Dk + lut_per_unit * Dm*Dn + lut_core_fixed LUTs; BRAM: the LHS
/// buffer (bm words of Dk bits) in one bank per row and the RHS buffer (rmem words of Dk bits)
/// in one bank per column.
ResourceUsage lut_core_resources(const LutCoreConfig& core, const ResourceModel& model);
/// Both cores (the disabled ones cost nothing) plus the shell, against spec.device.
ResourceReport estimate_resources(const AcceleratorSpec& spec);

/// BRAM blocks of `banks` banks of `depth` words of `width` bits: banks * ceil(depth*width/bits).
int64_t bram_blocks(int64_t banks, int64_t depth, int64_t width, int64_t bram_bits);

}  // namespace tessera::fpga
