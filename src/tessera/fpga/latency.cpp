// The latency formulas of research/hw_security.md 1.3, term by term as in the authors'
// `cal_bismo`, `cal_dsp` and `cal_ratio` (the 16x16 DSP array generalised to rows x cols).
#include "tessera/fpga/latency.h"

#include <cmath>
#include <limits>

#include "tessera/core/error.h"

namespace tessera::fpga {

namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

std::vector<GemmShape> gemm_shapes(const workload::Workload& workload) {
  workload.validate();
  std::vector<GemmShape> gemms;
  for (const workload::Layer& layer : workload.weighted_layers()) {
    GemmShape g;
    g.name = layer.name;
    g.m = layer.out_h * layer.out_w;
    g.k = layer.weight_rows();
    g.n = layer.out_channels;
    TESSERA_CHECK(g.m > 0 && g.k > 0 && g.n > 0, "fpga: layer '{}' has an empty GEMM ({}x{}x{})",
                  layer.name, g.m, g.k, g.n);
    gemms.push_back(g);
  }
  TESSERA_CHECK(!gemms.empty(), "fpga: workload '{}' has no conv or linear layer", workload.model);
  gemms.front().edge = true;
  gemms.back().edge = true;
  return gemms;
}

int64_t lut_columns(int64_t n, double ratio) {
  // std::nearbyint rounds half to even in the default rounding mode, as Python's round() does.
  return static_cast<int64_t>(std::nearbyint(static_cast<double>(n) * ratio));
}

double lut_core_cycles(const GemmShape& gemm, int64_t n_cols, const LayerPrecision& precision,
                       const LutCoreConfig& core) {
  if (n_cols <= 0) return 0.0;
  const int64_t a = precision.activation_bits, w = precision.weight_bits;
  const int64_t tiles_m = ceil_div(gemm.m, core.dm);
  const int64_t tiles_n = ceil_div(n_cols, core.dn);
  const int64_t tiles_k = ceil_div(gemm.k, core.dk);
  const int64_t regions = core.bm / (tiles_k * a);  // LHS regions that fit the buffer
  if (regions == 0) return kInfinity;
  const int64_t fetches = ceil_div(tiles_m, regions);
  const int64_t last = tiles_m % regions;
  const int64_t iters =
      last != 0 ? regions * tiles_n * (fetches - 1) + last * tiles_n : regions * tiles_n * fetches;
  const double f = static_cast<double>(core.fetch_bits);
  // Fetch = base 32 + transfer 9 + payload / fetch width + sync 5; execute = (tk + 8) w a + 8.
  const double lhs_fetch = 32 + 9 + core.dm * (core.dk * a * tiles_k / f) + 5;
  const double rhs_fetch = 32 + 9 + core.dn * (tiles_k * w * core.dk / f) + 5;
  const double execute = static_cast<double>((tiles_k + 8) * w * a + 8);
  const double delta =
      lhs_fetch - 1 > execute ? 0.0 : 10 + static_cast<double>(regions - 3) * (execute - lhs_fetch);
  double receive = 0.0;
  if (iters > regions + 3) {
    if (fetches > 1) {
      receive = static_cast<double>((regions - 3) * (tiles_n - 1) * fetches + last) * execute;
    } else if (last > 3) {
      receive = static_cast<double>((last - 3) * (tiles_n - 1)) * execute;
    }
  }
  receive += delta * static_cast<double>(fetches);
  return 238 + lhs_fetch * static_cast<double>(iters) / static_cast<double>(tiles_n) +
         rhs_fetch * static_cast<double>(fetches * tiles_n) + receive;
}

bool dsp_eight_bit(const GemmShape& gemm, const DspCoreConfig& core) {
  return gemm.edge || !core.pack_middle;
}

double dsp_core_cycles(const GemmShape& gemm, int64_t n_cols, const DspCoreConfig& core,
                       bool eight_bit) {
  if (n_cols <= 0) return 0.0;
  // The repository's constants: 8-bit operands in the read costs, 64-bit fetches, two weight
  // buffers (Dr_Num), batch 1.
  constexpr double kBits = 8.0, kFetch = 64.0, kBuffers = 2.0, kBatch = 1.0, kBase = 32.0;
  const double in_ch = static_cast<double>(core.rows), out_ch = static_cast<double>(core.cols);
  const int64_t k_lanes = eight_bit ? core.rows : core.rows * core.pack;
  const int64_t tiles_k = ceil_div(gemm.k, k_lanes);
  const int64_t tiles_m = gemm.m;
  const int64_t tiles_n = ceil_div(n_cols, core.cols);
  const int64_t region_l = core.lmem / tiles_k;
  const int64_t region_r = core.rmem / tiles_k / 2;
  if (region_l == 0 || region_r == 0) return kInfinity;
  const int64_t full_l = tiles_m / region_l, last_l = tiles_m % region_l;
  const int64_t full_r = tiles_n / region_r, last_r = tiles_n % region_r;
  const double tk = static_cast<double>(tiles_k), rr = static_cast<double>(region_r);
  const double rl = static_cast<double>(region_l);
  const double lr = static_cast<double>(last_r), ll = static_cast<double>(last_l);
  const double w_words = in_ch * kBits / kFetch;  // 2 for a 16-wide array
  const double read_r = kBase + out_ch / kBuffers + tk * rr * w_words * (out_ch / kBuffers);
  const double read_l = kBase + kBatch + tk * 8 * w_words * kBatch;
  const double exec_lite = tk * rr * kBuffers;
  const double read_lite = tk * w_words * kBatch;
  const double sync = exec_lite > read_lite ? 0.0 : read_lite - exec_lite;
  double sync_last = 0.0;
  if (last_r != 0) {
    const double exec_last = tk * lr * kBuffers;
    sync_last = exec_last > read_lite ? 0.0 : read_lite - exec_last;
  }
  const double execute = tk * rr * rl * kBuffers * (1 + sync) + 6;
  const double lite_l =
      tk * ll * kBuffers * rr * (1 + sync) + read_r + kBase + kBatch + tk * 8 * w_words * kBatch;
  const double lite_r = tk * rl * kBuffers * lr * (1 + sync_last) + read_l + kBase + out_ch +
                        kBase + out_ch + tk * lr * w_words * (out_ch / kBuffers);
  const double lite_lr = tk * lr * ll * kBuffers * (1 + sync_last) + kBase + kBatch +
                         tk * 8 * w_words * kBatch + kBase + out_ch +
                         tk * lr * w_words * (out_ch / kBuffers);
  return static_cast<double>(full_l * full_r) * (execute + read_r + read_l) +
         static_cast<double>(full_r) * lite_l + static_cast<double>(full_l) * lite_r + lite_lr + 32;
}

LayerLatency layer_latency(const GemmShape& gemm, double ratio, const LayerPrecision& precision,
                           const DspCoreConfig& dsp, const LutCoreConfig& lut) {
  TESSERA_CHECK(ratio >= 0.0 && ratio <= 1.0, "fpga: split ratio {} of layer '{}' not in [0, 1]",
                ratio, gemm.name);
  TESSERA_CHECK(dsp.enabled || lut.enabled, "fpga: both cores are disabled");
  LayerLatency out;
  out.ratio = !lut.enabled ? 0.0 : (!dsp.enabled ? 1.0 : ratio);
  out.lut_cols = lut_columns(gemm.n, out.ratio);
  // The repository: ratio 1 means no DSP work at all, otherwise round(N * (1 - r)) columns.
  out.dsp_cols = out.ratio == 1.0 ? 0 : lut_columns(gemm.n, 1.0 - out.ratio);
  out.lut_cycles = lut_core_cycles(gemm, out.lut_cols, precision, lut);
  out.dsp_cycles = dsp_core_cycles(gemm, out.dsp_cols, dsp, dsp_eight_bit(gemm, dsp));
  return out;
}

double balanced_split(const GemmShape& gemm, const LayerPrecision& precision,
                      const DspCoreConfig& dsp, const LutCoreConfig& lut, int steps) {
  TESSERA_CHECK(steps >= 1 && steps <= 100000, "fpga: split steps {} not in [1, 100000]", steps);
  if (!lut.enabled) return 0.0;
  if (!dsp.enabled) return 1.0;
  const bool eight_bit = dsp_eight_bit(gemm, dsp);
  const double step = 1.0 / steps;
  const auto dsp_at = [&](double r) {
    return r == 1.0 ? 0.0 : dsp_core_cycles(gemm, lut_columns(gemm.n, 1.0 - r), dsp, eight_bit);
  };
  for (int j = 0; j <= steps; ++j) {
    const double r = j * step;  // numpy.arange's grid point
    const double lut_here = lut_core_cycles(gemm, lut_columns(gemm.n, r), precision, lut);
    if (dsp_at(r) < lut_here) {
      return (lut_here > dsp_at(r - step) ? j - 1 : j) / static_cast<double>(steps);
    }
  }
  return 1.0;
}

bool NetworkLatency::feasible() const { return std::isfinite(cycles); }

NetworkLatency network_latency(const std::vector<GemmShape>& gemms,
                               const std::vector<LayerPrecision>& precisions,
                               const AcceleratorSpec& spec, const std::vector<double>& ratios) {
  TESSERA_CHECK(precisions.size() == gemms.size(), "fpga: {} layer precisions for {} layers",
                precisions.size(), gemms.size());
  TESSERA_CHECK(ratios.empty() || ratios.size() == gemms.size(),
                "fpga: {} split ratios for {} layers", ratios.size(), gemms.size());
  NetworkLatency out;
  out.layers.reserve(gemms.size());
  for (size_t i = 0; i < gemms.size(); ++i) {
    precisions[i].validate("fpga: layer '" + gemms[i].name + "'");
    const double r =
        ratios.empty() ? balanced_split(gemms[i], precisions[i], spec.dsp, spec.lut) : ratios[i];
    out.layers.push_back(layer_latency(gemms[i], r, precisions[i], spec.dsp, spec.lut));
    out.cycles += out.layers.back().cycles();
  }
  out.ms = out.cycles / (spec.device.clock_mhz * 1e3);
  return out;
}

}  // namespace tessera::fpga
