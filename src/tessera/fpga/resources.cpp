// Resource estimates of the two cores and the shell, and the budget check.
#include "tessera/fpga/resources.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace tessera::fpga {

ResourceUsage& ResourceUsage::operator+=(const ResourceUsage& other) {
  dsp += other.dsp;
  lut += other.lut;
  bram += other.bram;
  return *this;
}

nlohmann::json ResourceUsage::to_json() const {
  return {{"dsp", dsp}, {"lut", lut}, {"bram", bram}};
}

nlohmann::json ResourceReport::to_json() const {
  return {{"dsp_core", dsp_core.to_json()},
          {"lut_core", lut_core.to_json()},
          {"shell", shell.to_json()},
          {"total", total.to_json()},
          {"max_utilization", max_utilization},
          {"fits", fits},
          {"over", over}};
}

int64_t bram_blocks(int64_t banks, int64_t depth, int64_t width, int64_t bram_bits) {
  const int64_t bits = depth * width;
  return banks * ((bits + bram_bits - 1) / bram_bits);
}

ResourceUsage dsp_core_resources(const DspCoreConfig& core, const ResourceModel& model) {
  ResourceUsage u;
  if (!core.enabled) return u;
  const int64_t cells = core.rows * core.cols;
  u.dsp = cells;
  u.lut = static_cast<int64_t>(
      std::llround(model.lut_per_dsp * static_cast<double>(cells) + model.dsp_core_fixed_lut));
  u.bram = bram_blocks(1, core.lmem, core.rows * model.activation_bits, model.bram_bits) +
           bram_blocks(core.cols, 2 * core.rmem, core.rows * model.weight_bits, model.bram_bits);
  return u;
}

ResourceUsage lut_core_resources(const LutCoreConfig& core, const ResourceModel& model) {
  ResourceUsage u;
  if (!core.enabled) return u;
  const double units = static_cast<double>(core.dm * core.dn);
  u.lut =
      static_cast<int64_t>(std::llround(model.lut_per_bit * units * static_cast<double>(core.dk) +
                                        model.lut_per_unit * units + model.lut_core_fixed));
  u.bram = bram_blocks(core.dm, core.bm, core.dk, model.bram_bits) +
           bram_blocks(core.dn, core.rmem, core.dk, model.bram_bits);
  return u;
}

ResourceReport estimate_resources(const AcceleratorSpec& spec) {
  ResourceReport r;
  r.dsp_core = dsp_core_resources(spec.dsp, spec.resources);
  r.lut_core = lut_core_resources(spec.lut, spec.resources);
  r.shell = {spec.resources.shell_dsp, static_cast<int64_t>(std::llround(spec.resources.shell_lut)),
             spec.resources.shell_bram};
  r.total += r.dsp_core;
  r.total += r.lut_core;
  r.total += r.shell;
  const DeviceSpec& d = spec.device;
  const double u_dsp = static_cast<double>(r.total.dsp) / static_cast<double>(d.dsp);
  const double u_lut = static_cast<double>(r.total.lut) / static_cast<double>(d.lut);
  const double u_bram = static_cast<double>(r.total.bram) / static_cast<double>(d.bram);
  r.max_utilization = std::max({u_dsp, u_lut, u_bram});
  if (r.total.dsp > d.dsp) r.over = fmt::format("dsp {} > {}", r.total.dsp, d.dsp);
  if (r.total.lut > d.lut)
    r.over += fmt::format("{}lut {} > {}", r.over.empty() ? "" : ", ", r.total.lut, d.lut);
  if (r.total.bram > d.bram)
    r.over += fmt::format("{}bram {} > {}", r.over.empty() ? "" : ", ", r.total.bram, d.bram);
  r.fits = r.over.empty();
  return r;
}

}  // namespace tessera::fpga
