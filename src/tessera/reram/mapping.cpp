// Crossbar counting for the baseline (ISAAC/NeuroSim) layout and SME's splicing and squeeze-out.
// One pass over the integer weights per layer marks, for every logical crossbar column block,
// which rows hold a non-zero slice; counts, zero crossbars and packing follow from those flags.
#include "tessera/reram/mapping.h"

#include <time.h>

#include <fmt/format.h>

#include <algorithm>

#include "tessera/core/error.h"
#include "tessera/core/timer.h"
#include "tessera/reram/layout.h"

namespace tessera::reram {

std::string MappingOptions::describe() const {
  if (!splice && !squeeze) return "baseline";
  std::string s = splice ? "splice" : "";
  if (squeeze) s += splice ? "+squeeze" : "squeeze";
  if (splice && squeeze && residual_fill > 0) s += fmt::format("+residual({:g})", residual_fill);
  return s;
}

double LayerStats::utilization(const HardwareSpec& spec) const {
  const double cells = static_cast<double>(crossbars) * spec.crossbar_rows * spec.crossbar_cols;
  return cells > 0 ? mapped_cells / cells : 0.0;
}

double LayerStats::nonzero_density(const HardwareSpec& spec) const {
  const double cells = static_cast<double>(crossbars) * spec.crossbar_rows * spec.crossbar_cols;
  return cells > 0 ? nonzero_cells / cells : 0.0;
}

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// CPU time of the calling thread in seconds (POSIX CLOCK_THREAD_CPUTIME_ID).
double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// One block of surviving rows x columns after squeeze-out, placed block-diagonally.
struct Block {
  int64_t rows, cols;
};

// Next-fit block-diagonal packing: a crossbar takes blocks while their rows and their columns
// both still fit. Returns the crossbar count; `max_cols` gets the widest crossbar's columns.
int64_t pack_blocks(const std::vector<Block>& blocks, int64_t s_rows, int64_t s_cols,
                    int64_t& max_cols) {
  int64_t crossbars = 0, used_rows = 0, used_cols = 0;
  max_cols = 0;
  for (const Block& b : blocks) {
    if (crossbars == 0 || used_rows + b.rows > s_rows || used_cols + b.cols > s_cols) {
      ++crossbars;
      used_rows = 0;
      used_cols = 0;
    }
    used_rows += b.rows;
    used_cols += b.cols;
    max_cols = std::max(max_cols, used_cols);
  }
  return crossbars;
}

void add_costs(LayerStats& st, const HardwareSpec& spec, int64_t max_cols) {
  // The residual crossbars run residual_delay extra cycles (their inputs are delayed).
  const int cycles = spec.input_cycles(), residual_cycles = cycles + st.residual_delay;
  st.crossbar_reads = (st.crossbars - st.residual_crossbars) * st.positions * cycles +
                      st.residual_crossbars * st.positions * residual_cycles;
  st.adc_conversions = (st.columns_used - st.residual_columns) * st.positions * cycles +
                       st.residual_columns * st.positions * residual_cycles;
  // Each conversion is shifted by its slice weight and added into its output once.
  st.shift_adds = st.adc_conversions;
  st.adcs = st.crossbars * ceil_div(spec.crossbar_cols, spec.columns_per_adc);
  const auto& x = spec.crossbar;
  const auto& a = spec.adc;
  const auto& s = spec.shift_add;
  if (x.energy_pj || a.energy_pj || s.energy_pj) {
    st.energy_pj = st.crossbar_reads * x.energy_pj.value_or(0.0) +
                   st.adc_conversions * a.energy_pj.value_or(0.0) +
                   st.shift_adds * s.energy_pj.value_or(0.0);
  }
  if (x.latency_ns || a.latency_ns) {
    // All crossbars of a layer run in parallel (weight-stationary); the ADC is time-multiplexed
    // over the columns that share it.
    st.latency_ns = static_cast<double>(st.positions) *
                    (st.residual_crossbars > 0 ? residual_cycles : cycles) *
                    (x.latency_ns.value_or(0.0) +
                     ceil_div(std::max<int64_t>(max_cols, 1), spec.columns_per_adc) *
                         a.latency_ns.value_or(0.0));
  }
  if (x.area_um2 || a.area_um2 || s.area_um2) {
    st.area_um2 = st.crossbars * x.area_um2.value_or(0.0) +
                  st.adcs * (a.area_um2.value_or(0.0) + s.area_um2.value_or(0.0));
  }
}

}  // namespace

