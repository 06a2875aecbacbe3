// The bitflip bench: cached models, seeded trials, their aggregation into the bench's tables and
// plots, the reference models, and the tour step.
#include "tessera/bitflip/bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "tessera/bitflip/deployed.h"
#include "tessera/bitflip/quantized_model.h"
#include "tessera/bitflip/radar.h"
#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/progress.h"
#include "tessera/core/seed.h"
#include "tessera/models/registry.h"
#include "tessera/train/bench.h"
#include "tessera/train/train.h"

namespace tessera::bitflip {
namespace {

constexpr const char* kTourModel = "resnet20-fmnist";

std::string pct(double fraction) { return fmt::format("{:.2f}", 100.0 * fraction); }

data::Dataset first(const data::Dataset& set, int64_t n) {
  return n > 0 && n < set.size() ? set.head(n) : set;
}

/// Mean over the trials that have element i, for each i up to the longest list.
std::vector<double> mean_curve(const std::vector<TrialResult>& trials,
                               std::vector<double> TrialResult::*member) {
  size_t longest = 0;
  for (const auto& t : trials) longest = std::max(longest, (t.*member).size());
  std::vector<double> curve;
  for (size_t i = 0; i < longest; ++i) {
    std::vector<double> at;
    for (const auto& t : trials)
      if ((t.*member).size() > i) at.push_back((t.*member)[i]);
    curve.push_back(mean_sd(at).mean);
  }
  return curve;
}

RadarSummary summarize_radar(const std::vector<TrialResult>& trials, size_t g) {
  RadarSummary r;
  r.group_size = trials.front().radar[g].group_size;
  r.n_flips = trials.front().radar[g].n_flips;
  r.storage_fraction = trials.front().radar[g].storage_fraction;
  for (const auto& t : trials) {
    TESSERA_CHECK(t.radar.size() == trials.front().radar.size() &&
                      t.radar[g].group_size == r.group_size && t.radar[g].n_flips == r.n_flips,
                  "summarize_trials: the trials were run with different RADAR settings");
    r.detected.push_back(static_cast<double>(t.radar[g].n_detected));
    r.flagged_groups.push_back(static_cast<double>(t.radar[g].n_flagged_groups));
    r.shared.push_back(static_cast<double>(t.radar[g].n_shared));
    r.recovered_accuracy.push_back(t.radar[g].recovered_accuracy);
    r.marked_accuracy.push_back(t.radar[g].marked_accuracy);
    r.restored_accuracy.push_back(t.radar[g].restored_accuracy);
    r.oracle_accuracy.push_back(t.radar[g].oracle_accuracy);
  }
  r.marked_stats = mean_sd(r.marked_accuracy);
  r.restored_stats = mean_sd(r.restored_accuracy);
  r.oracle_stats = mean_sd(r.oracle_accuracy);
  r.detected_stats = mean_sd(r.detected);
  r.flagged_stats = mean_sd(r.flagged_groups);
  r.recovered_stats = mean_sd(r.recovered_accuracy);
  r.detection_rate = r.n_flips > 0 ? r.detected_stats.mean / static_cast<double>(r.n_flips) : 0.0;
  return r;
}

std::string model_label(const std::string& arch, double width) {
  return arch.rfind("vgg", 0) == 0 && width != 1.0 ? fmt::format("{} x{}", arch, width) : arch;
}

std::vector<OverheadRow> time_overhead(const QuantizedModel& clean, const data::Dataset& eval_set,
                                       const BenchOptions& o) {
  const Radar radar(RadarKey::from_seed(o.seed),
                    RadarOptions{o.trial.group_sizes.front(), o.trial.check_bits}, clean.weights);
  DeployedModel guarded = DeployedModel::deploy(clean, &radar);
  const auto golden = radar.sign(guarded);
  // Every SIMD kernel the CPU has, side by side (scalar only when it has none).
  std::vector<CheckKernel> kernels = supported_check_kernels();
  if (kernels.size() > 1) kernels.erase(kernels.begin());
  std::vector<OverheadRow> rows;
  for (const int64_t batch_size : {int64_t{1}, o.overhead_batch}) {
    const auto batch = eval_set.head(std::min(batch_size, eval_set.size())).images;
    const auto timings =
        measure_check_overhead(guarded, radar, golden, batch, o.overhead_reps, kernels);
    for (size_t k = 0; k < kernels.size(); ++k)
      rows.push_back({batch.size(0), kernels[k], timings[k]});
  }
  return rows;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Aggregation

std::string MeanSd::format(double scale, int digits) const {
  if (n == 0) return "-";
  return fmt::format("{:.{}f} ± {:.{}f}", scale * mean, digits, scale * sd, digits);
}

MeanSd mean_sd(const std::vector<double>& values) {
  MeanSd out;
  out.n = static_cast<int64_t>(values.size());
  if (values.empty()) return out;
  out.mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(out.n);
  double var = 0.0;
  for (double v : values) var += (v - out.mean) * (v - out.mean);
  out.sd = out.n > 1 ? std::sqrt(var / static_cast<double>(out.n - 1)) : 0.0;
  return out;
}

TrialSummary summarize_trials(const std::vector<TrialResult>& trials, double random_level) {
  TESSERA_CHECK(!trials.empty(), "summarize_trials: no trials");
  TrialSummary s;
  s.n_trials = static_cast<int64_t>(trials.size());
  std::vector<double> at5, at10, at_end, random_end, to_random, attacked;
  std::vector<double> crc_layers, crc_zeroed, crc_zero_acc, crc_reload_acc;
  for (const auto& t : trials) {
    // Flip counts a trial did not reach are left out (the table prints "-" when none did).
    if (t.pbfa_accuracy.size() >= 5) at5.push_back(t.pbfa_accuracy[4]);
    if (t.pbfa_accuracy.size() >= 10) at10.push_back(t.pbfa_accuracy[9]);
    if (!t.pbfa_accuracy.empty()) at_end.push_back(t.pbfa_accuracy.back());
    if (!t.random_accuracy.empty()) random_end.push_back(t.random_accuracy.back());
    for (size_t i = 0; i < t.pbfa_accuracy.size(); ++i) {
      if (t.pbfa_accuracy[i] <= random_level) {
        to_random.push_back(static_cast<double>(i + 1));
        break;
      }
    }
    attacked.push_back(t.defended_attack_accuracy);
    crc_layers.push_back(static_cast<double>(t.crc.n_layers_flagged));
    crc_zeroed.push_back(static_cast<double>(t.crc.n_weights_zeroed));
    crc_zero_acc.push_back(t.crc.zeroed_accuracy);
    crc_reload_acc.push_back(t.crc.reload_accuracy);
  }
  s.pbfa_5 = mean_sd(at5);
  s.pbfa_10 = mean_sd(at10);
  s.pbfa_end = mean_sd(at_end);
  s.random_end = mean_sd(random_end);
  s.flips_to_random = mean_sd(to_random);
  s.n_reached_random = static_cast<int64_t>(to_random.size());
  s.attacked = mean_sd(attacked);
  s.pbfa_curve = mean_curve(trials, &TrialResult::pbfa_accuracy);
  s.random_curve = mean_curve(trials, &TrialResult::random_accuracy);
  for (size_t g = 0; g < trials.front().radar.size(); ++g)
    s.radar.push_back(summarize_radar(trials, g));
  s.crc_layers = mean_sd(crc_layers);
  s.crc_zeroed = mean_sd(crc_zeroed);
  s.crc_zero_accuracy = mean_sd(crc_zero_acc);
  s.crc_reload_accuracy = mean_sd(crc_reload_acc);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Options, data, models

void BenchOptions::validate() const {
  TESSERA_CHECK(!archs.empty(), "bench: archs is empty");
  TESSERA_CHECK(vgg_width > 0, "bench: vgg_width must be > 0, got {}", vgg_width);
  TESSERA_CHECK(epochs >= 1, "bench: epochs must be >= 1, got {}", epochs);
  TESSERA_CHECK(train_subset >= 0, "bench: train_subset must be >= 0, got {}", train_subset);
  TESSERA_CHECK(n_seeds >= 0, "bench: n_seeds must be >= 0, got {}", n_seeds);
  TESSERA_CHECK(eval_size >= 0, "bench: eval_size must be >= 0, got {}", eval_size);
  TESSERA_CHECK(evasion_trials >= 0, "bench: evasion_trials must be >= 0, got {}", evasion_trials);
  TESSERA_CHECK(overhead_batch >= 1, "bench: overhead_batch must be >= 1, got {}", overhead_batch);
  TESSERA_CHECK(overhead_reps >= 1, "bench: overhead_reps must be >= 1, got {}", overhead_reps);
  TESSERA_CHECK(random_level >= 0 && random_level <= 1,
                "bench: random_level must be in [0, 1], got {}", random_level);
  TESSERA_CHECK(!trial.group_sizes.empty(), "bench: trial.group_sizes is empty");
  trial.validate();
}

nlohmann::json BenchOptions::to_json() const {
  return {{"archs", archs},
          {"vgg_width", vgg_width},
          {"epochs", epochs},
          {"resnet20_reference", resnet20_reference},
          {"train_subset", train_subset},
          {"seeds", n_seeds},
          {"eval_size", eval_size},
          {"flips", trial.n_flips},
          {"defended_flips", trial.n_defended_flips},
          {"random_flips", trial.n_random_flips},
          {"group_sizes", trial.group_sizes},
          {"check_bits", trial.check_bits},
          {"small_layer_weights", trial.small_layer_weights},
          {"k_top", trial.pbfa.k_top},
          {"attack_batch", trial.attack_batch},
          {"random_level", random_level},
          {"evasion_trials", evasion_trials},
          {"overhead_batch", overhead_batch},
          {"overhead_reps", overhead_reps}};
}

BenchData load_bench_data(const std::string& dir) {
  BenchData data;
  data.train = data::load_fashion_mnist("train", dir, 32);
  data.test = data::load_fashion_mnist("test", dir, 32);
  return data;
}

train::TrainRecipe bench_recipe(const std::string& arch, const BenchOptions& options,
                                const std::string& data_name) {
  train::TrainRecipe recipe;
  recipe.arch.name = arch;
  recipe.arch.in_channels = 1;
  recipe.arch.image_size = 32;
  recipe.arch.num_classes = 10;
  recipe.arch.width_mult = arch.rfind("vgg", 0) == 0 ? options.vgg_width : 1.0;
  recipe.options.epochs = options.epochs;
  recipe.options.lr = 0.05;
  recipe.options.schedule = "cosine";
  recipe.options.augment_flip = true;
  recipe.options.augment_pad = 2;
  recipe.options.seed = options.seed;
  recipe.options.progress_label = "train " + arch;
  recipe.data = data_name;
  recipe.train_images = options.train_subset;
  return recipe;
}

models::Model bench_model(const std::string& arch, const BenchOptions& options,
                          const BenchData& data) {
  const train::TrainRecipe recipe = bench_recipe(arch, options, data.name);
  return train::cached_model(recipe, [&] {
    const data::Dataset train_set = first(data.train, recipe.train_images);
    seed_everything(recipe.options.seed);
    models::Model model = models::create(recipe.arch);
    log::info("training {} for {} epochs on {} images", arch, recipe.options.epochs,
              train_set.size());
    train::TrainHooks hooks;
    hooks.on_epoch = [&](const train::EpochStats& s) {
      log::info("{} epoch {}: test accuracy {:.2f}% ({:.0f} s)", arch, s.epoch,
                100 * s.test_accuracy, s.seconds);
      return true;
    };
    train::fit(model, train_set, &data.test, recipe.options, hooks);
    return model;
  });
}

// ---------------------------------------------------------------------------------------------
// The bench

ModelBench bench_one_model(const std::string& label, const models::Model& model,
                           const data::Dataset& attack_pool, const data::Dataset& eval_set,
                           const BenchOptions& o) {
  o.validate();
  ModelBench out;
  out.label = label;
  models::Model float_model = model;
  float_model->eval();
  out.float_accuracy = train::evaluate(float_model, eval_set).accuracy;
  const QuantizedModel clean = quantize_model(float_model, 8);
  auto clean_copy = clean.clone();
  out.quantized_accuracy = evaluate(clean_copy, eval_set).accuracy;
  log::info("{}: float {:.2f}%, 8-bit {:.2f}% on {} test images", label, 100 * out.float_accuracy,
            100 * out.quantized_accuracy, eval_set.size());
  ProgressBar bar("bench " + label + " trials", o.n_seeds);
  for (int64_t s = 0; s < o.n_seeds; ++s) {
    out.trials.push_back(run_trial(clean, attack_pool, eval_set, o.trial, o.seed + 1000 * (s + 1)));
    const auto& t = out.trials.back();
    log::info("{} seed {}: PBFA {} flips -> {:.2f}%, RADAR G={} recovered {:.2f}% ({:.0f} s)",
              label, s, t.flips.size(), 100 * t.pbfa_accuracy.back(), t.radar.front().group_size,
              100 * t.radar.front().recovered_accuracy, t.seconds);
    bar.update();
  }
  bar.finish();
  if (!out.trials.empty()) out.summary = summarize_trials(out.trials, o.random_level);
  out.overhead = time_overhead(clean, eval_set, o);
  if (o.evasion_trials > 0) {
    for (const int64_t g : o.trial.group_sizes)
      out.evasion.push_back(measure_evasion(clean, g, o.evasion_trials, o.seed + 7));
  }
  return out;
}

train::ReferenceModel foundation_resnet20();

BenchResult run_bench(const BenchOptions& options, const BenchData& data) {
  options.validate();
  BenchResult result;
  result.options = options;
  const data::Dataset train_set = first(data.train, options.train_subset);
  const data::Dataset eval_set = first(data.test, options.eval_size);
  result.train_images = train_set.size();
  result.eval_images = eval_set.size();
  for (const auto& arch : options.archs) {
    const models::Model model = arch == "resnet20" && options.resnet20_reference
                                    ? foundation_resnet20().build(options.data_dir)
                                    : bench_model(arch, options, data);
    result.models.push_back(
        bench_one_model(model_label(arch, options.vgg_width), model, train_set, eval_set, options));
  }
  return result;
}

BenchResult run_bench(const BenchOptions& options) {
  options.validate();
  return run_bench(options, load_bench_data(options.data_dir));
}

// ---------------------------------------------------------------------------------------------
// Tables, JSON, plots

Table BenchResult::attack_table() const {
  const auto& t = options.trial;
  Table table({"model", "float acc %", "8-bit acc %", "PBFA 5 flips %", "PBFA 10 flips %",
               fmt::format("PBFA {} flips %", t.n_flips),
               fmt::format("flips to <= {:.0f}%", 100 * options.random_level),
               fmt::format("random {} flips %", t.n_random_flips)});
  for (const auto& m : models) {
    if (m.trials.empty()) continue;
    const auto& s = m.summary;
    table.add_row({m.label, pct(m.float_accuracy), pct(m.quantized_accuracy), s.pbfa_5.format(),
                   s.pbfa_10.format(), s.pbfa_end.format(),
                   fmt::format("{} ({}/{} seeds)", s.flips_to_random.format(1.0, 1),
                               s.n_reached_random, s.n_trials),
                   s.random_end.format()});
  }
  return table;
}

Table BenchResult::radar_table() const {
  Table table({"model", "G", "detected / " + std::to_string(options.trial.n_defended_flips),
               "flagged groups", "attacked acc %", "zero group acc %", "zero marked acc %",
               "restore marked acc %", "zero flipped only acc %", "clean 8-bit acc %", "gap group",
               "gap marked", "gap restore", "signature storage %",
               "sharing a group / missed (all rounds)"});
  for (const auto& m : models) {
    for (const auto& r : m.summary.radar) {
      auto gap = [&](const MeanSd& s) {
        return fmt::format("{:.2f}", 100 * (m.quantized_accuracy - s.mean));
      };
      double shared = 0, missed = 0;
      for (size_t t = 0; t < r.shared.size(); ++t) {
        shared += r.shared[t];
        missed += static_cast<double>(r.n_flips) - r.detected[t];
      }
      table.add_row({m.label, std::to_string(r.group_size), r.detected_stats.format(1.0),
                     r.flagged_stats.format(1.0, 1), m.summary.attacked.format(),
                     r.recovered_stats.format(), r.marked_stats.format(), r.restored_stats.format(),
                     r.oracle_stats.format(), pct(m.quantized_accuracy), gap(r.recovered_stats),
                     gap(r.marked_stats), gap(r.restored_stats),
                     fmt::format("{:.3f}", 100 * r.storage_fraction),
                     fmt::format("{:.0f} / {:.0f}", shared, missed)});
    }
  }
  return table;
}

Table BenchResult::crc_table() const {
  Table table({"model", "layers flagged", "weights zeroed", "zero-layer acc %", "reload acc %",
               "extra storage for reload %"});
  for (const auto& m : models) {
    if (m.trials.empty()) continue;
    const auto& s = m.summary;
    table.add_row({m.label, s.crc_layers.format(1.0, 1), s.crc_zeroed.format(1.0, 0),
                   s.crc_zero_accuracy.format(), s.crc_reload_accuracy.format(),
                   "100 (a clean copy)"});
  }
  return table;
}

Table BenchResult::overhead_table() const {
  Table table({"model", "batch", "kernel", "inference ms", "plain read ms", "fused read+check ms",
               "check ms", "check only ms", "check / inference %", "guarded - plain %"});
  for (const auto& m : models) {
    for (const auto& row : m.overhead) {
      const auto& ov = row.timing;
      table.add_row({m.label, std::to_string(row.batch), check_kernel_name(row.kernel),
                     fmt::format("{:.3f}", ov.t_inference_us / 1000),
                     fmt::format("{:.4f}", ov.t_read_us / 1000),
                     fmt::format("{:.4f}", ov.t_fused_us / 1000),
                     fmt::format("{:.4f}", ov.t_check_us / 1000),
                     fmt::format("{:.4f}", ov.t_check_only_us / 1000),
                     fmt::format("{:.2f}", 100 * ov.overhead_fraction),
                     fmt::format("{:.2f}", 100 * ov.end_to_end_fraction)});
    }
  }
  return table;
}

std::string stop_reason(const TrialResult& t, double random_level) {
  if (t.pbfa_accuracy.empty() || t.pbfa_accuracy.back() <= random_level) return "";
  int64_t no_rise = 0, multi = 0;
  for (const auto& step : t.pbfa_steps) {
    no_rise += step.raised ? 0 : 1;
    multi += step.n_bits > 1 ? 1 : 0;
  }
  std::map<std::pair<std::string, int64_t>, int> hits;
  int64_t reflipped = 0;
  for (const auto& f : t.flips) reflipped += hits[{f.layer, f.index}]++ > 0 ? 1 : 0;
  const double loss0 = t.pbfa_steps.empty() ? 0.0 : t.pbfa_steps.front().loss_before;
  const double loss1 = t.pbfa_steps.empty() ? 0.0 : t.pbfa_steps.back().loss_after;
  std::string why;
  if (t.batch_agreement < 0.5)
    why = fmt::format(
        "the attack batch stalled too ({:.1f}% still predicted as labelled) while its loss "
        "kept rising: the search maximises a loss that grows without bound on the images it "
        "already misclassifies, not the number it misclassifies",
        100 * t.batch_agreement);
  else if (no_rise > 0)
    why = fmt::format("{} of {} iterations found no flip that raised the attack-batch loss",
                      no_rise, t.pbfa_steps.size());
  else
    why = fmt::format("every iteration raised the loss, but only to {:.3f}", loss1);
  return fmt::format(
      "stuck at {}% after {} flips: {} (attack-batch loss {:.3f} -> {:.3f}, {:.1f}% "
      "of the batch as labelled; {} multi-bit iterations, {} flips of an already "
      "flipped weight)",
      pct(t.pbfa_accuracy.back()), t.flips.size(), why, loss0, loss1, 100 * t.batch_agreement,
      multi, reflipped);
}

std::string BenchResult::stuck_rounds() const {
  std::string text;
  for (const auto& m : models) {
    for (size_t s = 0; s < m.trials.size(); ++s) {
      const std::string why = stop_reason(m.trials[s], options.random_level);
      if (!why.empty()) text += fmt::format("{} round {}: {}\n", m.label, s, why);
    }
  }
  return text;
}

Table BenchResult::evasion_table() const {
  Table table({"model", "G", "trials", "undetected", "measured rate", "predicted rate"});
  for (const auto& m : models) {
    for (const auto& ev : m.evasion) {
      table.add_row({m.label, std::to_string(ev.group_size), std::to_string(ev.n_trials),
                     std::to_string(ev.n_undetected), fmt::format("{:.5f}", ev.measured_rate),
                     fmt::format("{:.5f}", ev.predicted_rate)});
    }
  }
  return table;
}

std::string BenchResult::to_string() const {
  std::string text = fmt::format(
      "\nPBFA vs random flips (accuracy on {} test images, {} seeds, mean ± sd)\n{}"
      "\nRADAR after {} PBFA flips (detected = flips whose group was flagged)\n{}"
      "\nCRC32 per layer, same flips\n{}"
      "\nRun-time check overhead on the deployed int8 model (median of {}, check inside every "
      "inference's weight read, G = {})\n{}",
      eval_images, options.n_seeds, attack_table().to_string(), options.trial.n_defended_flips,
      radar_table().to_string(), crc_table().to_string(), options.overhead_reps,
      options.trial.group_sizes.front(), overhead_table().to_string());
  const std::string stuck = stuck_rounds();
  if (!stuck.empty()) text += "\nRounds where PBFA stalled above the random level\n" + stuck;
  if (options.evasion_trials > 0) {
    text += "\nStretch: checksum-cancelling MSB pairs without the secret\n" +
            evasion_table().to_string();
  }
  return text;
}

nlohmann::json ModelBench::to_json() const {
  nlohmann::json radar = nlohmann::json::array();
  for (const auto& r : summary.radar) {
    radar.push_back({{"group_size", r.group_size},
                     {"detected", r.detected},
                     {"detection_rate", r.detection_rate},
                     {"flagged_groups", r.flagged_groups},
                     {"shared", r.shared},
                     {"recovered_accuracy", r.recovered_accuracy},
                     {"marked_accuracy", r.marked_accuracy},
                     {"restored_accuracy", r.restored_accuracy},
                     {"oracle_accuracy", r.oracle_accuracy},
                     {"storage_fraction", r.storage_fraction}});
  }
  nlohmann::json evasion_json = nlohmann::json::array();
  for (const auto& ev : evasion) {
    evasion_json.push_back({{"group_size", ev.group_size},
                            {"trials", ev.n_trials},
                            {"undetected", ev.n_undetected},
                            {"measured", ev.measured_rate},
                            {"predicted", ev.predicted_rate}});
  }
  nlohmann::json per_seed = nlohmann::json::array();
  for (const auto& t : trials) {
    nlohmann::json flips = nlohmann::json::array();
    for (const auto& f : t.flips) flips.push_back(f.to_json());
    per_seed.push_back({{"pbfa_accuracy", t.pbfa_accuracy},
                        {"batch_agreement", t.batch_agreement},
                        {"random_accuracy", t.random_accuracy},
                        {"flips", flips},
                        {"crc_zero_accuracy", t.crc.zeroed_accuracy},
                        {"seconds", t.seconds}});
  }
  return {{"float_accuracy", float_accuracy},
          {"quantized_accuracy", quantized_accuracy},
          {"pbfa_curve", summary.pbfa_curve},
          {"random_curve", summary.random_curve},
          {"radar", radar},
          {"evasion", evasion_json},
          {"seeds", per_seed}};
}

nlohmann::json BenchResult::to_json() const {
  nlohmann::json results = nlohmann::json::object();
  for (const auto& m : models) results[m.label] = m.to_json();
  results["train_images"] = train_images;
  results["eval_images"] = eval_images;
  results["attack_table"] = attack_table().to_json();
  results["radar_table"] = radar_table().to_json();
  results["crc_table"] = crc_table().to_json();
  results["overhead_table"] = overhead_table().to_json();
  results["evasion_table"] = evasion_table().to_json();
  return results;
}

SvgSeries accuracy_series(const std::string& name, double clean_accuracy,
                          const std::vector<double>& accuracy_after) {
  SvgSeries series{name, {{0.0, 100 * clean_accuracy}}, true};
  for (size_t i = 0; i < accuracy_after.size(); ++i)
    series.points.emplace_back(static_cast<double>(i + 1), 100 * accuracy_after[i]);
  return series;
}

SvgPlot BenchResult::accuracy_plot() const {
  SvgPlot plot(fmt::format("8-bit accuracy against bit flips (mean of {} seeds, {} test images)",
                           options.n_seeds, eval_images),
               "bits flipped", "accuracy %");
  for (const auto& m : models) {
    plot.add_series(accuracy_series(m.label + " PBFA", m.quantized_accuracy, m.summary.pbfa_curve));
    if (!m.summary.random_curve.empty()) {
      plot.add_series(
          accuracy_series(m.label + " random", m.quantized_accuracy, m.summary.random_curve));
    }
  }
  return plot;
}

SvgPlot BenchResult::detection_plot() const {
  SvgPlot plot(fmt::format("RADAR: flips detected after {} PBFA flips (mean of {} seeds)",
                           options.trial.n_defended_flips, options.n_seeds),
               "group size G", "flips detected %");
  for (const auto& m : models) {
    SvgSeries series{m.label, {}, true};
    for (const auto& r : m.summary.radar)
      series.points.emplace_back(static_cast<double>(r.group_size), 100 * r.detection_rate);
    plot.add_series(series);
  }
  return plot;
}

// ---------------------------------------------------------------------------------------------
// Reference models and the tour

/// The tour attacks the foundation's ResNet-20 (shared with the other systems' tour steps).
train::ReferenceModel foundation_resnet20() {
  for (const auto& m : train::reference_models())
    if (m.name == kTourModel) return m;
  throw Error(fmt::format("the foundation has no reference model '{}'", kTourModel));
}

std::vector<train::ReferenceModel> reference_models() {
  std::vector<train::ReferenceModel> out;
  const BenchOptions defaults;
  for (const std::string arch : {"resnet20", "vgg11_bn"}) {
    train::ReferenceModel m;
    m.name = arch == "resnet20" ? "bitflip-resnet20" : "bitflip-vgg11-x0.25";
    m.description = fmt::format(
        "{}, Fashion-MNIST 32x32, {} epochs SGD lr 0.05 cosine (`bitflip bench` default)",
        model_label(arch, defaults.vgg_width), defaults.epochs);
    m.recipe = [arch, defaults] { return bench_recipe(arch, defaults); };
    m.build = [arch, defaults](const std::string& data_dir) {
      return bench_model(arch, defaults, load_bench_data(data_dir));
    };
    out.push_back(m);
  }
  out.push_back(foundation_resnet20());
  return out;
}

TourRow tour_row(const QuantizedModel& clean, const data::Dataset& attack_pool,
                 const data::Dataset& test_set, uint64_t seed, const std::string& what,
                 const TourTrialOptions& options) {
  TrialOptions trial;
  trial.n_flips = options.n_flips;
  trial.n_defended_flips = options.n_defended_flips;
  trial.n_random_flips = options.n_flips;
  trial.group_sizes = {options.group_size};
  auto clean_copy = clean.clone();
  const double clean_acc = evaluate(clean_copy, test_set).accuracy;
  const TrialResult t = run_trial(clean, attack_pool, test_set, trial, seed);
  const RadarOutcome& r = t.radar.front();
  return {"bitflip: PBFA on 8-bit " + what,
          fmt::format("acc {}% -> {}% after {} PBFA flips, {}% after {} (random {} flips: {}%); "
                      "RADAR G={} on the deployed int8 memory: {}/{} flips detected, recovered "
                      "to {}% (zero group) / {}% (zero marked) / {}% (restore) ({} test images)",
                      pct(clean_acc), pct(t.defended_attack_accuracy), trial.n_defended_flips,
                      pct(t.pbfa_accuracy.back()), trial.n_flips, trial.n_random_flips,
                      pct(t.random_accuracy.back()), r.group_size, r.n_detected, r.n_flips,
                      pct(r.recovered_accuracy), pct(r.marked_accuracy), pct(r.restored_accuracy),
                      test_set.size()),
          "ResNet-20 CIFAR-10 G=8: 90.15% -> 18.01% (10 flips) -> 81.07% recovered; 9.6/10 "
          "flips detected (ResNet-18 ImageNet)"};
}

std::vector<TourRow> tour(const TourContext& context) {
  const train::ReferenceModel reference = foundation_resnet20();
  const QuantizedModel clean = quantize_model(reference.build(context.data_dir), 8);
  const BenchData data = load_bench_data(context.data_dir);
  return {tour_row(clean, data.train, data.test.head(1000), context.seed + 1,
                   fmt::format("ResNet-20 ({} epochs, reference model {})",
                               reference.recipe().options.epochs, reference.name))};
}

}  // namespace tessera::bitflip
