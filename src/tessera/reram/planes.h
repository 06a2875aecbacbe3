// Per-row plane budgets (issue 16): every crossbar row r of a layer keeps its own number K_r in
// {0, 1, 2, 3} of magnitude bit planes (0 prunes the row), allocated by sensitivity under a
// network-wide mean budget; each weight of the row is then projected onto its K_r best positions.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/quant.h"
#include "tessera/core/workload.h"

namespace tessera::reram {

/// The largest plane budget of one row.
constexpr int kMaxPlaneBudget = 3;

/// K_r of every crossbar row of one layer, row (group g, r) at g * weight_rows + r.
using RowBudgets = std::vector<int>;

/// Throws tessera::Error unless `budgets` has one entry per crossbar row of `layer` (groups x
/// weight rows) and every entry is in [0, kMaxPlaneBudget].
void validate_budgets(const RowBudgets& budgets, const workload::Layer& layer);

/// Projects the magnitudes of uniform n-bit weights row by row: row (g, r) keeps the K_r bit
/// positions of least squared error over its outputs (exact search of all position sets), every
/// weight takes the nearest value built from them (K_r = 0: the row is zero). The step is kept.
quant::QuantizedTensor budget_quantize(const quant::QuantizedTensor& uniform,
                                       const RowBudgets& budgets, const workload::Layer& layer);

/// budget_quantize of every weighted layer of `workload`.
std::vector<quant::QuantizedTensor> budget_quantize_all(
    const workload::Workload& workload, const std::vector<quant::QuantizedTensor>& uniform,
    const std::vector<RowBudgets>& budgets);

/// Mean plane budget over the weights (a row counts once per output it feeds): the crossbar
/// cells SME keeps are about mean x those of a 1-bit-per-plane layout of every row.
double mean_plane_budget(const workload::Workload& workload,
                         const std::vector<RowBudgets>& budgets);

struct BudgetAllocation {
  double mean_budget = 1.0;  ///< network-wide mean K_r over the weights, in (0, kMaxPlaneBudget]
  /// Per layer: the weights one plane of one of its rows costs (empty: the layer's outputs per
  /// group). A donor mapped at other shapes passes the target's cells per donor row, so that
  /// the mean budget is over the weights that are mapped (e.g. a 1000-class FC, not 10).
  std::vector<double> row_cost;
  void validate() const;
};

/// Allocates K_r greedily by sensitivity: starting from K_r = 0 everywhere, the next plane goes to
/// the row with the largest drop of sum_o s_{o,r} (step * (q - P_K(q)))^2 per weight it costs,
/// until the mean budget is spent. `sensitivity` holds one float tensor per layer in the weight's
/// shape (e.g. a diagonal Fisher, mean squared gradient), or is empty for s = 1. Throws
/// tessera::Error for a mean budget outside (0, kMaxPlaneBudget] or one so small that every row
/// would be pruned.
std::vector<RowBudgets> allocate_plane_budgets(const workload::Workload& workload,
                                               const std::vector<quant::QuantizedTensor>& uniform,
                                               const std::vector<torch::Tensor>& sensitivity,
                                               const BudgetAllocation& allocation);

/// The budgets of a donor's layers carried onto a target of the same architecture (imagenet.h's
/// same_architecture_weights): equal rows are copied; a first layer with more input channels
/// takes row (c, kh, kw) from the donor's (c mod C_donor, kh, kw). Throws tessera::Error for any
/// other difference in rows.
std::vector<RowBudgets> budgets_for_target(const workload::Workload& target,
                                           const std::vector<workload::Layer>& donor_layers,
                                           const std::vector<RowBudgets>& donor_budgets);

}  // namespace tessera::reram
