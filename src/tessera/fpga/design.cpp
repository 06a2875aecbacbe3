// Design evaluation and the three baseline designs.
#include "tessera/fpga/design.h"

#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "tessera/core/error.h"

namespace tessera::fpga {

namespace {

// The largest Bm (a multiple of 1024, at most 50 x 1024 as in the RL action range) for which the
// spec fits; 0 when none does.
int64_t largest_fitting_bm(AcceleratorSpec& spec) {
  for (int64_t units = 50; units >= 1; --units) {
    spec.lut.bm = units * 1024;
    if (estimate_resources(spec).fits) return spec.lut.bm;
  }
  return 0;
}

// The fastest square LUT core (Dm = Dn, Dk, the largest Bm that fits) beside spec's DSP core,
// scored by `score` (network latency for a candidate spec). Throws when nothing fits.
template <typename Score>
AcceleratorSpec fastest_lut_core(AcceleratorSpec spec, const Score& score) {
  spec.lut.enabled = true;
  double best = std::numeric_limits<double>::infinity();
  AcceleratorSpec best_spec = spec;
  for (int64_t dk = 64; dk <= 256; dk += 64) {
    for (int64_t d = 1; d <= 50; ++d) {
      spec.lut.dk = dk;
      spec.lut.dm = spec.lut.dn = d;
      if (largest_fitting_bm(spec) == 0) break;  // a larger array fits even less
      const double s = score(spec);
      if (s < best) best = s, best_spec = spec;
    }
  }
  TESSERA_CHECK(std::isfinite(best), "fpga: no LUT core fits the device '{}' beside the DSP core",
                spec.device.name);
  return best_spec;
}

}  // namespace

nlohmann::json Design::to_json() const {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& p : precisions) layers.push_back({p.activation_bits, p.weight_bits});
  return {{"name", name}, {"spec", spec.to_json()}, {"precisions_aw", layers}, {"ratios", ratios}};
}

nlohmann::json DesignEvaluation::to_json() const {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : latency.layers) {
    layers.push_back({{"ratio", l.ratio},
                      {"lut_cols", l.lut_cols},
                      {"dsp_cols", l.dsp_cols},
                      {"lut_cycles", l.lut_cycles},
                      {"dsp_cycles", l.dsp_cycles}});
  }
  return {{"latency_ms", latency.ms},
          {"cycles", latency.cycles},
          {"valid", valid()},
          {"resources", resources.to_json()},
          {"layers", layers}};
}

DesignEvaluation evaluate_design(const std::vector<GemmShape>& gemms, const Design& design) {
  DesignEvaluation e;
  e.resources = estimate_resources(design.spec);
  e.latency = network_latency(gemms, design.precisions, design.spec, design.ratios);
  return e;
}

int dsp_share_bits(const GemmShape& gemm, const DspCoreConfig& core) {
  return dsp_eight_bit(gemm, core) ? core.edge_bits : core.middle_bits;
}

Table layer_table(const std::vector<GemmShape>& gemms, const Design& design,
                  const DesignEvaluation& evaluation) {
  Table t({"layer", "M", "K", "N", "LUT share", "LUT ch", "DSP ch", "LUT a/w bits", "DSP bits",
           "DSP kcycles", "LUT kcycles"});
  for (size_t i = 0; i < gemms.size(); ++i) {
    const GemmShape& g = gemms[i];
    const LayerLatency& l = evaluation.latency.layers[i];
    const LayerPrecision& p = design.precisions[i];
    t.add_row(
        {g.name, std::to_string(g.m), std::to_string(g.k), std::to_string(g.n),
         fmt::format("{:.2f}", l.ratio), std::to_string(l.lut_cols), std::to_string(l.dsp_cols),
         l.lut_cols > 0 ? fmt::format("{}/{}", p.activation_bits, p.weight_bits) : "-",
         l.dsp_cols > 0 ? std::to_string(dsp_share_bits(g, design.spec.dsp)) : "-",
         fmt::format("{:.1f}", l.dsp_cycles / 1e3), fmt::format("{:.1f}", l.lut_cycles / 1e3)});
  }
  return t;
}

std::vector<LayerPrecision> uniform_precisions(size_t n_layers, int bits) {
  return std::vector<LayerPrecision>(n_layers, LayerPrecision{bits, bits});
}

Design dsp_only_design(const std::vector<GemmShape>& gemms, const AcceleratorSpec& base) {
  Design d;
  d.name = "all-DSP (DPU-like, 8-bit)";
  d.spec = base;
  d.spec.lut.enabled = false;
  d.spec.dsp.enabled = true;
  d.spec.dsp.pack_middle = false;
  d.precisions = uniform_precisions(gemms.size(), 8);
  int64_t cols = (base.device.dsp - base.resources.shell_dsp) / base.dsp.rows;
  for (; cols >= 1; --cols) {
    d.spec.dsp.cols = cols;
    if (estimate_resources(d.spec).fits) break;
  }
  TESSERA_CHECK(cols >= 1, "fpga: no DSP array of {} rows fits the device '{}'", base.dsp.rows,
                base.device.name);
  return d;
}

Design lut_only_design(const std::vector<GemmShape>& gemms, const AcceleratorSpec& base, int bits) {
  Design d;
  d.name = fmt::format("all-LUT ({}-bit)", bits);
  d.precisions = uniform_precisions(gemms.size(), bits);
  AcceleratorSpec spec = base;
  spec.dsp.enabled = false;
  d.spec = fastest_lut_core(spec, [&](const AcceleratorSpec& s) {
    return network_latency(gemms, d.precisions, s).cycles;
  });
  return d;
}

Design mix_and_match_design(const std::vector<GemmShape>& gemms, const AcceleratorSpec& base,
                            int bits) {
  Design d;
  d.name = fmt::format("Mix&Match-style ({}-bit, one split)", bits);
  AcceleratorSpec spec = dsp_only_design(gemms, base).spec;
  spec.dsp.pack_middle = true;
  spec.dsp.middle_bits = bits;
  d.precisions = uniform_precisions(gemms.size(), bits);
  d.precisions.front() = d.precisions.back() = LayerPrecision{8, 8};
  // The DSP array keeps all but the columns the LUT core needs for its buffers.
  AcceleratorSpec best_spec = spec;
  double best = std::numeric_limits<double>::infinity();
  double best_ratio = 0.0;
  for (int64_t cols = spec.dsp.cols; cols >= std::max<int64_t>(1, spec.dsp.cols - 8); --cols) {
    AcceleratorSpec candidate = spec;
    candidate.dsp.cols = cols;
    double ratio_here = 0.0;
    const auto score = [&](const AcceleratorSpec& s) {
      double lowest = std::numeric_limits<double>::infinity();
      for (int j = 0; j <= 100; ++j) {
        const std::vector<double> ratios(gemms.size(), j / 100.0);
        const double c = network_latency(gemms, d.precisions, s, ratios).cycles;
        if (c < lowest) lowest = c, ratio_here = j / 100.0;
      }
      return lowest;
    };
    try {
      const AcceleratorSpec s = fastest_lut_core(candidate, score);
      const double c = score(s);
      if (c < best) best = c, best_spec = s, best_ratio = ratio_here;
    } catch (const Error&) {
      continue;  // no LUT core fits beside this many DSP columns: give up one more column
    }
  }
  TESSERA_CHECK(std::isfinite(best), "fpga: no Mix&Match-style design fits the device '{}'",
                base.device.name);
  d.spec = best_spec;
  d.ratios.assign(gemms.size(), best_ratio);
  return d;
}

}  // namespace tessera::fpga
