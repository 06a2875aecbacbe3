// SME on a whole network: project every layer, map every step combination.
#include "tessera/reram/sme.h"

#include <fmt/format.h>

#include <algorithm>

#include "tessera/core/error.h"

namespace tessera::reram {

std::string SmeOptions::describe() const {
  std::string s = bit_sparse ? "bit-sparse(" + quantizer.describe() + ")" : "uniform";
  return s + "+" + mapping().describe();
}

std::vector<quant::QuantizedTensor> bit_sparse_all(
    const workload::Workload& workload, const std::vector<quant::QuantizedTensor>& uniform,
    const BitSparseOptions& options) {
  const std::vector<workload::Layer> layers = workload.weighted_layers();
  TESSERA_CHECK(layers.size() == uniform.size(), "reram: {} weight tensors for {} layers",
                uniform.size(), layers.size());
  std::vector<quant::QuantizedTensor> out;
  out.reserve(uniform.size());
  for (size_t i = 0; i < uniform.size(); ++i) {
    const int64_t groups = layers[i].kind == workload::OpKind::Conv2d ? layers[i].groups : 1;
    out.push_back(bit_sparse_quantize(uniform[i], options, groups));
  }
  return out;
}

double crossbar_reduction(int64_t baseline_crossbars, int64_t crossbars) {
  return static_cast<double>(baseline_crossbars) /
         static_cast<double>(std::max<int64_t>(crossbars, 1));
}

std::vector<AblationRow> ablation(const workload::Workload& workload,
                                  const std::vector<quant::QuantizedTensor>& uniform,
                                  const std::vector<quant::QuantizedTensor>& sparse,
                                  const HardwareSpec& spec) {
  std::vector<AblationRow> rows;
  // Order: baseline, single steps, pairs, all three.
  const int order[8] = {0, 4, 2, 1, 6, 5, 3, 7};  // bits: 4 = bit-sparse, 2 = splice, 1 = squeeze
  for (int code : order) {
    AblationRow row;
    row.bit_sparse = code & 4;
    row.splice = code & 2;
    row.squeeze = code & 1;
    const NetworkStats net = map_network(workload, row.bit_sparse ? sparse : uniform, spec,
                                         MappingOptions{row.splice, row.squeeze});
    row.crossbars = net.total.crossbars;
    row.seconds = net.map_seconds;
    row.reduction = rows.empty() ? 1.0 : crossbar_reduction(rows.front().crossbars, row.crossbars);
    rows.push_back(row);
  }
  return rows;
}

Table ablation_table(const std::vector<AblationRow>& rows) {
  Table t({"bit-sparse quant", "splice", "squeeze-out", "crossbars", "reduction", "map s"});
  for (const auto& r : rows) {
    t.add_row({r.bit_sparse ? "on" : "-", r.splice ? "on" : "-", r.squeeze ? "on" : "-",
               std::to_string(r.crossbars), fmt::format("{:.2f}x", r.reduction),
               fmt::format("{:.3f}", r.seconds)});
  }
  return t;
}

}  // namespace tessera::reram
