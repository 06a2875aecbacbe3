// reram map and sweep, the shared network loading, the tour step and the reference models. The
// paper bench (run_bench) is in bench_paper.cpp.
#include "tessera/reram/bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/progress.h"
#include "tessera/core/seed.h"
#include "tessera/core/svg.h"
#include "tessera/core/timer.h"
#include "tessera/models/model_io.h"

namespace tessera::reram {
namespace {

std::string fmt_ratio(double x) { return fmt::format("{:.2f}x", x); }
std::string fmt_pct(double x) { return fmt::format("{:.2f}", 100.0 * x); }

// The first `n` images of a data set (0 or more than it holds: all of them).
data::Dataset first(const data::Dataset& d, int64_t n) {
  return n > 0 && n < d.size() ? d.head(n) : d;
}

}  // namespace

std::string mapping_kind_name(MappingKind kind) {
  return kind == MappingKind::Sme ? "sme" : "baseline";
}

MappingKind parse_mapping_kind(const std::string& name) {
  if (name == "sme") return MappingKind::Sme;
  if (name == "baseline") return MappingKind::Baseline;
  TESSERA_CHECK(false, "reram: mapping '{}' is not one of: sme, baseline", name);
  return MappingKind::Sme;
}

QuantizerSetting parse_quantizer_setting(const std::string& text) {
  const auto colon = text.find(':');
  TESSERA_CHECK(colon != std::string::npos, "quantizer setting '{}' is not terms:positions", text);
  QuantizerSetting s;
  size_t used_t = 0, used_k = 0;
  try {
    s.terms = std::stoi(text.substr(0, colon), &used_t);
    s.positions = std::stoi(text.substr(colon + 1), &used_k);
  } catch (const std::exception&) {
    used_t = 0;
  }
  TESSERA_CHECK(used_t == colon && used_k == text.size() - colon - 1 && used_t > 0,
                "quantizer setting '{}' is not terms:positions (integers)", text);
  return s;
}

std::string quantizer_setting_name(const QuantizerSetting& setting) {
  return fmt::format("{}:{}", setting.terms, setting.positions);
}

BitSparseOptions quantizer_of(const QuantizerSetting& setting, PositionScope scope) {
  BitSparseOptions q;
  q.max_terms = setting.terms;
  q.n_positions = setting.positions;
  q.scope = scope;
  return q;
}

void NetworkSource::validate() const {
  const int given = !model.empty() + !workload.empty() + imagenet.has_value();
  TESSERA_CHECK(
      given == 1,
      "give exactly one of model, workload, imagenet (--model, --workload, --imagenet; {} "
      "given)",
      given);
  TESSERA_CHECK(model.empty() || (donor.empty() && !synthetic),
                "donor and synthetic weights apply to a workload or an ImageNet network, not to "
                "a model (which has its own weights)");
}

HardwareSpec NetworkSource::load_spec() const {
  return spec.empty() ? HardwareSpec{} : reram::load_spec(spec);
}

nlohmann::json NetworkSource::to_json() const {
  return {{"model", model},
          {"workload", workload},
          {"imagenet", imagenet ? imagenet_network_name(*imagenet) : std::string()},
          {"donor", donor},
          {"synthetic", synthetic},
          {"spec", spec}};
}

Network load_network(const NetworkSource& source, const HardwareSpec& spec, uint64_t seed) {
  source.validate();
  Network net;
  if (!source.model.empty()) {
    models::Model model = models::load(source.model);
    model->eval();
    net.workload = model->workload();
    net.uniform = quantize_model(model, net.workload, spec.weight_bits);
    net.weight_source = "trained weights of " + source.model;
    net.model = model;
    return net;
  }
  net.workload =
      source.imagenet ? imagenet_workload(*source.imagenet) : workload::load(source.workload);
  if (!source.donor.empty()) {
    models::Model donor = models::load(source.donor);
    ImagenetWeights w = imagenet_weights(net.workload, donor, source.donor, seed);
    net.uniform = quantize_all(net.workload, w.weights, spec.weight_bits);
    net.weight_source = w.source;
  } else if (source.synthetic) {
    const auto weights = synthesize_weights(net.workload, {}, seed);
    net.uniform = quantize_all(net.workload, weights, spec.weight_bits);
    net.weight_source = "i.i.d. Laplace, He scale (seed " + std::to_string(seed) + ")";
  } else {
    net.weight_source = "none (shape-only)";
  }
  return net;
}

// --------------------------------------------------------------------------------------- map

void MapOptions::validate() const {
  input.validate();
  TESSERA_CHECK(eval_images >= 0, "map: eval_images must be >= 0, got {}", eval_images);
  TESSERA_CHECK(recalibrate_bn >= 0, "map: recalibrate_bn must be >= 0, got {}", recalibrate_bn);
  TESSERA_CHECK(!eval || !input.model.empty(), "map: eval needs a trained Tessera model (--model)");
}

namespace {

MapAccuracy map_accuracy(const MapOptions& options, models::Model& model,
                         const std::vector<quant::QuantizedTensor>& uniform,
                         const std::vector<quant::QuantizedTensor>& sparse,
                         const ImageLoader& images) {
  const int64_t size = model->config().image_size;
  const data::Dataset test = first(images("test", size), options.eval_images);
  MapAccuracy acc;
  if (options.recalibrate_bn > 0) {
    acc.float_before_recalibration = train::evaluate(model, test).accuracy;
    acc.recalibration_images = options.recalibrate_bn;
    recalibrate_batch_norm(model, images("train", size), options.recalibrate_bn);
  }
  acc.float_accuracy = train::evaluate(model, test).accuracy;
  acc.uniform = quantized_accuracy(model, uniform, test);
  acc.bit_sparse = quantized_accuracy(model, sparse, test);
  acc.images = test.size();
  return acc;
}

}  // namespace

MapResult run_map(const MapOptions& options, const ImageLoader& images) {
  options.validate();
  seed_everything(options.seed);
  MapResult r;
  r.spec = options.input.load_spec();
  Network net = load_network(options.input, r.spec, options.seed);
  const bool is_sme = options.mapping == MappingKind::Sme;
  const bool has_values = !net.uniform.empty();
  r.mapping = options.mapping;
  r.weight_source = net.weight_source;
  r.sme.quantizer = options.quantizer;
  r.sme.bit_sparse = is_sme && options.bit_sparse && has_values;
  r.sme.splice = is_sme && options.splice;
  r.sme.squeeze = is_sme && options.squeeze && has_values;
  if (is_sme && !has_values) {
    log::warn(
        "no weight values (shape-only): bit-sparse quantization and squeeze-out "
        "are skipped; give --donor or --synthetic to run them");
  }
  const Timer quant_timer;
  const auto sparse = has_values ? bit_sparse_all(net.workload, net.uniform, r.sme.quantizer)
                                 : std::vector<quant::QuantizedTensor>{};
  r.quantize_seconds = quant_timer.elapsed_s();
  r.stats =
      map_network(net.workload, r.sme.bit_sparse ? sparse : net.uniform, r.spec, r.sme.mapping());
  r.baseline = map_network(net.workload, net.uniform, r.spec, MappingOptions{});
  r.reduction = crossbar_reduction(r.baseline.total.crossbars, r.stats.total.crossbars);
  if (has_values) r.ablation = ablation(net.workload, net.uniform, sparse, r.spec);
  if (options.eval) {
    r.accuracy = map_accuracy(options, *net.model, net.uniform, sparse,
                              images ? images : fashion_mnist_loader(options.data_dir));
  }
  r.config = {
      {"input", options.input.to_json()}, {"spec", r.spec.to_json()}, {"sme", r.sme.describe()}};
  return r;
}

nlohmann::json MapResult::stats_json() const {
  nlohmann::json j = stats.to_json();
  j["weights"] = weight_source;
  j["quantization"] = sme.bit_sparse ? "bit-sparse " + sme.quantizer.describe()
                                     : fmt::format("uniform {}-bit", spec.weight_bits);
  j["total"]["stats"]["baseline_crossbars"] = {
      {"value", baseline.total.crossbars},
      {"unit", "crossbars"},
      {"description", "ISAAC/NeuroSim baseline mapping of the same network and spec"}};
  j["total"]["stats"]["reduction"] = {
      {"value", reduction}, {"unit", "x"}, {"description", "baseline crossbars / crossbars"}};
  return j;
}

nlohmann::json MapResult::to_json() const {
  nlohmann::json j;
  j["total"] = stats_json()["total"];
  j["quantize_seconds"] = quantize_seconds;
  if (!ablation.empty()) j["ablation"] = ablation_table(ablation).to_json();
  if (accuracy) {
    j["accuracy"] = {{"float", accuracy->float_accuracy},
                     {"uniform", accuracy->uniform},
                     {"bit_sparse", accuracy->bit_sparse},
                     {"images", accuracy->images}};
  }
  return j;
}

Table MapResult::layer_table() const {
  Table t({"layer", "rows x cols x groups", "crossbars", "baseline", "zero xbars", "utilization %",
           "ADC conv/inf"});
  for (size_t i = 0; i < stats.layers.size(); ++i) {
    const auto& l = stats.layers[i];
    t.add_row({l.name, fmt::format("{}x{}x{}", l.rows, l.cols, l.groups),
               std::to_string(l.crossbars), std::to_string(baseline.layers[i].crossbars),
               std::to_string(l.zero_crossbars), fmt_pct(l.utilization(spec)),
               std::to_string(l.adc_conversions)});
  }
  return t;
}

Table MapResult::accuracy_table() const {
  TESSERA_CHECK(accuracy.has_value(), "map: no accuracy was measured");
  Table t({"weights", "test accuracy %", "drop vs 8-bit uniform (points)"});
  t.add_row({"float32", fmt_pct(accuracy->float_accuracy), "-"});
  t.add_row({fmt::format("uniform {}-bit", spec.weight_bits), fmt_pct(accuracy->uniform), "0.00"});
  t.add_row({"bit-sparse " + sme.quantizer.describe(), fmt_pct(accuracy->bit_sparse),
             fmt::format("{:.2f}", 100 * (accuracy->uniform - accuracy->bit_sparse))});
  return t;
}

std::string MapResult::summary(const std::string& stats_path) const {
  const double layers = static_cast<double>(stats.layers.size());
  std::string s = fmt::format("{}: {} weighted layers, {} weights; weights: {}\n", stats.model,
                              stats.layers.size(), stats.total.weights, weight_source);
  s += fmt::format(
      "mapping {} ({}): {} crossbars vs baseline {} -> {:.2f}x; utilization {:.1f}%, zero "
      "crossbars {}, ADC conversions/inference {}; mapped in {:.3f} s wall, {:.3f} s CPU on one "
      "core ({:.0f} layers/s wall, {:.0f} layers/s CPU); wrote {}\n",
      sme.describe(), mapping_kind_name(mapping), stats.total.crossbars, baseline.total.crossbars,
      reduction, 100 * stats.total.utilization(spec), stats.total.zero_crossbars,
      stats.total.adc_conversions, stats.map_seconds, stats.map_cpu_seconds,
      layers / std::max(stats.map_seconds, 1e-9), layers / std::max(stats.map_cpu_seconds, 1e-9),
      stats_path);
  if (stats.total.energy_pj)
    s += fmt::format("energy {:.4g} pJ/inference\n", *stats.total.energy_pj);
  if (stats.total.latency_ns)
    s += fmt::format("latency {:.4g} ns/inference\n", *stats.total.latency_ns);
  return s;
}

std::string MapResult::accuracy_text() const {
  std::string s;
  if (accuracy && accuracy->recalibration_images > 0) {
    s += fmt::format(
        "BN statistics re-estimated over {} training images (float32 test accuracy before: "
        "{:.2f}%)\n",
        accuracy->recalibration_images, 100 * accuracy->float_before_recalibration);
  }
  return s + "\n" + accuracy_table().to_string();
}

// ------------------------------------------------------------------------------------- sweep

void SweepOptions::validate() const {
  input.validate();
  TESSERA_CHECK(!sizes.empty() && !cells.empty() && !settings.empty(),
                "sweep: sizes, cells and settings must each have at least one value");
  TESSERA_CHECK(eval_images >= 0, "sweep: eval_images must be >= 0, got {}", eval_images);
}

nlohmann::json SweepOptions::to_json() const {
  std::vector<std::string> names;
  for (const auto& s : settings) names.push_back(quantizer_setting_name(s));
  return {{"model", input.model},
          {"workload", input.workload},
          {"imagenet", input.imagenet ? imagenet_network_name(*input.imagenet) : std::string()},
          {"donor", input.donor},
          {"sizes", sizes},
          {"cells", cells},
          {"settings", names},
          {"scope", position_scope_name(scope)},
          {"eval_images", eval_images}};
}

namespace {

// The spec of one sweep point: square crossbars of side `size`, `cell` bits per cell.
HardwareSpec sweep_spec(const HardwareSpec& base, int64_t size, int cell) {
  HardwareSpec spec = base;
  spec.crossbar_rows = spec.crossbar_cols = size;
  spec.cell_bits = cell;
  spec.columns_per_adc = std::min(spec.columns_per_adc, size);
  spec.validate();
  return spec;
}

// Accuracy of each setting's bit-sparse weights on `model` (it does not depend on the crossbar
// geometry, so each quantizer is evaluated once); fills the uniform accuracy too.
std::vector<double> sweep_accuracies(const SweepOptions& options, models::Model& model,
                                     const HardwareSpec& spec, const ImageLoader& images,
                                     SweepResult& result, ProgressBar& bar) {
  const data::Dataset test = first(images("test", model->config().image_size), options.eval_images);
  const workload::Workload w = model->workload();
  const auto uniform = quantize_model(model, w, spec.weight_bits);
  result.accuracy_arch = model->config().name;
  result.test_images = test.size();
  result.uniform_accuracy = quantized_accuracy(model, uniform, test);
  std::vector<double> out;
  for (const QuantizerSetting& s : options.settings) {
    out.push_back(quantized_accuracy(
        model, bit_sparse_all(w, uniform, quantizer_of(s, options.scope)), test));
    bar.update();
  }
  return out;
}

}  // namespace

SweepResult run_sweep(const SweepOptions& options, const ImageLoader& images) {
  options.validate();
  seed_everything(options.seed);
  const HardwareSpec base_spec = options.input.load_spec();
  Network net = load_network(options.input, base_spec, options.seed);
  TESSERA_CHECK(!net.uniform.empty(),
                "sweep needs weight values: give --model, or --donor/--synthetic with a workload");
  // Accuracy comes from the model itself, or from accuracy_model (the donor, typically).
  std::optional<models::Model> acc_model = net.model;
  if (!options.accuracy_model.empty()) {
    acc_model = models::load(options.accuracy_model);
    (*acc_model)->eval();
  }
  SweepResult result;
  result.model = net.workload.model;
  result.weight_source = net.weight_source;
  const int64_t n_settings = static_cast<int64_t>(options.settings.size());
  const int64_t n_maps = static_cast<int64_t>(options.sizes.size() * options.cells.size());
  ProgressBar bar("reram sweep", (acc_model ? n_settings : 0) + n_maps * (1 + n_settings));
  std::vector<double> accuracy(options.settings.size(), -1.0);
  if (acc_model) {
    accuracy =
        sweep_accuracies(options, *acc_model, base_spec,
                         images ? images : fashion_mnist_loader(options.data_dir), result, bar);
  }
  // Points are ordered sizes x cells x settings; each setting's projection (independent of the
  // crossbar geometry) is computed once and mapped onto every geometry.
  std::vector<HardwareSpec> specs;
  for (int64_t size : options.sizes) {
    for (int cell : options.cells) {
      specs.push_back(sweep_spec(base_spec, size, cell));
      const int64_t base = map_network(net.workload, net.uniform, specs.back(), {}).total.crossbars;
      for (size_t i = 0; i < options.settings.size(); ++i) {
        result.points.push_back(
            {size, cell, quantizer_of(options.settings[i], options.scope), base, 0, accuracy[i]});
      }
      bar.update();
    }
  }
  for (size_t i = 0; i < options.settings.size(); ++i) {
    const auto sparse = bit_sparse_all(net.workload, net.uniform, result.points[i].quantizer);
    for (size_t g = 0; g < specs.size(); ++g) {
      SweepPoint& p = result.points[g * options.settings.size() + i];
      p.sme_crossbars = map_network(net.workload, sparse, specs[g], {true, true}).total.crossbars;
      bar.update();
    }
  }
  bar.finish();
  result.config = options.to_json();
  return result;
}

Table SweepResult::table() const {
  Table t({"crossbar", "cell bits", "quantizer", "baseline xbars", "SME xbars", "reduction",
           "accuracy %"});
  for (const SweepPoint& p : points) {
    t.add_row({fmt::format("{}x{}", p.crossbar, p.crossbar), std::to_string(p.cell_bits),
               p.quantizer.describe(), std::to_string(p.baseline_crossbars),
               std::to_string(p.sme_crossbars), fmt_ratio(p.reduction()),
               p.accuracy >= 0 ? fmt_pct(p.accuracy) : "-"});
  }
  return t;
}

nlohmann::json SweepResult::to_json() const {
  nlohmann::json j = nlohmann::json::array();
  for (const SweepPoint& p : points) {
    j.push_back({{"crossbar", p.crossbar},
                 {"cell_bits", p.cell_bits},
                 {"quantizer", p.quantizer.describe()},
                 {"baseline_crossbars", p.baseline_crossbars},
                 {"sme_crossbars", p.sme_crossbars},
                 {"accuracy", p.accuracy}});
  }
  return {{"points", j}, {"uniform_accuracy", uniform_accuracy}};
}

std::string SweepResult::summary() const {
  const std::string accuracy =
      accuracy_arch.empty()
          ? std::string("not measured (no model)")
          : fmt::format("{} on {} Fashion-MNIST test images (uniform 8-bit {:.2f}%)", accuracy_arch,
                        test_images, 100 * uniform_accuracy);
  return fmt::format("{}; weights: {}; accuracy: {}\n", model, weight_source, accuracy);
}

std::string SweepResult::svg() const {
  if (accuracy_arch.empty()) return "";
  // One series per (crossbar, cell bits), in the order of the points, each sorted by crossbars.
  std::vector<SvgSeries> series;
  SvgSeries baseline{"baseline, uniform 8-bit", {}, false};
  for (size_t i = 0; i < points.size(); ++i) {
    const SweepPoint& p = points[i];
    if (i == 0 || p.crossbar != points[i - 1].crossbar || p.cell_bits != points[i - 1].cell_bits) {
      series.push_back(
          {fmt::format("{}x{}, {}-bit cells", p.crossbar, p.crossbar, p.cell_bits), {}, true});
      baseline.points.push_back({double(p.baseline_crossbars), 100 * uniform_accuracy});
    }
    series.back().points.push_back({double(p.sme_crossbars), 100 * p.accuracy});
  }
  SvgPlot plot(model + ": SME crossbars vs accuracy", "crossbars (log)",
               "Fashion-MNIST test accuracy (%)");
  plot.set_log_x(true);
  for (SvgSeries& s : series) {
    std::sort(s.points.begin(), s.points.end());
    plot.add_series(s);
  }
  plot.add_series(baseline);
  return plot.render();
}

// ------------------------------------------------------------------------------ tour, models

std::vector<TourRow> tour(const TourContext& context) {
  std::vector<TourRow> rows;
  const HardwareSpec spec;
  for (ImagenetNetwork network : {ImagenetNetwork::ResNet50, ImagenetNetwork::MobileNetV2}) {
    const std::string name = imagenet_network_name(network);
    const workload::Workload w = imagenet_workload(network);
    const auto uniform = quantize_all(w, synthesize_weights(w, {}, context.seed), 8);
    const auto sparse = bit_sparse_all(w, uniform, BitSparseOptions{});
    const int64_t base = map_network(w, uniform, spec, {}).total.crossbars;
    const NetworkStats sme = map_network(w, sparse, spec, {true, true});
    rows.push_back(
        {"reram (SME)",
         fmt::format("{} crossbars {} -> {} ({:.2f}x, i.i.d. weights, mapped in {:.2f} s)", name,
                     base, sme.total.crossbars, crossbar_reduction(base, sme.total.crossbars),
                     sme.map_seconds),
         fmt::format("{:.1f}x crossbar reduction ({}, ImageNet)", paper_crossbar_reduction(network),
                     name)});
  }
  return rows;
}

std::vector<train::ReferenceModel> reference_models() {
  constexpr int64_t kFashionMnistTrainImages = 60000;
  const BenchOptions defaults;
  std::vector<train::ReferenceModel> out;
  for (ImagenetNetwork network : {ImagenetNetwork::ResNet50, ImagenetNetwork::MobileNetV2}) {
    const DonorTraining training = defaults.donor_training(network);
    train::ReferenceModel m;
    m.name = fmt::format("reram-{}-fmnist{}", training.arch, training.image_size);
    m.description = fmt::format(
        "reram bench's {} donor: {} on the first {} Fashion-MNIST images at {}x{}, {} epochs, "
        "SGD lr {} (per-step warm-up + cosine), BN re-estimated over {} images",
        imagenet_network_name(network), training.arch, training.train_images, training.image_size,
        training.image_size, training.epochs, training.lr, kDonorBatchNormImages);
    m.recipe = [training] { return training.recipe(kFashionMnistTrainImages); };
    m.build = [training](const std::string& data_dir) {
      const data::Dataset train_set = load_fashion_mnist_at("train", data_dir, training.image_size);
      return load_or_train_donor("", training, train_set).model;
    };
    out.push_back(std::move(m));
  }
  return out;
}

}  // namespace tessera::reram
