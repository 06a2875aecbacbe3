// SME's layout of one layer, built block by block: squeezed plane blocks packed next-fit
// block-diagonally, and the sparse ones moved into residual crossbars whose wordlines carry
// delayed inputs so that every bit plane of an output shares its bitline.
#include "tessera/reram/layout.h"

#include <algorithm>

#include "tessera/core/error.h"

namespace tessera::reram {
namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A squeezed block: the rows (within group g) holding a non-zero of bit plane s of array a in a
// chunk of at most S_c non-zero columns of that plane.
struct Block {
  int64_t g;
  int a, s;
  std::vector<int64_t> rows, cols;
};

// The layer's weights as the layout reads them.
struct Weights {
  const int32_t* q;
  int64_t groups, R, C;
  int c, n_s;

  int32_t at(int64_t g, int64_t co, int64_t r) const { return q[(g * C + co) * R + r]; }
  // Level of bit-plane slice s of array a (0: positive, 1: negative) of one weight.
  int32_t slice(int32_t v, int a, int s) const {
    if (v == 0 || (v < 0) != (a == 1)) return 0;
    return ((v < 0 ? -v : v) >> (s * c)) & ((1 << c) - 1);
  }
  // Bit s set when slice s of |v| is non-zero.
  uint32_t nonzero_slices(int32_t v) const {
    const uint32_t m = static_cast<uint32_t>(v < 0 ? -v : v);
    if (c == 1) return m;
    uint32_t out = 0;
    for (int s = 0; s < n_s; ++s) out |= ((m >> (s * c)) & ((1u << c) - 1)) != 0 ? 1u << s : 0u;
    return out;
  }
};

std::vector<Block> squeezed_blocks(const Weights& w, int64_t s_rows, int64_t s_cols) {
  const int64_t n_l = 2 * int64_t{w.n_s};
  const int64_t tiles = ceil_div(w.C, s_cols);
  std::vector<Block> blocks;
  std::vector<int32_t> count(static_cast<size_t>(n_l * tiles * w.R));
  std::vector<int64_t> chunk(static_cast<size_t>(n_l * w.C));
  for (int64_t g = 0; g < w.groups; ++g) {
    std::vector<std::vector<int64_t>> cols(n_l);
    for (int64_t co = 0; co < w.C; ++co) {
      uint32_t planes[2] = {0u, 0u};  // non-zero slices of the column, per array
      for (int64_t r = 0; r < w.R; ++r) {
        const int32_t v = w.at(g, co, r);
        if (v != 0) planes[v < 0 ? 1 : 0] |= w.nonzero_slices(v);
      }
      for (int64_t l = 0; l < n_l; ++l) {
        const bool any = (planes[l / w.n_s] >> (l % w.n_s)) & 1u;
        chunk[l * w.C + co] = any ? static_cast<int64_t>(cols[l].size()) / s_cols : -1;
        if (any) cols[l].push_back(co);
      }
    }
    std::fill(count.begin(), count.end(), 0);
    for (int64_t co = 0; co < w.C; ++co) {
      for (int64_t r = 0; r < w.R; ++r) {
        const int32_t v = w.at(g, co, r);
        if (v == 0) continue;
        const int64_t base = v < 0 ? w.n_s : 0;
        for (uint32_t bits = w.nonzero_slices(v); bits != 0; bits &= bits - 1) {
          const int64_t l = base + __builtin_ctz(bits);
          ++count[(l * tiles + chunk[l * w.C + co]) * w.R + r];
        }
      }
    }
    for (int64_t l = 0; l < n_l; ++l) {
      for (int64_t k = 0; k * s_cols < static_cast<int64_t>(cols[l].size()); ++k) {
        const auto first = cols[l].begin() + k * s_cols;
        const std::vector<int64_t> chunk_cols(
            first, first + std::min<int64_t>(s_cols, cols[l].size() - k * s_cols));
        std::vector<int64_t> rows;
        for (int64_t r = 0; r < w.R; ++r) {
          if (count[(l * tiles + k) * w.R + r] > 0) rows.push_back(r);
        }
        for (size_t done = 0; done < rows.size(); done += s_rows) {
          const auto begin = rows.begin() + static_cast<int64_t>(done);
          blocks.push_back({g,
                            static_cast<int>(l / w.n_s),
                            static_cast<int>(l % w.n_s),
                            {begin, begin + std::min<int64_t>(s_rows, rows.size() - done)},
                            chunk_cols});
        }
      }
    }
  }
  return blocks;
}

// Packs the blocks that stay next-fit, block-diagonally (mapping.cpp's rule).
void pack_plane_blocks(const std::vector<Block>& blocks, const std::vector<uint8_t>& moved,
                       const Weights& w, int64_t s_rows, int64_t s_cols, bool keep,
                       LayerLayout& out) {
  int64_t used_rows = 0, used_cols = 0;
  bool open = false;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (moved[i]) continue;
    const Block& b = blocks[i];
    const int64_t h = static_cast<int64_t>(b.rows.size()), wd = static_cast<int64_t>(b.cols.size());
    if (!open || used_rows + h > s_rows || used_cols + wd > s_cols) {
      ++out.crossbars;
      used_rows = used_cols = 0;
      open = true;
      if (keep) out.physical.emplace_back();
    }
    out.mapped_cells += h * wd;
    out.columns_used += wd;
    out.index_entries += h;
    if (keep) {
      PhysicalCrossbar& x = out.physical.back();
      for (int64_t r : b.rows) x.rows.push_back({b.g * w.R + r, 0});
      for (int64_t co : b.cols) x.cols.push_back({b.g * w.C + co, b.s * w.c, b.a == 1 ? -1 : 1});
      for (int64_t i_r = 0; i_r < h; ++i_r) {
        for (int64_t i_c = 0; i_c < wd; ++i_c) {
          const int32_t v = w.slice(w.at(b.g, b.cols[i_c], b.rows[i_r]), b.a, b.s);
          if (v != 0)
            x.cells.push_back(
                {static_cast<int32_t>(used_rows + i_r), static_cast<int32_t>(used_cols + i_c), v});
        }
      }
    }
    used_rows += h;
    used_cols += wd;
    out.max_cols = std::max(out.max_cols, used_cols);
  }
}

