// SME end to end on a network, on the simulator side (core only): the bit-sparse projection of
// every weighted layer and the eight on/off combinations of (bit-sparse quantization, splicing,
// squeeze-out), so that each step's share is measured. Models and training live in bench_donor.h.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/quant.h"
#include "tessera/core/table.h"
#include "tessera/core/workload.h"
#include "tessera/reram/bit_sparse.h"
#include "tessera/reram/mapping.h"
#include "tessera/reram/spec.h"

namespace tessera::reram {

/// The full SME configuration: which steps run and the quantizer's settings.
struct SmeOptions {
  bool bit_sparse = true;
  bool splice = true;
  bool squeeze = true;
  BitSparseOptions quantizer;

  MappingOptions mapping() const { return {splice, squeeze}; }
  std::string describe() const;
};

/// Bit-sparse projection of every layer (the groups of each layer come from the workload).
std::vector<quant::QuantizedTensor> bit_sparse_all(
    const workload::Workload& workload, const std::vector<quant::QuantizedTensor>& uniform,
    const BitSparseOptions& options);

/// SME's headline statistic: baseline crossbars / crossbars (a mapping with no crossbar counts
/// as one, so the ratio stays finite).
double crossbar_reduction(int64_t baseline_crossbars, int64_t crossbars);

/// One combination of the three steps and its crossbars.
struct AblationRow {
  bool bit_sparse = false, splice = false, squeeze = false;
  int64_t crossbars = 0;
  double reduction = 1.0;  ///< baseline crossbars / crossbars
  double seconds = 0.0;    ///< mapping wall time
};

/// All eight combinations, baseline first and full SME last. `uniform` and `sparse` hold the
/// weights of every weighted layer.
std::vector<AblationRow> ablation(const workload::Workload& workload,
                                  const std::vector<quant::QuantizedTensor>& uniform,
                                  const std::vector<quant::QuantizedTensor>& sparse,
                                  const HardwareSpec& spec);

/// The step-share table: one line per combination (on / -), crossbars, reduction, map seconds.
Table ablation_table(const std::vector<AblationRow>& rows);

}  // namespace tessera::reram
