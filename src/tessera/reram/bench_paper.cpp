// `reram bench`: the paper's table (crossbar reduction at < 0.3 points accuracy drop) beside ours.
// Per ImageNet-shaped network: a Fashion-MNIST donor of the same architecture, each bit-sparse
// setting without and with STE fine-tuning, the quantizer chosen on held-out training images,
// the step shares of the chosen setting and the mapping time.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/runtime.h"
#include "tessera/core/seed.h"
#include "tessera/models/model_io.h"
#include "tessera/reram/bench.h"

namespace tessera::reram {
BenchData load_bench_data(const BenchOptions& o, int64_t image_size, const ImageLoader& images) {
  BenchData d;
  d.full_train = images("train", image_size);
  TESSERA_CHECK(o.train_images + o.val_images <= d.full_train.size(),
                "bench: train_images {} + val_images {} must fit in the {} training images",
                o.train_images, o.val_images, d.full_train.size());
  std::vector<int64_t> val_index;
  for (int64_t i = d.full_train.size() - o.val_images; i < d.full_train.size(); ++i)
    val_index.push_back(i);
  d.val = d.full_train.subset(val_index);
  d.train = d.full_train.head(o.train_images);
  d.test = images("test", image_size);
  if (o.test_images > 0 && o.test_images < d.test.size()) d.test = d.test.head(o.test_images);
  return d;
}

namespace {

std::string fmt_ratio(double x) { return fmt::format("{:.2f}x", x); }
std::string fmt_pct(double x) { return fmt::format("{:.2f}", 100.0 * x); }
std::string drop_str(double reference, double accuracy) {
  return fmt::format("{:.2f}", 100 * (reference - accuracy));
}

std::vector<std::string> setting_names(const std::vector<QuantizerSetting>& settings) {
  std::vector<std::string> names;
  for (const auto& s : settings) names.push_back(quantizer_setting_name(s));
  return names;
}

// What every setting of one network is measured against.
struct NetworkContext {
  const BenchOptions& options;
  const HardwareSpec& spec;
  const BenchData& data;
  workload::Workload target;  // ImageNet shapes
  workload::Workload donor_workload;
  std::vector<quant::QuantizedTensor> donor_uniform, uniform;  // donor's and ImageNet-shaped
  NetworkBench& result;
};

// A measured setting with its ImageNet-shaped weights (for the step shares).
struct Evaluated {
  SettingResult setting;
  std::vector<quant::QuantizedTensor> uniform, sparse;
};

// One setting on the (fine-tuned or not) model `m`: accuracy of its Fashion-MNIST weights,
// crossbars of the same weights at ImageNet shapes and on the model itself.
Evaluated evaluate_setting(const NetworkContext& c, models::Model& m, const BitSparseOptions& q,
                           bool tuned) {
  Evaluated e;
  SettingResult& r = e.setting;
  r.quantizer = q;
  r.fine_tuned = tuned;
  const int bits = c.spec.weight_bits;
  const auto m_uniform = tuned ? quantize_model(m, c.donor_workload, bits) : c.donor_uniform;
  const auto m_sparse = bit_sparse_all(c.donor_workload, m_uniform, q);
  if (!c.result.donor_at_chance) {
    r.val_accuracy = quantized_accuracy(m, m_sparse, c.data.val);
    r.test_accuracy = quantized_accuracy(m, m_sparse, c.data.test);
  }
  e.uniform =
      tuned
          ? quantize_all(c.target,
                         imagenet_weights(c.target, m, c.result.arch, c.options.seed).weights, bits)
          : c.uniform;
  e.sparse = bit_sparse_all(c.target, e.uniform, q);
  r.crossbars = map_network(c.target, e.sparse, c.spec, {true, true}).total.crossbars;
  r.donor_crossbars = map_network(c.donor_workload, m_sparse, c.spec, {true, true}).total.crossbars;
  r.reduction = crossbar_reduction(c.result.baseline_crossbars, r.crossbars);
  r.donor_reduction = crossbar_reduction(c.result.donor_baseline_crossbars, r.donor_crossbars);
  return e;
}

bool fine_tune_this(const BenchOptions& o, const QuantizerSetting& s) {
  if (o.fine_tune_settings.empty()) return true;
  for (const auto& f : o.fine_tune_settings) {
    if (f.terms == s.terms && f.positions == s.positions) return true;
  }
  return false;
}

// Every setting, plain and (when asked) fine-tuned; the fine-tuned models are saved.
std::vector<Evaluated> evaluate_settings(const NetworkContext& c, models::Model& donor,
                                         const FineTuneOptions& ft, bool fine_tune) {
  const BenchOptions& o = c.options;
  std::vector<Evaluated> out;
  for (size_t i = 0; i < o.settings.size(); ++i) {
    const BitSparseOptions q = quantizer_of(o.settings[i], o.scope);
    log::info("reram bench {}: setting {} ({}/{})", imagenet_network_name(c.result.network),
              q.describe(), i + 1, o.settings.size());
    out.push_back(evaluate_setting(c, donor, q, false));
    if (!fine_tune || !fine_tune_this(o, o.settings[i])) continue;
    models::Model tuned = fine_tune_quantized(donor, c.spec.weight_bits, &q, c.data.train, ft);
    const std::string file = fmt::format("{}/{}_fmnist{}_ft{}_t{}k{}{}_s{}.safetensors", o.work_dir,
                                         c.result.arch, c.result.image_size, ft.steps, q.max_terms,
                                         q.n_positions, position_scope_name(q.scope), o.seed);
    std::filesystem::create_directories(o.work_dir);
    models::save(file, tuned);
    out.push_back(evaluate_setting(c, tuned, q, true));
    out.back().setting.model_file = file;
  }
  return out;
}

// The mapper is single-threaded; LibTorch is pinned to one thread too so nothing else runs in
// parallel while the SME mapping is timed.
MappingTiming time_mapping(const workload::Workload& w,
                           const std::vector<quant::QuantizedTensor>& sparse,
                           const HardwareSpec& spec, int repeats) {
  const ScopedThreads one_thread(1);
  MappingTiming t;
  t.repeats = repeats;
  t.layers = static_cast<int64_t>(w.weighted_layers().size());
  t.min_seconds = 1e30;
  double sum_s = 0, sum_cpu = 0;
  for (int i = 0; i < repeats; ++i) {
    const NetworkStats timed = map_network(w, sparse, spec, {true, true});
    t.min_seconds = std::min(t.min_seconds, timed.map_seconds);
    sum_s += timed.map_seconds;
    sum_cpu += timed.map_cpu_seconds;
  }
  t.mean_seconds = sum_s / repeats;
  t.mean_cpu_seconds = sum_cpu / repeats;
  return t;
}

// The donor's 8-bit accuracy and the chance guard.
void measure_donor(NetworkContext& c, models::Model& donor) {
  NetworkBench& nb = c.result;
  nb.test_uniform = quantized_accuracy(donor, c.donor_uniform, c.data.test);
  nb.donor_at_chance = at_chance(nb.test_uniform, donor->config().num_classes);
  nb.val_uniform = nb.donor_at_chance ? 0 : quantized_accuracy(donor, c.donor_uniform, c.data.val);
  nb.val_uniform_fine_tuned = nb.val_uniform;
  nb.test_uniform_fine_tuned = nb.test_uniform;
  if (nb.donor_at_chance) {
    log::warn(
        "{}: the donor {} is at chance accuracy ({:.2f}% on the test set, chance {:.0f}%): "
        "no accuracy drop is reported and no fine-tuning is done; train it longer (--epochs, "
        "--train-images) or give a trained --{}-donor",
        imagenet_network_name(nb.network), nb.arch, 100 * nb.test_uniform,
        100.0 / donor->config().num_classes,
        nb.network == ImagenetNetwork::ResNet50 ? "resnet" : "mobilenet");
  }
}

NetworkBench bench_network(const BenchOptions& o, const HardwareSpec& spec,
                           const FineTuneOptions& ft, ImagenetNetwork network,
                           const ImageLoader& images) {
  NetworkBench nb;
  nb.network = network;
  const DonorTraining training = o.donor_training(network);
  nb.arch = training.arch;
  nb.image_size = training.image_size;
  const BenchData data = load_bench_data(o, training.image_size, images);
  const std::string& file =
      network == ImagenetNetwork::ResNet50 ? o.resnet_donor : o.mobilenet_donor;
  Donor donor = load_or_train_donor(file, training, data.full_train);
  nb.donor_provenance = donor.provenance;
  NetworkContext c{o, spec, data, imagenet_workload(network), donor.model->workload(), {}, {}, nb};
  c.donor_uniform = quantize_model(donor.model, c.donor_workload, spec.weight_bits);
  measure_donor(c, donor.model);
  ImagenetWeights weights = imagenet_weights(c.target, donor.model, nb.arch, o.seed);
  nb.weight_source = weights.source;
  c.uniform = quantize_all(c.target, weights.weights, spec.weight_bits);
  nb.baseline_crossbars = map_network(c.target, c.uniform, spec, {}).total.crossbars;
  nb.donor_baseline_crossbars =
      map_network(c.donor_workload, c.donor_uniform, spec, {}).total.crossbars;
  const bool fine_tune = ft.steps > 0 && !nb.donor_at_chance;
  if (fine_tune) {
    // The plain 8-bit uniform model fine-tuned the same way: the reference for fine-tuned drops.
    models::Model control =
        fine_tune_quantized(donor.model, spec.weight_bits, nullptr, data.train, ft);
    const auto control_q = quantize_model(control, c.donor_workload, spec.weight_bits);
    nb.fine_tuned_control = true;
    nb.val_uniform_fine_tuned = quantized_accuracy(control, control_q, data.val);
    nb.test_uniform_fine_tuned = quantized_accuracy(control, control_q, data.test);
  }
  const std::vector<Evaluated> evaluated = evaluate_settings(c, donor.model, ft, fine_tune);
  for (const Evaluated& e : evaluated) nb.settings.push_back(e.setting);
  if (!nb.donor_at_chance) {
    nb.chosen_plain = choose_setting(nb.settings, false, nb.val_uniform, o.max_drop_points);
    nb.chosen_fine_tuned =
        choose_setting(nb.settings, true, nb.val_uniform_fine_tuned, o.max_drop_points);
  }
  // Step shares and mapping time for the chosen setting (fine-tuned first), else the first.
  nb.ablation_setting = nb.chosen_fine_tuned >= 0 ? nb.chosen_fine_tuned
                        : nb.chosen_plain >= 0    ? nb.chosen_plain
                                                  : 0;
  const Evaluated& shown = evaluated[nb.ablation_setting];
  nb.ablation = ablation(c.target, shown.uniform, shown.sparse, spec);
  if (network == ImagenetNetwork::ResNet50)
    nb.timing = time_mapping(c.target, shown.sparse, spec, o.timing_repeats);
  return nb;
}

}  // namespace

double paper_crossbar_reduction(ImagenetNetwork network) {
  return network == ImagenetNetwork::ResNet50 ? 8.7 : 2.1;
}

void BenchOptions::validate() const {
  TESSERA_CHECK(!networks.empty(), "bench: networks must name at least one network");
  TESSERA_CHECK(!settings.empty(), "bench: settings must have at least one setting");
  TESSERA_CHECK(train_images > 0, "bench: train_images must be positive, got {}", train_images);
  TESSERA_CHECK(val_images > 0, "bench: val_images must be positive, got {}", val_images);
  TESSERA_CHECK(test_images >= 0, "bench: test_images must be >= 0, got {}", test_images);
  TESSERA_CHECK(max_drop_points >= 0, "bench: max_drop_points must be >= 0, got {}",
                max_drop_points);
  TESSERA_CHECK(timing_repeats > 0, "bench: timing_repeats must be positive, got {}",
                timing_repeats);
  fine_tune.validate();
  for (ImagenetNetwork n : networks) donor_training(n).validate();
}

nlohmann::json BenchOptions::to_json() const {
  std::vector<std::string> names;
  for (ImagenetNetwork n : networks) names.push_back(imagenet_network_name(n));
  FineTuneOptions ft = fine_tune;
  ft.seed = seed;
  return {{"networks", names},
          {"resnet_image_size", resnet_image_size},
          {"mobilenet_image_size", mobilenet_image_size},
          {"epochs", epochs},
          {"train_images", train_images},
          {"val_images", val_images},
          {"test_images", test_images},
          {"lr", lr},
          {"settings", setting_names(settings)},
          {"scope", position_scope_name(scope)},
          {"max_drop_points", max_drop_points},
          {"fine_tune", ft.describe()},
          {"fine_tune_settings", setting_names(fine_tune_settings)},
          {"resnet_arch", resnet_arch}};
}

DonorTraining BenchOptions::donor_training(ImagenetNetwork network) const {
  DonorTraining t;
  const bool resnet = network == ImagenetNetwork::ResNet50;
  t.arch = resnet ? resnet_arch : "mobilenetv2";
  t.image_size = resnet ? resnet_image_size : mobilenet_image_size;
  t.epochs = epochs;
  t.train_images = train_images;
  t.seed = seed;
  t.lr = lr;
  // Each residual block starts as the identity (zero-initialised last BN, Goyal et al. 2017).
  if (t.arch == "resnet50") t.extra = {{"zero_init_residual", 1}};
  return t;
}

int choose_setting(const std::vector<SettingResult>& settings, bool fine_tuned,
                   double val_reference, double max_drop_points) {
  int best = -1;
  for (size_t i = 0; i < settings.size(); ++i) {
    const SettingResult& s = settings[i];
    if (s.fine_tuned != fine_tuned || 100 * (val_reference - s.val_accuracy) > max_drop_points)
      continue;
    if (best < 0 || s.reduction > settings[best].reduction) best = static_cast<int>(i);
  }
  return best;
}

BenchResult run_bench(const BenchOptions& options, const ImageLoader& images) {
  options.validate();
  seed_everything(options.seed);
  const HardwareSpec spec = options.spec.empty() ? HardwareSpec{} : load_spec(options.spec);
  FineTuneOptions ft = options.fine_tune;
  ft.seed = options.seed;
  for (const QuantizerSetting& s : options.settings)
    quantizer_of(s, options.scope).validate(spec.weight_bits - 1);
  BenchResult result;
  result.fine_tune = ft.describe();
  const ImageLoader& loader = images ? images : fashion_mnist_loader(options.data_dir);
  for (ImagenetNetwork network : options.networks)
    result.networks.push_back(bench_network(options, spec, ft, network, loader));
  result.config = options.to_json();
  result.config["spec"] = spec.to_json();
  return result;
}

nlohmann::json NetworkBench::to_json() const {
  const bool chance = donor_at_chance;
  nlohmann::json r = {{"baseline_crossbars", baseline_crossbars},
                      {"donor", donor_provenance},
                      {"donor_arch", arch},
                      {"image_size", image_size},
                      {"weights", weight_source},
                      {"test_uniform", test_uniform},
                      {"donor_at_chance", chance},
                      {"donor_baseline_crossbars", donor_baseline_crossbars}};
  if (!chance) r["val_uniform"] = val_uniform;
  if (fine_tuned_control) {
    r["val_uniform_fine_tuned"] = val_uniform_fine_tuned;
    r["test_uniform_fine_tuned"] = test_uniform_fine_tuned;
  }
  nlohmann::json rows = nlohmann::json::array();
  for (const SettingResult& s : settings) {
    nlohmann::json row = {{"quantizer", s.quantizer.describe()},
                          {"fine_tuned", s.fine_tuned},
                          {"sme_crossbars", s.crossbars},
                          {"reduction", s.reduction},
                          {"donor_sme_crossbars", s.donor_crossbars}};
    if (!chance) {
      const double tref = s.fine_tuned ? test_uniform_fine_tuned : test_uniform;
      row["val_accuracy"] = s.val_accuracy;
      row["test_accuracy"] = s.test_accuracy;
      row["test_drop_points"] = 100 * (tref - s.test_accuracy);
      if (s.fine_tuned)
        row["test_drop_vs_unfinetuned_uniform"] = 100 * (test_uniform - s.test_accuracy);
    }
    if (!s.model_file.empty()) row["model_file"] = s.model_file;
    rows.push_back(row);
  }
  r["settings"] = rows;
  if (chosen_plain >= 0) r["chosen_no_fine_tuning"] = settings[chosen_plain].quantizer.describe();
  if (chosen_fine_tuned >= 0)
    r["chosen_fine_tuned"] = settings[chosen_fine_tuned].quantizer.describe();
  r["ablation"] = ablation_table(ablation).to_json();
  if (timing) {
    r["map_cpu_seconds_mean"] = timing->mean_cpu_seconds;
    r["map_seconds_min"] = timing->min_seconds;
    r["map_seconds_mean"] = timing->mean_seconds;
    r["layers_per_second"] = timing->layers / timing->mean_seconds;
  }
  return r;
}

namespace {

// The paper table's (reduction, drop) cell for the plain or the fine-tuned settings.
std::pair<std::string, std::string> paper_cell(const NetworkBench& nb, bool fine_tuned) {
  if (nb.donor_at_chance) return {"-", "refused: donor at chance"};
  const int best = fine_tuned ? nb.chosen_fine_tuned : nb.chosen_plain;
  double top = 0;
  bool any = false;
  for (const SettingResult& s : nb.settings) {
    if (s.fine_tuned != fine_tuned) continue;
    any = true;
    top = std::max(top, s.reduction);
  }
  if (!any) return {"-", "-"};
  if (best < 0)
    return {fmt::format("none within budget (max {} over the settings)", fmt_ratio(top)), "-"};
  const double tref = fine_tuned ? nb.test_uniform_fine_tuned : nb.test_uniform;
  return {fmt_ratio(nb.settings[best].reduction), drop_str(tref, nb.settings[best].test_accuracy)};
}

}  // namespace

Table BenchResult::paper_table() const {
  Table paper({"network (ImageNet shapes)", "crossbar reduction: paper", "ours, no fine-tuning",
               "ours, fine-tuned", "accuracy drop: paper", "ours (test, points): no FT / FT",
               "quantizer: no FT / FT", "weights"});
  for (const NetworkBench& nb : networks) {
    const auto [red_plain, drop_plain] = paper_cell(nb, false);
    const auto [red_tuned, drop_tuned] = paper_cell(nb, true);
    auto chosen = [&](int i) { return i >= 0 ? nb.settings[i].quantizer.describe() : "-"; };
    paper.add_row({imagenet_network_name(nb.network),
                   fmt_ratio(paper_crossbar_reduction(nb.network)), red_plain, red_tuned, "< 0.3%",
                   drop_plain + " / " + drop_tuned,
                   chosen(nb.chosen_plain) + " / " + chosen(nb.chosen_fine_tuned),
                   nb.weight_source.substr(0, nb.weight_source.find(" (")) + " (" + nb.arch + ")"});
  }
  return paper;
}

Table BenchResult::detail_table() const {
  Table detail({"network", "quantizer", "fine-tuned", "SME xbars", "reduction",
                "on the F-MNIST model", "val acc %", "val drop", "test acc %", "test drop"});
  for (const NetworkBench& nb : networks) {
    const bool chance = nb.donor_at_chance;
    for (const SettingResult& s : nb.settings) {
      const double vref = s.fine_tuned ? nb.val_uniform_fine_tuned : nb.val_uniform;
      const double tref = s.fine_tuned ? nb.test_uniform_fine_tuned : nb.test_uniform;
      detail.add_row(
          {imagenet_network_name(nb.network), s.quantizer.describe(), s.fine_tuned ? "yes" : "no",
           std::to_string(s.crossbars), fmt_ratio(s.reduction), fmt_ratio(s.donor_reduction),
           chance ? "-" : fmt_pct(s.val_accuracy), chance ? "-" : drop_str(vref, s.val_accuracy),
           chance ? "-" : fmt_pct(s.test_accuracy),
           chance ? "-" : drop_str(tref, s.test_accuracy)});
    }
  }
  return detail;
}

std::string BenchResult::summary() const {
  std::string s;
  for (const NetworkBench& nb : networks) {
    const std::string name = imagenet_network_name(nb.network);
    s += fmt::format("{}: donor {} ({}), 8-bit uniform test accuracy {:.2f}%\n", name, nb.arch,
                     nb.donor_provenance, 100 * nb.test_uniform);
    if (nb.fine_tuned_control) {
      s += fmt::format(
          "{}: 8-bit uniform model fine-tuned the same way ({}): test accuracy {:.2f}%\n", name,
          fine_tune, 100 * nb.test_uniform_fine_tuned);
    }
  }
  return s;
}

std::string BenchResult::details() const {
  std::string text;
  for (const NetworkBench& nb : networks) {
    const SettingResult& shown = nb.settings[nb.ablation_setting];
    const bool chosen = nb.chosen_fine_tuned >= 0 || nb.chosen_plain >= 0;
    text += fmt::format("\n{} step shares ({}{}{}):\n", imagenet_network_name(nb.network),
                        shown.quantizer.describe(), shown.fine_tuned ? ", fine-tuned" : "",
                        chosen ? "" : "; no setting within budget") +
            ablation_table(nb.ablation).to_string();
    if (nb.timing) {
      const MappingTiming& t = *nb.timing;
      text += fmt::format(
          "\nResNet-50 full SME mapping on one core: wall min {:.3f} s, mean {:.3f} s; CPU "
          "mean {:.3f} s over {} runs ({:.0f} layers/s at the wall mean, {:.0f} at the CPU "
          "mean; goal < 1 s)\n",
          t.min_seconds, t.mean_seconds, t.mean_cpu_seconds, t.repeats, t.layers / t.mean_seconds,
          t.layers / t.mean_cpu_seconds);
    }
  }
  return text +
         "\nDrops are in points against 8-bit uniform weights; fine-tuned drops against the 8-bit "
         "uniform model fine-tuned for the same steps.\n";
}

nlohmann::json BenchResult::to_json() const {
  nlohmann::json j = nlohmann::json::object();
  for (const NetworkBench& nb : networks) {
    nlohmann::json r = nb.to_json();
    r["fine_tune"] = fine_tune;
    j[imagenet_network_name(nb.network)] = r;
  }
  j["paper_table"] = paper_table().to_json();
  return j;
}

}  // namespace tessera::reram
