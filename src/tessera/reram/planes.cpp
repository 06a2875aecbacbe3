// Per-row plane budgets: the projection of a row onto its K_r best bit positions, the greedy
// sensitivity-weighted allocation under a mean budget, and the carry-over onto ImageNet shapes.
#include "tessera/reram/planes.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <queue>

#include "tessera/core/error.h"
#include "tessera/reram/bit_sparse.h"

namespace tessera::reram {
namespace {

int64_t groups_of(const workload::Layer& layer) {
  return layer.kind == workload::OpKind::Conv2d ? layer.groups : 1;
}

// The projection tables of every position set of k = 0..kMaxPlaneBudget positions among m bits
// (at most k terms: every kept position may be set).
struct PlaneTables {
  int m = 0;
  std::vector<std::vector<std::vector<int32_t>>> by_k;  // by_k[k][set][level]

  explicit PlaneTables(int magnitude_bits) : m(magnitude_bits), by_k(kMaxPlaneBudget + 1) {
    const uint32_t full = (1u << m) - 1;
    for (uint32_t mask = 0; mask <= full; ++mask) {
      const int k = __builtin_popcount(mask);
      if (k <= kMaxPlaneBudget) by_k[k].push_back(projection_table(m, mask, std::max(k, 1)));
    }
  }
};

// The magnitudes of one row (g, r) over its outputs, and the best table of k positions for them.
struct RowView {
  const int32_t* q;
  int64_t n_rows, o_begin, o_end, r;
  int32_t max_magnitude;

  int32_t magnitude(int64_t o) const {
    return std::min(std::abs(q[o * n_rows + r]), max_magnitude);
  }
  const std::vector<int32_t>& best(const PlaneTables& t, int k, std::vector<int64_t>& hist,
                                   std::vector<int32_t>& levels) const {
    for (int32_t v : levels) hist[v] = 0;
    levels.clear();
    for (int64_t o = o_begin; o < o_end; ++o) {
      const int32_t v = magnitude(o);
      if (hist[v]++ == 0) levels.push_back(v);
    }
    size_t best_set = 0;
    int64_t best_error = std::numeric_limits<int64_t>::max();
    for (size_t s = 0; s < t.by_k[k].size(); ++s) {
      int64_t error = 0;
      for (int32_t v : levels) {
        const int64_t d = v - t.by_k[k][s][v];
        error += hist[v] * d * d;
      }
      if (error < best_error) {
        best_error = error;
        best_set = s;
      }
    }
    return t.by_k[k][best_set];
  }
};

void check_tensor(const quant::QuantizedTensor& uniform, const workload::Layer& layer) {
  TESSERA_CHECK(uniform.values.defined() && uniform.values.scalar_type() == torch::kInt32 &&
                    uniform.values.numel() == layer.out_channels * layer.weight_rows(),
                "plane budgets: weights '{}' do not fit layer '{}'", uniform.name, layer.name);
  TESSERA_CHECK(uniform.bits - 1 >= kMaxPlaneBudget && uniform.bits <= 12,
                "plane budgets: layer '{}' has {}-bit weights; per-row budgets need 4..12 bits",
                layer.name, uniform.bits);
}

// One increment of a row's budget in the greedy allocation.
struct Increment {
  double gain_per_weight;
  size_t layer;
  int64_t row;
  bool operator<(const Increment& other) const { return gain_per_weight < other.gain_per_weight; }
};

}  // namespace

void validate_budgets(const RowBudgets& budgets, const workload::Layer& layer) {
  const int64_t rows = groups_of(layer) * layer.weight_rows();
  TESSERA_CHECK(static_cast<int64_t>(budgets.size()) == rows,
                "plane budgets: layer '{}' has {} crossbar rows but {} budgets were given",
                layer.name, rows, budgets.size());
  for (size_t i = 0; i < budgets.size(); ++i) {
    TESSERA_CHECK(budgets[i] >= 0 && budgets[i] <= kMaxPlaneBudget,
                  "plane budgets: row {} of layer '{}' has budget {}, outside [0, {}]", i,
                  layer.name, budgets[i], kMaxPlaneBudget);
  }
}

quant::QuantizedTensor budget_quantize(const quant::QuantizedTensor& uniform,
                                       const RowBudgets& budgets, const workload::Layer& layer) {
  check_tensor(uniform, layer);
  validate_budgets(budgets, layer);
  const PlaneTables tables(uniform.bits - 1);
  quant::QuantizedTensor out = uniform;
  out.values = uniform.values.contiguous().clone();
  int32_t* q = out.values.data_ptr<int32_t>();
  const int64_t groups = groups_of(layer), n_rows = layer.weight_rows();
  const int64_t per_group = layer.out_channels / groups;
  std::vector<int64_t> hist(size_t{1} << tables.m, 0);
  std::vector<int32_t> levels;
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t r = 0; r < n_rows; ++r) {
      const RowView row{q, n_rows, g * per_group, (g + 1) * per_group, r, (1 << tables.m) - 1};
      const std::vector<int32_t>& table = row.best(tables, budgets[g * n_rows + r], hist, levels);
      for (int64_t o = row.o_begin; o < row.o_end; ++o) {
        int32_t& v = q[o * n_rows + r];
        v = v < 0 ? -table[row.magnitude(o)] : table[row.magnitude(o)];
      }
    }
  }
  return out;
}

