// A design: the core configuration plus each layer's LUT-core precision; its evaluation (latency
// at the balanced splits, resources, fit); and the baselines of research/hw_security.md 1.6:
// all-DSP (DPU-like, 8-bit), all-LUT, and a Mix&Match-style heterogeneous design.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "tessera/core/table.h"
#include "tessera/fpga/latency.h"
#include "tessera/fpga/resources.h"
#include "tessera/fpga/spec.h"

namespace tessera::fpga {

struct Design {
  std::string name;
  AcceleratorSpec spec;                    ///< device + the chosen core parameters
  std::vector<LayerPrecision> precisions;  ///< LUT-core bits, one per GEMM layer
  /// Split ratios, one per layer; empty: each layer at its balanced split.
  std::vector<double> ratios;
  nlohmann::json to_json() const;
};

struct DesignEvaluation {
  NetworkLatency latency;
  ResourceReport resources;
  /// Fits the budget and every layer's buffers hold a tile.
  bool valid() const { return resources.fits && latency.feasible(); }
  nlohmann::json to_json() const;
};

DesignEvaluation evaluate_design(const std::vector<GemmShape>& gemms, const Design& design);

/// Per layer: name, M, K, N, split (LUT share), LUT / DSP channels, a/w bits of the LUT share,
/// DSP-share bits, DSP and LUT cycles.
Table layer_table(const std::vector<GemmShape>& gemms, const Design& design,
                  const DesignEvaluation& evaluation);

/// Bits the DSP share of a layer is computed at: edge_bits for the first and last layer (and for
/// every layer without packing), middle_bits otherwise.
int dsp_share_bits(const GemmShape& gemm, const DspCoreConfig& core);

/// All-DSP, DPU-like: 8-bit everywhere (no packing), no LUT core, the DSP array rows x the most
/// columns the device's DSPs and BRAMs allow (rows and buffers from `base`).
Design dsp_only_design(const std::vector<GemmShape>& gemms, const AcceleratorSpec& base);
/// All-LUT: no DSP core, every layer at `bits` (a = w), the fastest square LUT core (Dm = Dn in
/// 1..50, Dk in 64..256, Bm in 1..50 x 1024) that fits the device.
Design lut_only_design(const std::vector<GemmShape>& gemms, const AcceleratorSpec& base, int bits);
/// Mix&Match-style (ASSUMED, research/hw_security.md 1.6): the all-DSP design's DSP array packed
/// at `bits` (fixed-point rows), a LUT core standing for the SP2 shift-add rows modelled as the
/// bit-serial core at bits x bits, the fastest square LUT core that fits beside the DSP core, and
/// ONE split ratio for every layer (the SP2 : fixed-point row ratio), the best on a 1% grid; first
/// and last layers 8-bit.
Design mix_and_match_design(const std::vector<GemmShape>& gemms, const AcceleratorSpec& base,
                            int bits = 4);

/// Every layer at (a, w) = (bits, bits).
std::vector<LayerPrecision> uniform_precisions(size_t n_layers, int bits);

}  // namespace tessera::fpga