LayerStats map_layer(const workload::Layer& layer, const quant::QuantizedTensor* values,
                     const HardwareSpec& spec, const MappingOptions& options) {
  TESSERA_CHECK(layer.kind == workload::OpKind::Conv2d || layer.kind == workload::OpKind::Linear,
                "reram: layer '{}' is a {}, which has no weights to map", layer.name,
                workload::to_string(layer.kind));
  layer.validate();
  spec.validate();
  const int64_t groups = layer.kind == workload::OpKind::Conv2d ? layer.groups : 1;
  const int64_t R = layer.weight_rows();
  const int64_t C = layer.out_channels / groups;
  const int64_t s_rows = spec.crossbar_rows, s_cols = spec.crossbar_cols;
  const int n_s = spec.slices_per_weight();
  const int n_arrays = spec.arrays();
  const int c = spec.cell_bits;
  const int64_t n_l = options.splice ? int64_t{n_arrays} * n_s : n_arrays;  // logical matrices
  const int64_t W = options.splice ? C : C * n_s;                           // their columns

  LayerStats st;
  st.name = layer.name;
  st.kind = workload::to_string(layer.kind);
  st.rows = R;
  st.cols = C;
  st.groups = groups;
  st.weights = layer.weight_count();
  st.positions = layer.out_h * layer.out_w;
  st.mapped_cells = groups * n_arrays * R * C * n_s;

  // Layout without squeeze-out: the formulas of research/hw_security.md 2.2.
  const int64_t tiles_r = ceil_div(R, s_rows), tiles_c = ceil_div(W, s_cols);
  const bool packed = groups > 1 && spec.pack_groups && R <= s_rows && W <= s_cols;
  const int64_t per_crossbar = packed ? std::min(s_rows / R, s_cols / W) : 1;
  int64_t max_cols = 0;
  if (packed) {
    st.crossbars_before_squeeze = n_l * ceil_div(groups, per_crossbar);
    st.columns_used = n_l * groups * W;
    max_cols = std::min(groups, per_crossbar) * W;
  } else {
    st.crossbars_before_squeeze = groups * n_l * tiles_r * tiles_c;
    st.columns_used = groups * n_l * tiles_r * W;
    max_cols = std::min(W, s_cols);
  }
  st.crossbars = st.crossbars_before_squeeze;

  TESSERA_CHECK(values != nullptr || !options.squeeze,
                "reram: squeeze-out of layer '{}' needs weight values (map a model, or a "
                "workload with weights)",
                layer.name);
  if (values == nullptr) {
    add_costs(st, spec, max_cols);
    return st;
  }

  TESSERA_CHECK(values->bits == spec.weight_bits,
                "reram: layer '{}' weights are {}-bit but the spec has weight_bits = {}",
                layer.name, values->bits, spec.weight_bits);
  TESSERA_CHECK(values->values.defined() && values->values.scalar_type() == torch::kInt32 &&
                    values->values.dim() >= 2 && values->values.size(0) == layer.out_channels &&
                    values->values.numel() == layer.out_channels * R,
                "reram: weights '{}' of shape {} do not fit layer '{}' ({} outputs x {} rows)",
                values->name, c10::str(values->values.sizes()), layer.name, layer.out_channels, R);
  st.has_values = true;
  const torch::Tensor contiguous = values->values.contiguous();
  const int32_t* q = contiguous.data_ptr<int32_t>();
  const int b = spec.weight_bits;
  const bool differential = spec.weight_encoding == WeightEncoding::Differential;
  const int32_t q_max = (1 << (b - 1)) - 1;
  const int32_t q_min = differential ? -q_max : -(1 << (b - 1));
  const uint32_t code_mask = (1u << b) - 1;
  // Bits of a code that mark the non-zero slices: for 2-bit cells, fold the high bit of each
  // slice onto its low bit.
  uint32_t slice_low_bits = 0;
  for (int s = 0; s < n_s; ++s) slice_low_bits |= 1u << (s * c);
  auto nonzero_slices = [&](uint32_t code) {
    return c == 1 ? code : ((code | (code >> 1)) & slice_low_bits);
  };

  // flags[(l * tiles_c + chunk) * R + r]: row r holds a non-zero slice in column block `chunk`
  // of logical matrix l (with squeeze-out, blocks are formed after dropping zero columns).
  // plain_flags: the same for the unsqueezed blocks (j / S_c), kept with squeeze-out only, so
  // that the zero crossbars of the unsqueezed layout come out of the same pass.
  const bool need_plain = options.squeeze && !packed;
  std::vector<uint8_t> flags(static_cast<size_t>(n_l * tiles_c * R));
  std::vector<uint8_t> plain_flags(need_plain ? flags.size() : 0);
  std::vector<int64_t> block_cols(n_l * tiles_c);  // non-zero columns per block (squeeze-out)
  std::vector<int64_t> rank(n_l);
  std::vector<int64_t> chunk_of(static_cast<size_t>(n_arrays) * n_s);
  std::vector<int64_t> plain_chunk_of(chunk_of.size());
  std::vector<uint8_t> group_nonzero(static_cast<size_t>(groups * n_l));
  std::vector<Block> blocks;
  int64_t zero_crossbars = 0, nonzero_cells = 0, index_entries = 0;
  // The array a weight lives in and its stored code.
  auto array_and_code = [&](int32_t v, int& a) -> uint32_t {
    if (!differential) {
      a = 0;
      return static_cast<uint32_t>(v) & code_mask;
    }
    a = v < 0 ? 1 : 0;
    return static_cast<uint32_t>(v < 0 ? -v : v);
  };
  auto count_zero_tiles = [&](const std::vector<uint8_t>& f_all) {
    for (int64_t l = 0; l < n_l; ++l) {
      for (int64_t chunk = 0; chunk < tiles_c; ++chunk) {
        const uint8_t* f = &f_all[(l * tiles_c + chunk) * R];
        for (int64_t rt = 0; rt < tiles_r; ++rt) {
          bool any = false;
          for (int64_t r = rt * s_rows; r < std::min(R, (rt + 1) * s_rows) && !any; ++r) any = f[r];
          zero_crossbars += any ? 0 : 1;
        }
      }
    }
  };

  for (int64_t g = 0; g < groups; ++g) {
    std::fill(flags.begin(), flags.end(), 0);
    std::fill(plain_flags.begin(), plain_flags.end(), 0);
    std::fill(block_cols.begin(), block_cols.end(), 0);
    std::fill(rank.begin(), rank.end(), 0);
    for (int64_t co = 0; co < C; ++co) {
      const int32_t* w = q + (g * C + co) * R;
      uint32_t column_bits[2] = {0u, 0u};
      int32_t lo = 0, hi = 0;
      for (int64_t r = 0; r < R; ++r) {
        const int32_t v = w[r];
        lo = std::min(lo, v);
        hi = std::max(hi, v);
        int a;
        const uint32_t code = array_and_code(v, a);
        column_bits[a] |= code;
      }
      TESSERA_CHECK(lo >= q_min && hi <= q_max,
                    "reram: weight {} of layer '{}' is outside [{}, {}] for {}-bit {}",
                    lo < q_min ? lo : hi, layer.name, q_min, q_max, b,
                    weight_encoding_name(spec.weight_encoding));
      for (int a = 0; a < n_arrays; ++a) {
        const uint32_t nz = nonzero_slices(column_bits[a]);
        for (int s = 0; s < n_s; ++s) {
          const int64_t l = options.splice ? int64_t{a} * n_s + s : a;
          const int64_t j = options.splice ? co : co * n_s + s;
          int64_t chunk = j / s_cols;
          plain_chunk_of[a * n_s + s] = chunk;
          if (options.squeeze) {
            const bool column_nonzero = (nz >> (s * c)) & 1u;
            chunk = column_nonzero ? rank[l]++ / s_cols : 0;
            if (column_nonzero) ++block_cols[l * tiles_c + chunk];
          }
          chunk_of[a * n_s + s] = chunk;
        }
      }
      for (int64_t r = 0; r < R; ++r) {
        if (w[r] == 0) continue;
        int a;
        uint32_t bits = nonzero_slices(array_and_code(w[r], a));
        while (bits != 0) {
          const int s = __builtin_ctz(bits) / c;
          bits &= bits - 1;
          const int64_t l = options.splice ? int64_t{a} * n_s + s : a;
          flags[(l * tiles_c + chunk_of[a * n_s + s]) * R + r] = 1;
          if (need_plain) plain_flags[(l * tiles_c + plain_chunk_of[a * n_s + s]) * R + r] = 1;
          ++nonzero_cells;
        }
      }
    }
    if (!packed) count_zero_tiles(options.squeeze ? plain_flags : flags);
    for (int64_t l = 0; l < n_l; ++l) {
      for (int64_t chunk = 0; chunk < tiles_c; ++chunk) {
        const uint8_t* f = &flags[(l * tiles_c + chunk) * R];
        int64_t h = 0;
        for (int64_t r = 0; r < R; ++r) h += f[r];
        if (h > 0) group_nonzero[g * n_l + l] = 1;
        if (options.squeeze && h > 0) {
          index_entries += h;
          for (int64_t done = 0; done < h; done += s_rows) {
            blocks.push_back({std::min(s_rows, h - done), block_cols[l * tiles_c + chunk]});
          }
        }
      }
    }
  }
  if (packed) {
    // Zero crossbars of the packed (block-diagonal) layout, from per-group flags.
    for (int64_t l = 0; l < n_l; ++l) {
      for (int64_t g0 = 0; g0 < groups; g0 += per_crossbar) {
        bool any = false;
        for (int64_t g = g0; g < std::min(groups, g0 + per_crossbar); ++g) {
          any = any || group_nonzero[g * n_l + l];
        }
        zero_crossbars += any ? 0 : 1;
      }
    }
  }
  st.nonzero_cells = nonzero_cells;
  if (options.squeeze) {
    st.crossbars = pack_blocks(blocks, s_rows, s_cols, max_cols);
    st.mapped_cells = 0;
    st.columns_used = 0;
    for (const Block& blk : blocks) {
      st.mapped_cells += blk.rows * blk.cols;
      st.columns_used += blk.cols;
    }
    st.index_entries = index_entries;
  }
  if (options.splice && options.squeeze && options.residual_fill > 0) {
    const LayerLayout lay = sme_layout(layer, *values, spec, options.residual_fill, false);
    st.crossbars = lay.crossbars;
    st.mapped_cells = lay.mapped_cells;
    st.columns_used = lay.columns_used;
    st.index_entries = lay.index_entries;
    st.residual_crossbars = lay.residual_crossbars;
    st.residual_columns = lay.residual_columns;
    st.moved_cells = lay.moved_cells;
    st.residual_delay = lay.residual_delay;
    max_cols = lay.max_cols;
  }
  st.zero_crossbars = zero_crossbars;
  add_costs(st, spec, max_cols);
  return st;
}