std::vector<quant::QuantizedTensor> budget_quantize_all(
    const workload::Workload& workload, const std::vector<quant::QuantizedTensor>& uniform,
    const std::vector<RowBudgets>& budgets) {
  const std::vector<workload::Layer> layers = workload.weighted_layers();
  TESSERA_CHECK(uniform.size() == layers.size() && budgets.size() == layers.size(),
                "plane budgets: {} weight tensors and {} budget lists for {} layers",
                uniform.size(), budgets.size(), layers.size());
  std::vector<quant::QuantizedTensor> out;
  for (size_t i = 0; i < layers.size(); ++i)
    out.push_back(budget_quantize(uniform[i], budgets[i], layers[i]));
  return out;
}

double mean_plane_budget(const workload::Workload& workload,
                         const std::vector<RowBudgets>& budgets) {
  const std::vector<workload::Layer> layers = workload.weighted_layers();
  TESSERA_CHECK(budgets.size() == layers.size(), "plane budgets: {} budget lists for {} layers",
                budgets.size(), layers.size());
  double kept = 0, weights = 0;
  for (size_t i = 0; i < layers.size(); ++i) {
    validate_budgets(budgets[i], layers[i]);
    const double outputs = static_cast<double>(layers[i].out_channels / groups_of(layers[i]));
    for (int k : budgets[i]) kept += k * outputs;
    weights += outputs * static_cast<double>(budgets[i].size());
  }
  return weights > 0 ? kept / weights : 0.0;
}

void BudgetAllocation::validate() const {
  TESSERA_CHECK(std::isfinite(mean_budget) && mean_budget > 0 && mean_budget <= kMaxPlaneBudget,
                "plane budgets: mean budget {} must be in (0, {}] (0 would prune every row)",
                mean_budget, kMaxPlaneBudget);
}

namespace {

// Weighted squared error of row (g, r) when it keeps k = 0..kMaxPlaneBudget planes.
using RowErrors = std::array<double, kMaxPlaneBudget + 1>;

std::vector<RowErrors> row_errors(const quant::QuantizedTensor& uniform,
                                  const torch::Tensor& sensitivity, const workload::Layer& layer) {
  check_tensor(uniform, layer);
  const torch::Tensor values = uniform.values.contiguous();
  const int32_t* q = values.data_ptr<int32_t>();
  torch::Tensor s;
  if (sensitivity.defined()) {
    TESSERA_CHECK(sensitivity.numel() == values.numel(),
                  "plane budgets: sensitivity of layer '{}' has {} values for {} weights",
                  layer.name, sensitivity.numel(), values.numel());
    s = sensitivity.to(torch::kFloat64).contiguous();
  }
  const double* w = s.defined() ? s.data_ptr<double>() : nullptr;
  const PlaneTables tables(uniform.bits - 1);
  const int64_t groups = groups_of(layer), n_rows = layer.weight_rows();
  const int64_t per_group = layer.out_channels / groups;
  std::vector<int64_t> hist(size_t{1} << tables.m, 0);
  std::vector<int32_t> levels;
  std::vector<RowErrors> out(static_cast<size_t>(groups * n_rows));
  const double step2 = uniform.step * uniform.step;
  for (int64_t g = 0; g < groups; ++g) {
    for (int64_t r = 0; r < n_rows; ++r) {
      const RowView row{q, n_rows, g * per_group, (g + 1) * per_group, r, (1 << tables.m) - 1};
      for (int k = 0; k <= kMaxPlaneBudget; ++k) {
        const std::vector<int32_t>& table = row.best(tables, k, hist, levels);
        double error = 0;
        for (int64_t o = row.o_begin; o < row.o_end; ++o) {
          const double d = row.magnitude(o) - table[row.magnitude(o)];
          error += (w != nullptr ? w[o * n_rows + r] : 1.0) * d * d;
        }
        out[g * n_rows + r][k] = step2 * error;
      }
    }
  }
  return out;
}

// The next increment of a row at budget k: the j > k with the best error drop per plane (the
// lower convex hull of its error curve), so that a small first step does not hide a large second.
Increment next_increment(const RowErrors& e, int k, size_t layer, int64_t row, double weights,
                         int& to) {
  double best = -1;
  to = k;
  for (int j = k + 1; j <= kMaxPlaneBudget; ++j) {
    const double gain = (e[k] - e[j]) / ((j - k) * weights);
    if (gain > best) {
      best = gain;
      to = j;
    }
  }
  return {best, layer, row};
}

}  // namespace

