// Crossbar mappings of a workload onto ReRAM: the ISAAC/NeuroSim-style baseline and SME's
// bit-slice splicing and squeeze-out (research/hw_security.md 2.2), with per-layer and total
// statistics (crossbars, utilization, zero crossbars removed, ADC work, energy, latency, area).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tessera/core/quant.h"
#include "tessera/core/workload.h"
#include "tessera/reram/spec.h"

namespace tessera::reram {

/// Which mapping steps run. All off is the baseline; quantization is applied to the weights
/// before mapping (bit_sparse.h), so each step's share can be measured on its own.
struct MappingOptions {
  /// Bit-slice splicing: slice j of every weight goes to its own crossbar group (one bit-plane
  /// per crossbar); outputs are recombined as sum_j 2^(j*cell_bits) out_j in the periphery.
  /// Off: the slices of one weight sit in adjacent columns of the same crossbar (ISAAC).
  bool splice = false;
  /// Squeeze-out: drop all-zero columns, then rows that are zero in every kept column of a
  /// crossbar column block, and pack the surviving blocks densely (next-fit, block-diagonal)
  /// with a row-remap index table. Needs weight values.
  bool squeeze = false;
  /// With splice and squeeze (issue 16): squeezed blocks filling less than this fraction of a
  /// crossbar move their non-zeros into the layer's residual crossbars (layout.h); 0: none.
  double residual_fill = 0.0;

  std::string describe() const;
};

/// Statistics of one mapped layer. Counts are per inference of one sample.
struct LayerStats {
  std::string name;
  std::string kind;
  int64_t rows = 0;  ///< weight-matrix rows per group (c_in/groups * kh * kw)
  int64_t cols = 0;  ///< weight-matrix columns per group (c_out/groups)
  int64_t groups = 1;
  int64_t weights = 0;
  int64_t crossbars = 0;
  int64_t crossbars_before_squeeze = 0;  ///< the same mapping without squeeze-out
  int64_t zero_crossbars = 0;            ///< all-zero crossbars in the unsqueezed layout
  int64_t mapped_cells = 0;              ///< cells holding a weight slice (zero or not)
  int64_t nonzero_cells = 0;             ///< cells holding a non-zero slice
  int64_t columns_used = 0;              ///< bitlines in use, summed over crossbars
  int64_t index_entries = 0;             ///< row-remap table entries (squeeze-out, residual)
  int64_t residual_crossbars = 0;        ///< of `crossbars`: the residual ones (layout.h)
  int64_t residual_columns = 0;          ///< bitlines of the residual crossbars
  int64_t moved_cells = 0;               ///< non-zero cells moved into the residual
  int residual_delay = 0;                ///< extra input cycles the residual crossbars need
  int64_t positions = 0;                 ///< output positions (out_h * out_w)
  int64_t crossbar_reads = 0;            ///< crossbar read cycles (one input bit each)
  int64_t adc_conversions = 0;
  int64_t shift_adds = 0;
  int64_t adcs = 0;                                       ///< ADC instances
  std::optional<double> energy_pj, latency_ns, area_um2;  ///< when the spec gives figures
  bool has_values = false;  ///< mapped with weight values (else shape-only)

  /// mapped_cells / (crossbars * rows * cols) of the spec.
  double utilization(const HardwareSpec& spec) const;
  /// nonzero_cells / (crossbars * rows * cols).
  double nonzero_density(const HardwareSpec& spec) const;
};

struct NetworkStats {
  std::string model;
  HardwareSpec spec;
  MappingOptions options;
  std::vector<LayerStats> layers;
  LayerStats total;              ///< sums over layers (energy, latency, area summed where present)
  double map_seconds = 0.0;      ///< wall time of the mapping
  double map_cpu_seconds = 0.0;  ///< CPU time of the mapping thread (the mapper is serial): the
                                 ///< time on one core even when a shared machine makes it wait

  /// stats.json: every statistic as {value, unit, description}, per layer and in total.
  nlohmann::json to_json() const;
};

/// Maps one weighted layer (Conv2d or Linear). `values`, when given, holds the integer weights in
/// the layer's shape [C_out, C_in/groups, kh, kw] (or [out, in]), bits = spec.weight_bits; they
/// are required for squeeze-out and for counting zero crossbars. Throws tessera::Error on a layer
/// without weights, a shape mismatch or a value outside the spec's range.
LayerStats map_layer(const workload::Layer& layer, const quant::QuantizedTensor* values,
                     const HardwareSpec& spec, const MappingOptions& options);

/// Maps every weighted layer of a workload. `values` is empty (shape-only) or has one tensor per
/// weighted layer, in order.
NetworkStats map_network(const workload::Workload& workload,
                         const std::vector<quant::QuantizedTensor>& values,
                         const HardwareSpec& spec, const MappingOptions& options);

}  // namespace tessera::reram