// Moves the non-zeros of the marked blocks into residual crossbars: bitlines (output, sign) in
// output order cut into chunks of S_c, and in each chunk the wordlines (input, plane) holding a
// moved non-zero, cut into crossbars of S_r.
void pack_residual(const std::vector<Block>& blocks, const std::vector<uint8_t>& moved,
                   const Weights& w, int64_t s_rows, int64_t s_cols, bool keep, LayerLayout& out) {
  struct Moved {
    int64_t wordline, bitline;  // (g * R + r) * n_s + s and (g * C + co) * 2 + a
    int32_t value;
  };
  std::vector<Moved> cells;
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (!moved[i]) continue;
    const Block& b = blocks[i];
    for (int64_t co : b.cols) {
      for (int64_t r : b.rows) {
        const int32_t v = w.slice(w.at(b.g, co, r), b.a, b.s);
        if (v != 0) cells.push_back({(b.g * w.R + r) * w.n_s + b.s, (b.g * w.C + co) * 2 + b.a, v});
      }
    }
  }
  if (cells.empty()) return;
  out.moved_cells = static_cast<int64_t>(cells.size());
  std::vector<int64_t> bit_id(static_cast<size_t>(2 * w.groups * w.C), -1);
  for (const Moved& m : cells) bit_id[m.bitline] = 0;
  std::vector<Bitline> bitlines;
  for (size_t k = 0; k < bit_id.size(); ++k) {
    if (bit_id[k] < 0) continue;
    bit_id[k] = static_cast<int64_t>(bitlines.size());
    bitlines.push_back({static_cast<int64_t>(k / 2), 0, k % 2 == 1 ? -1 : 1});
  }
  const int64_t n_chunks = ceil_div(static_cast<int64_t>(bitlines.size()), s_cols);
  const int64_t n_words = w.groups * w.R * w.n_s;
  // word_row[chunk * n_words + wordline]: the wordline's row among its chunk's (-1: unused).
  std::vector<int64_t> word_row(static_cast<size_t>(n_chunks * n_words), -1);
  for (const Moved& m : cells) word_row[(bit_id[m.bitline] / s_cols) * n_words + m.wordline] = 0;
  std::vector<int64_t> first_crossbar(n_chunks);
  for (int64_t k = 0; k < n_chunks; ++k) {
    const int64_t width = std::min<int64_t>(s_cols, bitlines.size() - k * s_cols);
    first_crossbar[k] = static_cast<int64_t>(out.physical.size());
    int64_t rows = 0;
    for (int64_t word = 0; word < n_words; ++word) {
      int64_t& row = word_row[k * n_words + word];
      if (row < 0) continue;
      row = rows++;
      if (!keep) continue;
      if (row % s_rows == 0) {
        out.physical.push_back({true, {}, {}, {}});
        out.physical.back().cols.assign(bitlines.begin() + k * s_cols,
                                        bitlines.begin() + k * s_cols + width);
      }
      out.physical.back().rows.push_back({word / w.n_s, static_cast<int>(word % w.n_s) * w.c});
    }
    const int64_t n = ceil_div(rows, s_rows);
    out.residual_crossbars += n;
    out.mapped_cells += rows * width;
    out.columns_used += n * width;
    out.residual_columns += n * width;
    out.index_entries += rows + n * width;  // each wordline's input + delay, each bitline's output
    out.max_cols = std::max(out.max_cols, width);
  }
  for (const Moved& m : cells)
    out.residual_delay =
        std::max<int>(out.residual_delay, static_cast<int>(m.wordline % w.n_s) * w.c);
  out.crossbars += out.residual_crossbars;
  if (!keep) return;
  for (const Moved& m : cells) {
    const int64_t k = bit_id[m.bitline] / s_cols;
    const int64_t row = word_row[k * n_words + m.wordline];
    out.physical[first_crossbar[k] + row / s_rows].cells.push_back(
        {static_cast<int32_t>(row % s_rows), static_cast<int32_t>(bit_id[m.bitline] % s_cols),
         m.value});
  }
}

