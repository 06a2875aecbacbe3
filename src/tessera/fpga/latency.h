// The N3H-Core latency model (research/hw_security.md 1.3, read from the authors'
// `linear_quantize_env_ru.py`): per-layer GEMM shapes from core/workload, the bit-serial LUT core
// (BISMO), the DSP core (two 4-bit MACs per DSP, 8-bit first and last layers), the layer latency
// max(L_dsp, L_lut) at a split ratio, and the split that balances the two cores.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/workload.h"
#include "tessera/fpga/spec.h"

namespace tessera::fpga {

/// One weighted layer as a GEMM: M = H_out * W_out (rows, batch 1), K = C_in/groups * k_h * k_w,
/// N = C_out (the dimension split between the cores). `edge`: first or last weighted layer,
/// which the DSP core runs in 8-bit mode.
struct GemmShape {
  std::string name;
  int64_t m = 0, k = 0, n = 0;
  bool edge = false;
};

/// The Conv2d and Linear layers of a workload, in order, as GEMMs. Validates the workload first
/// (a layer with a zero dimension is a tessera::Error naming it); throws if there is none.
std::vector<GemmShape> gemm_shapes(const workload::Workload& workload);

/// Output channels the LUT core gets at split ratio r: round-half-even(N * r) (Python's round).
int64_t lut_columns(int64_t n, double ratio);

/// BISMO cycles for `n_cols` output columns of the GEMM at `precision` (a, w bits); 0 when
/// n_cols == 0; +infinity when the LHS buffer cannot hold one K tile (bm < tk * a).
double lut_core_cycles(const GemmShape& gemm, int64_t n_cols, const LayerPrecision& precision,
                       const LutCoreConfig& core);

/// DSP-core cycles for `n_cols` output columns (0 when n_cols == 0); the K side covers
/// rows * pack values a cycle unless `eight_bit` (edge layers, or pack_middle off); +infinity
/// when a buffer cannot hold one tile (lmem < tk or rmem < 2 * tk).
double dsp_core_cycles(const GemmShape& gemm, int64_t n_cols, const DspCoreConfig& core,
                       bool eight_bit);

/// Whether the DSP core runs this layer in 8-bit mode.
bool dsp_eight_bit(const GemmShape& gemm, const DspCoreConfig& core);

/// One layer at one split: the share `ratio` of the output channels on the LUT core.
struct LayerLatency {
  double ratio = 0.0;  ///< LUT share of the output channels, in [0, 1]
  int64_t lut_cols = 0, dsp_cols = 0;
  double lut_cycles = 0.0, dsp_cycles = 0.0;
  /// The cores run in parallel: max(dsp, lut).
  double cycles() const { return lut_cycles > dsp_cycles ? lut_cycles : dsp_cycles; }
};

/// The layer's latency with `ratio` of its output channels on the LUT core. A disabled core
/// gets no channels: the ratio is forced to 0 (no LUT core) or 1 (no DSP core).
LayerLatency layer_latency(const GemmShape& gemm, double ratio, const LayerPrecision& precision,
                           const DspCoreConfig& dsp, const LutCoreConfig& lut);

/// The repository's `cal_ratio` on a grid of 1/`steps` (steps = 100 is the repository): the first
/// grid point where L_dsp < L_lut, or the point before it when that one's DSP latency is below
/// this one's LUT latency; 1 when the LUT core never becomes the slower one. Returns the ratio
/// as the rounded grid value (j / steps).
double balanced_split(const GemmShape& gemm, const LayerPrecision& precision,
                      const DspCoreConfig& dsp, const LutCoreConfig& lut, int steps = 100);

/// A whole network on the accelerator: the layers run one after another.
struct NetworkLatency {
  std::vector<LayerLatency> layers;
  double cycles = 0.0;
  double ms = 0.0;        ///< cycles / clock
  bool feasible() const;  ///< every layer has finite latency (its buffers hold a tile)
};

/// Every layer at its balanced split (or at `ratios` when given: one per layer).
NetworkLatency network_latency(const std::vector<GemmShape>& gemms,
                               const std::vector<LayerPrecision>& precisions,
                               const AcceleratorSpec& spec, const std::vector<double>& ratios = {});

}  // namespace tessera::fpga
