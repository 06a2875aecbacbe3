// The explicit SME layout of one layer (splicing + squeeze-out + the residual crossbar of issue
// 16): which input drives each wordline, which output each bitline feeds, which cells hold
// non-zeros, so that counts are checked against the cells and the layout's VMM against W x.
#pragma once

#include <cstdint>
#include <vector>

#include "tessera/core/quant.h"
#include "tessera/core/workload.h"
#include "tessera/reram/spec.h"

namespace tessera::reram {

/// A wordline: the layer input it carries (group g, row r -> g * rows + r) and, in the residual
/// crossbar, the cycles its bit-serial input is delayed (2^delay: the weight of its bit plane).
struct Wordline {
  int64_t input = 0;
  int delay = 0;
};

/// A bitline: the layer output it accumulates into (g * cols + c), the shift applied to it in the
/// periphery (the bit plane of a plane crossbar; 0 in the residual) and its sign (the array).
struct Bitline {
  int64_t output = 0;
  int shift = 0;
  int sign = 1;
};

/// A non-zero cell: wordline and bitline index within its crossbar, and the cell level.
struct Cell {
  int32_t row = 0, col = 0;
  int32_t value = 0;
};

struct PhysicalCrossbar {
  bool residual = false;
  std::vector<Wordline> rows;
  std::vector<Bitline> cols;
  std::vector<Cell> cells;
};

/// A mapped layer: counts always, the crossbars themselves only when asked for (tests).
struct LayerLayout {
  int64_t crossbars = 0;
  int64_t residual_crossbars = 0;
  int64_t mapped_cells = 0;      ///< wordlines x bitlines over all crossbars
  int64_t columns_used = 0;      ///< bitlines over all crossbars
  int64_t residual_columns = 0;  ///< bitlines of the residual crossbars
  int64_t index_entries = 0;     ///< row remaps of squeeze-out + residual wordline/bitline routes
  int64_t moved_cells = 0;       ///< non-zero cells moved into the residual crossbars
  int residual_delay = 0;        ///< extra input cycles of the residual crossbars (largest delay)
  int64_t max_cols = 0;          ///< bitlines of the widest crossbar
  std::vector<PhysicalCrossbar> physical;  ///< with keep_crossbars only
};

/// SME's spliced, squeezed layout (mapping.h) of one layer with values (differential encoding).
/// With residual_fill > 0, every squeezed block that fills less than residual_fill of a crossbar
/// (wordlines x bitlines) gives its non-zeros to the layer's residual crossbars: one wordline per
/// (input, bit plane), the plane's weight applied by delaying the bit-serial input, one bitline
/// per (output, sign), so that the planes of an output share bitlines. The residual is used only
/// when it lowers the layer's crossbar count. Throws tessera::Error for two's-complement weights
/// or multi-bit DACs with a residual (the delay needs 1-bit inputs).
LayerLayout sme_layout(const workload::Layer& layer, const quant::QuantizedTensor& values,
                       const HardwareSpec& spec, double residual_fill, bool keep_crossbars);

/// The layer's integer VMM computed from the crossbars of `layout` (keep_crossbars): output o =
/// sum over cells of value * x[input] * 2^delay * 2^shift * sign.
std::vector<int64_t> layout_vmm(const LayerLayout& layout, const std::vector<int64_t>& x,
                                int64_t outputs);

}  // namespace tessera::reram