LayerLayout build(const std::vector<Block>& blocks, double residual_fill, const Weights& w,
                  int64_t s_rows, int64_t s_cols, bool keep) {
  std::vector<uint8_t> moved(blocks.size(), 0);
  for (size_t i = 0; i < blocks.size(); ++i) {
    const double area = static_cast<double>(blocks[i].rows.size() * blocks[i].cols.size());
    moved[i] = area < residual_fill * static_cast<double>(s_rows * s_cols) ? 1 : 0;
  }
  LayerLayout out;
  pack_plane_blocks(blocks, moved, w, s_rows, s_cols, keep, out);
  pack_residual(blocks, moved, w, s_rows, s_cols, keep, out);
  return out;
}

}  // namespace

LayerLayout sme_layout(const workload::Layer& layer, const quant::QuantizedTensor& values,
                       const HardwareSpec& spec, double residual_fill, bool keep_crossbars) {
  spec.validate();
  TESSERA_CHECK(spec.weight_encoding == WeightEncoding::Differential,
                "reram: the SME layout of layer '{}' needs the differential encoding", layer.name);
  TESSERA_CHECK(residual_fill >= 0 && residual_fill <= 1,
                "reram: residual_fill = {} must be in [0, 1]", residual_fill);
  TESSERA_CHECK(residual_fill == 0 || spec.dac_bits == 1,
                "reram: the residual crossbar delays bit-serial inputs; dac_bits = {} must be 1",
                spec.dac_bits);
  const int64_t groups = layer.kind == workload::OpKind::Conv2d ? layer.groups : 1;
  const torch::Tensor q = values.values.contiguous();
  TESSERA_CHECK(
      q.scalar_type() == torch::kInt32 && q.numel() == layer.out_channels * layer.weight_rows(),
      "reram: weights '{}' do not fit layer '{}'", values.name, layer.name);
  const int32_t q_max = (1 << (spec.weight_bits - 1)) - 1;
  const int32_t lo = q.min().item<int32_t>(), hi = q.max().item<int32_t>();
  TESSERA_CHECK(lo >= -q_max && hi <= q_max, "reram: a weight of layer '{}' is outside [-{}, {}]",
                layer.name, q_max, q_max);
  const Weights w{q.data_ptr<int32_t>(),       groups,         layer.weight_rows(),
                  layer.out_channels / groups, spec.cell_bits, spec.slices_per_weight()};
  const std::vector<Block> blocks = squeezed_blocks(w, spec.crossbar_rows, spec.crossbar_cols);
  LayerLayout plain = build(blocks, 0.0, w, spec.crossbar_rows, spec.crossbar_cols, false);
  if (residual_fill > 0) {
    LayerLayout with =
        build(blocks, residual_fill, w, spec.crossbar_rows, spec.crossbar_cols, false);
    if (with.crossbars < plain.crossbars) {
      return keep_crossbars
                 ? build(blocks, residual_fill, w, spec.crossbar_rows, spec.crossbar_cols, true)
                 : with;
    }
  }
  return keep_crossbars ? build(blocks, 0.0, w, spec.crossbar_rows, spec.crossbar_cols, true)
                        : plain;
}

std::vector<int64_t> layout_vmm(const LayerLayout& layout, const std::vector<int64_t>& x,
                                int64_t outputs) {
  TESSERA_CHECK(static_cast<int64_t>(layout.physical.size()) == layout.crossbars,
                "reram: layout_vmm needs the crossbars (sme_layout with keep_crossbars)");
  std::vector<int64_t> y(static_cast<size_t>(outputs), 0);
  for (const PhysicalCrossbar& xb : layout.physical) {
    for (const Cell& cell : xb.cells) {
      const Wordline& in = xb.rows.at(cell.row);
      const Bitline& out = xb.cols.at(cell.col);
      TESSERA_CHECK(in.input >= 0 && in.input < static_cast<int64_t>(x.size()) && out.output >= 0 &&
                        out.output < outputs,
                    "reram: layout_vmm: input {} / output {} out of range", in.input, out.output);
      y[out.output] += out.sign * cell.value * x[in.input] * (int64_t{1} << (in.delay + out.shift));
    }
  }
  return y;
}

}  // namespace tessera::reram
