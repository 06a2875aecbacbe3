// Bit-sparse quantization: projection tables over power-of-two-term values and the per-layer or
// per-row choice of allowed bit positions by least squared error.
#include "tessera/reram/bit_sparse.h"

#include <algorithm>
#include <limits>

#include "tessera/core/error.h"

namespace tessera::reram {

std::string position_scope_name(PositionScope scope) {
  return scope == PositionScope::Layer ? "layer" : "row";
}

PositionScope parse_position_scope(const std::string& name) {
  if (name == "layer") return PositionScope::Layer;
  if (name == "row") return PositionScope::Row;
  TESSERA_CHECK(false, "bit-sparse scope '{}' is not one of: layer, row", name);
  return PositionScope::Row;
}

void BitSparseOptions::validate(int magnitude_bits) const {
  TESSERA_CHECK(max_terms >= 1, "bit-sparse max_terms = {} must be >= 1", max_terms);
  TESSERA_CHECK(n_positions >= 0 && n_positions <= magnitude_bits,
                "bit-sparse n_positions = {} must be in [0, {}] (0 = all magnitude bits)",
                n_positions, magnitude_bits);
}

std::string BitSparseOptions::describe() const {
  return "t=" + std::to_string(max_terms) +
         ",K=" + (n_positions == 0 ? std::string("all") : std::to_string(n_positions)) + "," +
         position_scope_name(scope);
}

std::vector<int32_t> projection_table(int magnitude_bits, uint32_t allowed_mask, int max_terms) {
  TESSERA_CHECK(magnitude_bits >= 1 && magnitude_bits <= 20,
                "projection_table: magnitude_bits = {} must be in [1, 20]", magnitude_bits);
  const int32_t n_levels = 1 << magnitude_bits;
  std::vector<int32_t> representable;
  for (int32_t v = 0; v < n_levels; ++v) {
    if ((static_cast<uint32_t>(v) & ~allowed_mask) == 0 && __builtin_popcount(v) <= max_terms) {
      representable.push_back(v);
    }
  }
  // Every level maps to its nearest representable value; 0 is always representable.
  std::vector<int32_t> table(n_levels);
  size_t k = 0;
  for (int32_t v = 0; v < n_levels; ++v) {
    while (k + 1 < representable.size() && representable[k + 1] <= v) ++k;
    int32_t best = representable[k];
    if (k + 1 < representable.size() && representable[k + 1] - v < v - best) {
      best = representable[k + 1];
    }
    table[v] = best;
  }
  return table;
}

namespace {

// All bit masks of `k` positions among `m` (k = 0 means every position).
std::vector<uint32_t> position_subsets(int m, int k) {
  const uint32_t full = (1u << m) - 1;
  if (k == 0 || k == m) return {full};
  std::vector<uint32_t> masks;
  for (uint32_t mask = 0; mask <= full; ++mask) {
    if (__builtin_popcount(mask) == k) masks.push_back(mask);
  }
  return masks;
}

// Chooses, among the candidate tables, the one with least squared error on a magnitude histogram.
size_t best_table(const std::vector<int64_t>& histogram, const std::vector<int32_t>& levels,
                  const std::vector<std::vector<int64_t>>& errors) {
  size_t best = 0;
  int64_t best_error = std::numeric_limits<int64_t>::max();
  for (size_t s = 0; s < errors.size(); ++s) {
    int64_t error = 0;
    for (int32_t v : levels) error += histogram[v] * errors[s][v];
    if (error < best_error) {
      best_error = error;
      best = s;
    }
  }
  return best;
}

}  // namespace

quant::QuantizedTensor bit_sparse_quantize(const quant::QuantizedTensor& uniform,
                                           const BitSparseOptions& options, int64_t groups) {
  const int m = uniform.bits - 1;  // magnitude bits of the sign-magnitude view
  options.validate(m);
  TESSERA_CHECK(uniform.values.defined() && uniform.values.numel() > 0,
                "bit-sparse: tensor '{}' is empty", uniform.name);
  TESSERA_CHECK(uniform.values.scalar_type() == torch::kInt32,
                "bit-sparse: tensor '{}' values must be int32", uniform.name);
  const std::vector<uint32_t> masks = position_subsets(m, options.n_positions);
  TESSERA_CHECK(masks.size() * (size_t{1} << m) <= (size_t{1} << 24),
                "bit-sparse: {} position subsets of {} bits are too many to search; use fewer "
                "weight bits or n_positions = 0",
                masks.size(), m);
  const int32_t n_levels = 1 << m;
  std::vector<std::vector<int32_t>> tables;
  std::vector<std::vector<int64_t>> errors;
  for (uint32_t mask : masks) {
    tables.push_back(projection_table(m, mask, options.max_terms));
    std::vector<int64_t> err(n_levels);
    for (int32_t v = 0; v < n_levels; ++v) {
      const int64_t d = v - tables.back()[v];
      err[v] = d * d;
    }
    errors.push_back(std::move(err));
  }

  quant::QuantizedTensor out = uniform;
  out.values = uniform.values.contiguous().clone();
  int32_t* q = out.values.data_ptr<int32_t>();
  const int64_t n = out.values.numel();
  const int64_t n_out = out.values.dim() >= 2 ? out.values.size(0) : 1;
  const int64_t n_rows = n / n_out;
  const int32_t max_magnitude = n_levels - 1;
  TESSERA_CHECK(groups >= 1 && n_out % groups == 0,
                "bit-sparse: tensor '{}' has {} outputs, not divisible by groups = {}",
                uniform.name, n_out, groups);
  const int64_t outputs_per_group = n_out / groups;

  std::vector<int64_t> histogram(n_levels, 0);
  std::vector<int32_t> levels;  // non-zero bins of the histogram, so sparse rows cost little
  auto magnitude = [&](int64_t i) { return std::min(std::abs(q[i]), max_magnitude); };
  auto apply = [&](int64_t i, const std::vector<int32_t>& table) {
    const int32_t p = table[magnitude(i)];
    q[i] = q[i] < 0 ? -p : p;
  };
  auto reset_histogram = [&]() {
    for (int32_t v : levels) histogram[v] = 0;
    levels.clear();
  };
  auto add = [&](int64_t i) {
    const int32_t v = magnitude(i);
    if (histogram[v]++ == 0) levels.push_back(v);
  };

  if (options.scope == PositionScope::Layer || out.values.dim() < 2) {
    for (int64_t i = 0; i < n; ++i) add(i);
    const auto& table = tables[best_table(histogram, levels, errors)];
    for (int64_t i = 0; i < n; ++i) apply(i, table);
  } else {
    // Weight layout [C_out, rows...]: row r of output channel o is q[o * n_rows + r]; crossbar
    // row (g, r) is shared by the outputs of group g only.
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t o_begin = g * outputs_per_group, o_end = o_begin + outputs_per_group;
      for (int64_t r = 0; r < n_rows; ++r) {
        reset_histogram();
        for (int64_t o = o_begin; o < o_end; ++o) add(o * n_rows + r);
        const auto& table = tables[best_table(histogram, levels, errors)];
        for (int64_t o = o_begin; o < o_end; ++o) apply(o * n_rows + r, table);
      }
    }
  }
  return out;
}

quant::QuantizedTensor bit_sparse_quantize(const std::string& name, const torch::Tensor& weight,
                                           int bits, const BitSparseOptions& options,
                                           int64_t groups) {
  return bit_sparse_quantize(quant::quantize(name, weight, bits), options, groups);
}

double magnitude_bit_sparsity(const quant::QuantizedTensor& tensor) {
  const torch::Tensor values = tensor.values.contiguous();
  const int32_t* q = values.data_ptr<int32_t>();
  const int m = tensor.bits - 1;
  int64_t ones = 0;
  for (int64_t i = 0; i < values.numel(); ++i) {
    ones += __builtin_popcount(static_cast<uint32_t>(std::min(std::abs(q[i]), (1 << m) - 1)));
  }
  return 1.0 - static_cast<double>(ones) / (static_cast<double>(values.numel()) * m);
}

}  // namespace tessera::reram