NetworkStats map_network(const workload::Workload& workload,
                         const std::vector<quant::QuantizedTensor>& values,
                         const HardwareSpec& spec, const MappingOptions& options) {
  workload.validate();
  spec.validate();
  const Timer timer;
  const double cpu_start = thread_cpu_seconds();
  const std::vector<workload::Layer> layers = workload.weighted_layers();
  TESSERA_CHECK(values.empty() || values.size() == layers.size(),
                "reram: {} weight tensors given for {} weighted layers of '{}'", values.size(),
                layers.size(), workload.model);
  TESSERA_CHECK(!layers.empty(), "reram: workload '{}' has no Conv2d or Linear layer to map",
                workload.model);
  NetworkStats net;
  net.model = workload.model;
  net.spec = spec;
  net.options = options;
  net.total.name = "total";
  net.total.kind = "network";
  net.total.has_values = !values.empty();
  for (size_t i = 0; i < layers.size(); ++i) {
    LayerStats st = map_layer(layers[i], values.empty() ? nullptr : &values[i], spec, options);
    LayerStats& t = net.total;
    t.weights += st.weights;
    t.crossbars += st.crossbars;
    t.crossbars_before_squeeze += st.crossbars_before_squeeze;
    t.zero_crossbars += st.zero_crossbars;
    t.mapped_cells += st.mapped_cells;
    t.nonzero_cells += st.nonzero_cells;
    t.columns_used += st.columns_used;
    t.index_entries += st.index_entries;
    t.residual_crossbars += st.residual_crossbars;
    t.residual_columns += st.residual_columns;
    t.moved_cells += st.moved_cells;
    t.residual_delay = std::max(t.residual_delay, st.residual_delay);
    t.positions += st.positions;
    t.crossbar_reads += st.crossbar_reads;
    t.adc_conversions += st.adc_conversions;
    t.shift_adds += st.shift_adds;
    t.adcs += st.adcs;
    if (st.energy_pj) t.energy_pj = t.energy_pj.value_or(0.0) + *st.energy_pj;
    if (st.latency_ns) t.latency_ns = t.latency_ns.value_or(0.0) + *st.latency_ns;
    if (st.area_um2) t.area_um2 = t.area_um2.value_or(0.0) + *st.area_um2;
    net.layers.push_back(std::move(st));
  }
  net.map_seconds = timer.elapsed_s();
  net.map_cpu_seconds = thread_cpu_seconds() - cpu_start;
  return net;
}

