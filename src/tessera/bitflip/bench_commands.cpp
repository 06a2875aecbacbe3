// Protect, attack and verify one quantized model (the file-level commands' work).
#include "tessera/bitflip/bench_commands.h"

#include <fmt/format.h>

#include "tessera/bitflip/bench.h"
#include "tessera/bitflip/deployed.h"
#include "tessera/bitflip/experiment.h"
#include "tessera/core/error.h"
#include "tessera/core/progress.h"
#include "tessera/core/seed.h"

namespace tessera::bitflip {
namespace {

std::string pct(double fraction) { return fmt::format("{:.2f}", 100.0 * fraction); }

}  // namespace

data::Dataset load_eval_set(const QuantizedModel& model, const data::ImageData& source, int64_t n) {
  const auto& config = model.model->config();
  data::Dataset test = data::load_images(source, "test", config.image_size);
  TESSERA_CHECK(test.channels() == config.in_channels && test.image_size() == config.image_size,
                "the model expects {}x{}x{} inputs but the data is {}x{}x{}", config.in_channels,
                config.image_size, config.image_size, test.channels(), test.image_size(),
                test.image_size());
  return n > 0 && n < test.size() ? test.head(n) : test;
}

// ---------------------------------------------------------------------------------------------
// protect

ProtectResult protect_model(const QuantizedModel& model, const RadarKey& key,
                            const RadarOptions& options) {
  const Radar radar(key, options, model.weights);
  ProtectResult out;
  out.golden = radar.sign(model.weights);
  out.n_layers = static_cast<int64_t>(model.n_layers());
  out.n_weights = model.n_weights();
  out.group_size = options.group_size;
  out.storage_fraction = static_cast<double>(out.golden.storage_bits()) /
                         static_cast<double>(model.n_weights() * model.bits);
  return out;
}

Table ProtectResult::table(int64_t file_bytes) const {
  Table table(
      {"layers", "weights", "G", "groups", "signature bits", "storage overhead %", "file bytes"});
  table.add_row({std::to_string(n_layers), std::to_string(n_weights), std::to_string(group_size),
                 std::to_string(golden.n_groups()), std::to_string(golden.storage_bits()),
                 fmt::format("{:.3f}", 100.0 * storage_fraction), std::to_string(file_bytes)});
  return table;
}

nlohmann::json ProtectResult::to_json() const {
  return {{"layers", n_layers},
          {"weights", n_weights},
          {"groups", golden.n_groups()},
          {"signature_bits", golden.storage_bits()},
          {"storage_fraction", storage_fraction}};
}

// ---------------------------------------------------------------------------------------------
// attack

void AttackRunOptions::validate() const {
  TESSERA_CHECK(attack.n_flips >= 1, "attack: n_flips must be >= 1, got {}", attack.n_flips);
  TESSERA_CHECK(attack_batch >= 1, "attack: attack_batch must be >= 1, got {}", attack_batch);
  TESSERA_CHECK(eval_size >= 0, "attack: eval_size must be >= 0, got {}", eval_size);
}

nlohmann::json AttackRunOptions::to_json() const {
  return {{"method", attack_method_name(attack.method)},
          {"flips", attack.n_flips},
          {"k_top", attack.pbfa.k_top},
          {"attack_batch", attack_batch},
          {"eval_size", eval_size}};
}

AttackRun attack_model(QuantizedModel& model, const data::Dataset& eval_set,
                       const data::Dataset* pool, const AttackRunOptions& options) {
  options.validate();
  seed_everything(options.attack.seed);
  torch::Tensor batch;
  if (options.attack.method == AttackMethod::pbfa) {
    TESSERA_CHECK(pool != nullptr, "attack: PBFA needs an attack pool");
    batch = sample_attack_batch(*pool, options.attack_batch, options.attack.seed);
  }
  AttackRun run;
  run.method = options.attack.method;
  run.eval_images = eval_set.size();
  run.clean_accuracy = evaluate(model, eval_set).accuracy;
  ProgressBar bar("bit flips", options.attack.n_flips);
  run.result = run_attack(model, batch, &eval_set, options.attack,
                          [&](const BitFlip&, double) { bar.update(); });
  bar.finish();
  return run;
}

Table AttackRun::table() const {
  Table table({"flip", "layer", "index", "bit", "old", "new", "accuracy %"});
  table.add_row({"0", "(clean)", "", "", "", "", pct(clean_accuracy)});
  for (size_t i = 0; i < result.flips.size(); ++i) {
    const BitFlip& f = result.flips[i];
    table.add_row({std::to_string(i + 1), f.layer, std::to_string(f.index), std::to_string(f.bit),
                   std::to_string(f.old_value), std::to_string(f.new_value),
                   pct(result.accuracy_after[i])});
  }
  return table;
}

std::string AttackRun::summary() const {
  const double last = result.accuracy_after.empty() ? clean_accuracy : result.accuracy_after.back();
  return fmt::format("{} {} flips: accuracy {}% -> {}% on {} test images", result.flips.size(),
                     attack_method_name(method), pct(clean_accuracy), pct(last), eval_images);
}

nlohmann::json AttackRun::to_json() const {
  nlohmann::json flips = nlohmann::json::array();
  for (size_t i = 0; i < result.flips.size(); ++i) {
    flips.push_back(result.flips[i].to_json());
    flips.back()["accuracy_after"] = result.accuracy_after[i];
  }
  return {{"clean_accuracy", clean_accuracy}, {"eval_images", eval_images}, {"flips", flips}};
}

SvgPlot AttackRun::plot(const std::string& title) const {
  SvgPlot plot(title, "bits flipped", "accuracy %");
  plot.add_series(
      accuracy_series(attack_method_name(method), clean_accuracy, result.accuracy_after));
  return plot;
}

// ---------------------------------------------------------------------------------------------
// verify

VerifyResult verify_model(QuantizedModel& model, const Radar& radar, const GoldenSignatures& golden,
                          bool recover, const data::Dataset* eval_set, RecoveryMode mode) {
  VerifyResult out;
  out.mode = mode;
  DeployedModel deployed = DeployedModel::deploy(model, &radar);
  out.check = radar.check(deployed, golden);
  out.n_layers = static_cast<int64_t>(model.n_layers());
  out.n_groups = golden.n_groups();
  out.group_size = golden.options.group_size;
  for (const auto& l : out.check.layers)
    out.layer_groups.push_back(radar.layout(l.layer).n_groups());
  if (eval_set != nullptr) {
    out.eval_images = eval_set->size();
    out.accuracy_before = evaluate_deployed(deployed, *eval_set).accuracy;
    out.accuracy_after = out.accuracy_before;
  }
  if (recover && !out.check.clean()) {
    out.weights_zeroed = radar.recover(deployed, out.check, mode, &golden);
    deployed.copy_codes_to(model);
    out.recovered = true;
    if (eval_set != nullptr) out.accuracy_after = evaluate_deployed(deployed, *eval_set).accuracy;
  }
  return out;
}

std::string VerifyResult::to_string() const {
  std::string text;
  if (check.clean()) {
    text = fmt::format("OK: all {} groups of {} layers match their signatures (G = {})\n", n_groups,
                       n_layers, group_size);
  } else {
    Table table({"layer", "groups", "flagged", "flagged groups"});
    for (size_t i = 0; i < check.layers.size(); ++i) {
      const auto& groups = check.layers[i].flagged_groups;
      std::string list;
      for (size_t g = 0; g < groups.size() && g < 12; ++g)
        list += (g > 0 ? " " : "") + std::to_string(groups[g]);
      if (groups.size() > 12) list += fmt::format(" ... ({} more)", groups.size() - 12);
      table.add_row({check.layers[i].name, std::to_string(layer_groups[i]),
                     std::to_string(groups.size()), list});
    }
    text = table.to_string() + fmt::format("MISMATCH: {} of {} groups flagged in {} layer(s)\n",
                                           check.n_flagged_groups(), n_groups, check.layers.size());
    if (recovered)
      text += fmt::format("recovered ({}): {} weights zeroed\n", recovery_mode_name(mode),
                          weights_zeroed);
  }
  if (eval_images > 0) {
    text += fmt::format("accuracy on {} test images: {}%{}\n", eval_images, pct(accuracy_before),
                        recovered ? " -> " + pct(accuracy_after) + "% recovered" : std::string());
  }
  return text;
}

nlohmann::json VerifyResult::to_json() const {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& l : check.layers)
    layers.push_back({{"layer", l.name}, {"flagged_groups", l.flagged_groups}});
  nlohmann::json json = {{"clean", check.clean()},
                         {"flagged_groups", check.n_flagged_groups()},
                         {"groups", n_groups},
                         {"layers", layers},
                         {"weights_zeroed", weights_zeroed},
                         {"recovery", recovery_mode_name(mode)},
                         {"exit_code", exit_code()}};
  if (eval_images > 0) {
    json["accuracy_before"] = accuracy_before;
    json["accuracy_after"] = accuracy_after;
  }
  return json;
}

}  // namespace tessera::bitflip