std::vector<RowBudgets> allocate_plane_budgets(const workload::Workload& workload,
                                               const std::vector<quant::QuantizedTensor>& uniform,
                                               const std::vector<torch::Tensor>& sensitivity,
                                               const BudgetAllocation& allocation) {
  allocation.validate();
  const std::vector<workload::Layer> layers = workload.weighted_layers();
  TESSERA_CHECK(uniform.size() == layers.size(), "plane budgets: {} weight tensors for {} layers",
                uniform.size(), layers.size());
  TESSERA_CHECK(sensitivity.empty() || sensitivity.size() == layers.size(),
                "plane budgets: {} sensitivity tensors for {} layers", sensitivity.size(),
                layers.size());
  TESSERA_CHECK(allocation.row_cost.empty() || allocation.row_cost.size() == layers.size(),
                "plane budgets: {} row costs for {} layers", allocation.row_cost.size(),
                layers.size());
  std::vector<std::vector<RowErrors>> errors;
  std::vector<RowBudgets> budgets;
  std::vector<double> row_weights;  // outputs fed by one row of each layer
  double total = 0, smallest = std::numeric_limits<double>::max();
  std::priority_queue<Increment> heap;
  for (size_t i = 0; i < layers.size(); ++i) {
    errors.push_back(
        row_errors(uniform[i], sensitivity.empty() ? torch::Tensor() : sensitivity[i], layers[i]));
    budgets.emplace_back(errors.back().size(), 0);
    row_weights.push_back(allocation.row_cost.empty()
                              ? static_cast<double>(layers[i].out_channels / groups_of(layers[i]))
                              : allocation.row_cost[i]);
    TESSERA_CHECK(row_weights.back() > 0, "plane budgets: row cost {} of layer '{}' must be > 0",
                  row_weights.back(), layers[i].name);
    total += row_weights.back() * static_cast<double>(errors.back().size());
    smallest = std::min(smallest, row_weights.back());
    int to = 0;
    for (size_t r = 0; r < errors.back().size(); ++r)
      heap.push(next_increment(errors.back()[r], 0, i, r, row_weights.back(), to));
  }
  double left = allocation.mean_budget * total;
  TESSERA_CHECK(left >= smallest,
                "plane budgets: mean budget {} prunes every row of '{}' (one plane of its "
                "smallest row costs {} of {} weights)",
                allocation.mean_budget, workload.model, smallest, total);
  while (!heap.empty()) {
    const Increment inc = heap.top();
    heap.pop();
    if (inc.gain_per_weight <= 0) break;  // what is left buys no accuracy
    int& k = budgets[inc.layer][inc.row];
    int to = 0;
    next_increment(errors[inc.layer][inc.row], k, inc.layer, inc.row, row_weights[inc.layer], to);
    const double cost = (to - k) * row_weights[inc.layer];
    if (cost > left) continue;
    left -= cost;
    k = to;
    if (k < kMaxPlaneBudget)
      heap.push(next_increment(errors[inc.layer][inc.row], k, inc.layer, inc.row,
                               row_weights[inc.layer], to));
  }
  return budgets;
}

std::vector<RowBudgets> budgets_for_target(const workload::Workload& target,
                                           const std::vector<workload::Layer>& donor_layers,
                                           const std::vector<RowBudgets>& donor_budgets) {
  const std::vector<workload::Layer> layers = target.weighted_layers();
  TESSERA_CHECK(layers.size() == donor_layers.size() && donor_budgets.size() == layers.size(),
                "plane budgets: the donor has {} layers ({} budget lists), '{}' has {}",
                donor_layers.size(), donor_budgets.size(), target.model, layers.size());
  std::vector<RowBudgets> out;
  for (size_t i = 0; i < layers.size(); ++i) {
    const workload::Layer &t = layers[i], &d = donor_layers[i];
    validate_budgets(donor_budgets[i], d);
    const int64_t rows = groups_of(t) * t.weight_rows();
    if (rows == static_cast<int64_t>(donor_budgets[i].size())) {
      out.push_back(donor_budgets[i]);
      continue;
    }
    TESSERA_CHECK(i == 0 && groups_of(t) == 1 && groups_of(d) == 1 && t.kernel_h == d.kernel_h &&
                      t.kernel_w == d.kernel_w,
                  "plane budgets: layer '{}' has {} rows but the donor's '{}' has {}", t.name, rows,
                  d.name, donor_budgets[i].size());
    const int64_t taps = t.kernel_h * t.kernel_w;
    RowBudgets tiled(static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r)
      tiled[r] = donor_budgets[i][((r / taps) % d.in_channels) * taps + r % taps];
    out.push_back(std::move(tiled));
  }
  return out;
}

}  // namespace tessera::reram