namespace {

nlohmann::json stat(double value, const std::string& unit, const std::string& description) {
  return {{"value", value}, {"unit", unit}, {"description", description}};
}

nlohmann::json layer_json(const LayerStats& st, const HardwareSpec& spec) {
  nlohmann::json s;
  s["crossbars"] = stat(st.crossbars, "crossbars", "physical crossbars after the mapping");
  s["crossbars_before_squeeze"] = stat(st.crossbars_before_squeeze, "crossbars",
                                       "crossbars of the same mapping without squeeze-out");
  s["zero_crossbars"] =
      stat(st.zero_crossbars, "crossbars",
           "all-zero crossbars of the unsqueezed layout (removed by squeeze-out)");
  s["mapped_cells"] = stat(st.mapped_cells, "cells", "cells holding a weight slice, zero or not");
  s["nonzero_cells"] = stat(st.nonzero_cells, "cells", "cells holding a non-zero weight slice");
  s["utilization"] = stat(st.utilization(spec), "fraction", "mapped cells / crossbar cells");
  s["nonzero_density"] =
      stat(st.nonzero_density(spec), "fraction", "non-zero cells / crossbar cells");
  s["columns_used"] = stat(st.columns_used, "bitlines", "bitlines in use over all crossbars");
  s["index_entries"] =
      stat(st.index_entries, "entries", "row-remap entries of squeeze-out and residual routes");
  s["residual_crossbars"] =
      stat(st.residual_crossbars, "crossbars", "residual crossbars (part of crossbars)");
  s["moved_cells"] =
      stat(st.moved_cells, "cells", "non-zero cells moved from sparse blocks into the residual");
  s["residual_delay"] =
      stat(st.residual_delay, "cycles", "extra input cycles of the residual crossbars");
  s["crossbar_reads"] =
      stat(st.crossbar_reads, "reads/inference", "crossbar read cycles, one input bit each");
  s["adc_conversions"] = stat(st.adc_conversions, "conversions/inference", "ADC conversions");
  s["shift_adds"] = stat(st.shift_adds, "ops/inference", "periphery shift-and-add operations");
  s["adcs"] = stat(st.adcs, "ADCs", "ADC instances (columns_per_adc columns share one)");
  s["weights"] = stat(st.weights, "weights", "weight parameters mapped");
  if (st.energy_pj)
    s["energy"] = stat(*st.energy_pj, "pJ/inference", "crossbar + ADC + shift-add energy");
  if (st.latency_ns)
    s["latency"] = stat(*st.latency_ns, "ns/inference", "layer latency, crossbars in parallel");
  if (st.area_um2) s["area"] = stat(*st.area_um2, "um^2", "crossbar + ADC + shift-add area");
  return {{"name", st.name}, {"kind", st.kind},     {"rows", st.rows},
          {"cols", st.cols}, {"groups", st.groups}, {"stats", s}};
}

}  // namespace

nlohmann::json NetworkStats::to_json() const {
  nlohmann::json layers_json = nlohmann::json::array();
  for (const LayerStats& st : layers) layers_json.push_back(layer_json(st, spec));
  nlohmann::json total_json = layer_json(total, spec);
  total_json["stats"]["layers"] =
      stat(static_cast<double>(layers.size()), "layers", "weighted layers mapped");
  total_json["stats"]["map_time"] = stat(map_seconds, "s", "wall time of the mapping");
  total_json["stats"]["map_cpu_time"] =
      stat(map_cpu_seconds, "s", "CPU time of the mapping thread (one core)");
  return {{"model", model},
          {"spec", spec.to_json()},
          {"mapping", options.describe()},
          {"weights_known", total.has_values},
          {"total", total_json},
          {"layers", layers_json}};
}

}  // namespace tessera::reram
