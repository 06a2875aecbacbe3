// `tessera reram ...`: the SME ReRAM crossbar simulator (arXiv 2103.01705). map: one network on
// one spec, stats.json out; sweep: crossbar size x cell bits x quantizer, SVG of crossbars vs
// accuracy; bench: the paper's table beside ours; and the tour row.
#include <algorithm>
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>

#include "cli.h"
#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/log.h"
#include "tessera/core/report.h"
#include "tessera/core/seed.h"
#include "tessera/core/table.h"
#include "tessera/core/timer.h"
#include "tessera/models/model_io.h"
#include "tessera/reram/imagenet.h"
#include "tessera/reram/sme.h"
#include "tessera/reram/svg.h"
#include "tessera/train/train.h"

namespace {

namespace reram = tessera::reram;
namespace models = tessera::models;
namespace quant = tessera::quant;
namespace workload = tessera::workload;
using tessera::Table;

// Where the network and its weights come from (exactly one of model / workload / imagenet).
struct InputOptions {
  std::string model;     // Tessera model file: shapes and trained weights
  std::string workload;  // workload JSON
  std::string imagenet;  // resnet50 | mobilenetv2 built in code
  std::string donor;     // trained model whose weights are resampled onto workload shapes
  bool synthetic = false;
  std::string spec;
};

struct QuantizerOptions {
  int terms = 2;
  int positions = 3;
  std::string scope = "row";
  reram::BitSparseOptions get() const {
    reram::BitSparseOptions o;
    o.max_terms = terms;
    o.n_positions = positions;
    o.scope = reram::position_scope_from_string(scope);
    return o;
  }
};

struct Network {
  workload::Workload workload;
  std::vector<quant::QuantizedTensor> uniform;  // empty: shape-only
  std::optional<models::Model> model;
  std::string weight_source;
};

std::string fmt_ratio(double x) { return fmt::format("{:.2f}x", x); }
std::string fmt_pct(double x) { return fmt::format("{:.2f}", 100.0 * x); }

// Weights for a workload from a trained model: copied when the model has the workload's
// architecture (reram::architecture_mismatch is empty), else its rows resampled onto the shapes.
std::vector<torch::Tensor> imagenet_weights(const workload::Workload& target, models::Model& donor,
                                            const std::string& donor_name, uint64_t seed,
                                            std::string& source) {
  const reram::WeightDonor d = reram::weight_donor(donor);
  const std::string mismatch = reram::architecture_mismatch(target, d);
  if (mismatch.empty()) {
    source = fmt::format(
        "trained weights of {} ({}, same architecture: conv weights copied, stem input channels "
        "tiled, FC outputs drawn from the trained rows, seed {})",
        donor_name, donor->config().name, seed);
    return reram::same_architecture_weights(target, d, seed);
  }
  source = fmt::format(
      "trained rows of {} ({}) resampled onto the shapes (seed {}; not the same "
      "architecture: {})",
      donor_name, donor->config().name, seed, mismatch);
  return reram::synthesize_weights(target, d, seed);
}

Network load_network(const InputOptions& in, const reram::HardwareSpec& spec, uint64_t seed) {
  const int given = !in.model.empty() + !in.workload.empty() + !in.imagenet.empty();
  TESSERA_CHECK(given == 1, "give exactly one of --model, --workload, --imagenet ({} given)",
                given);
  Network net;
  if (!in.model.empty()) {
    models::Model model = models::load(in.model);
    model->eval();
    net.workload = model->workload();
    net.uniform = reram::quantize_model(model, net.workload, spec.weight_bits);
    net.weight_source = "trained weights of " + in.model;
    net.model = model;
    return net;
  }
  net.workload =
      in.workload.empty() ? reram::imagenet_workload(in.imagenet) : workload::load(in.workload);
  if (!in.donor.empty()) {
    models::Model donor_model = models::load(in.donor);
    std::string source;
    const auto weights = imagenet_weights(net.workload, donor_model, in.donor, seed, source);
    net.uniform = reram::quantize_all(net.workload, weights, spec.weight_bits);
    net.weight_source = source;
  } else if (in.synthetic) {
    const auto weights = reram::synthesize_weights(net.workload, {}, seed);
    net.uniform = reram::quantize_all(net.workload, weights, spec.weight_bits);
    net.weight_source = "i.i.d. Laplace, He scale (seed " + std::to_string(seed) + ")";
  } else {
    net.weight_source = "none (shape-only)";
  }
  return net;
}

reram::HardwareSpec load_spec_or_default(const std::string& path) {
  return path.empty() ? reram::HardwareSpec{} : reram::load_spec(path);
}

void add_input_options(CLI::App* sub, InputOptions& in) {
  sub->add_option("--model", in.model,
                  "Tessera model file (.safetensors): shapes + trained weights");
  sub->add_option("--workload", in.workload, "workload JSON (core/workload format)");
  sub->add_option("--imagenet", in.imagenet,
                  "built-in ImageNet-shaped network: resnet50, mobilenetv2");
  sub->add_option("--donor", in.donor,
                  "with --workload/--imagenet: trained model file whose weight rows are resampled "
                  "onto the shapes");
  sub->add_flag("--synthetic", in.synthetic,
                "with --workload/--imagenet and no --donor: i.i.d. Laplace weights");
  sub->add_option("--spec", in.spec, "hardware spec JSON (default: the documented defaults)");
}

void add_quantizer_options(CLI::App* sub, QuantizerOptions& q) {
  sub->add_option("--terms", q.terms, "bit-sparse: non-zero bits kept per weight (t)")
      ->capture_default_str();
  sub->add_option("--positions", q.positions,
                  "bit-sparse: allowed bit positions per scope (K, 0 = all)")
      ->capture_default_str();
  sub->add_option("--scope", q.scope, "bit-sparse: where positions are chosen: row or layer")
      ->capture_default_str();
}

Table ablation_table(const std::vector<reram::AblationRow>& rows) {
  Table t({"bit-sparse quant", "splice", "squeeze-out", "crossbars", "reduction", "map s"});
  for (const auto& r : rows) {
    t.add_row({r.bit_sparse ? "on" : "-", r.splice ? "on" : "-", r.squeeze ? "on" : "-",
               std::to_string(r.crossbars), fmt_ratio(r.reduction),
               fmt::format("{:.3f}", r.seconds)});
  }
  return t;
}

// ---------------------------------------------------------------------------------------- map

struct MapCommand {
  InputOptions input;
  QuantizerOptions quantizer;
  std::string mapping = "sme";
  bool no_bit_sparse = false, no_splice = false, no_squeeze = false;
  bool layers = false;
  bool eval = false;
  int64_t eval_images = 0;
  int64_t recalibrate_bn = 0;
  std::string data_dir;
  std::string out = "stats.json";
  std::string json;
  uint64_t seed = 0;
};

void run_map(const MapCommand& cmd) {
  tessera::seed_everything(cmd.seed);
  const reram::HardwareSpec spec = load_spec_or_default(cmd.input.spec);
  TESSERA_CHECK(cmd.mapping == "sme" || cmd.mapping == "baseline",
                "--mapping '{}' is not sme or baseline", cmd.mapping);
  Network net = load_network(cmd.input, spec, cmd.seed);
  reram::SmeOptions sme;
  sme.quantizer = cmd.quantizer.get();
  const bool is_sme = cmd.mapping == "sme";
  sme.bit_sparse = is_sme && !cmd.no_bit_sparse && !net.uniform.empty();
  sme.splice = is_sme && !cmd.no_splice;
  sme.squeeze = is_sme && !cmd.no_squeeze && !net.uniform.empty();
  if (is_sme && net.uniform.empty()) {
    tessera::log::warn(
        "no weight values (shape-only): bit-sparse quantization and squeeze-out "
        "are skipped; give --donor or --synthetic to run them");
  }
  const tessera::Timer quant_timer;
  const auto sparse = net.uniform.empty()
                          ? std::vector<quant::QuantizedTensor>{}
                          : reram::bit_sparse_all(net.workload, net.uniform, sme.quantizer);
  const double quant_seconds = quant_timer.elapsed_s();
  const reram::NetworkStats stats =
      reram::map_network(net.workload, sme.bit_sparse ? sparse : net.uniform, spec, sme.mapping());
  const reram::NetworkStats baseline =
      reram::map_network(net.workload, net.uniform, spec, reram::MappingOptions{});

  nlohmann::json stats_json = stats.to_json();
  stats_json["weights"] = net.weight_source;
  stats_json["quantization"] = sme.bit_sparse ? "bit-sparse " + sme.quantizer.describe()
                                              : fmt::format("uniform {}-bit", spec.weight_bits);
  stats_json["total"]["stats"]["baseline_crossbars"] = {
      {"value", baseline.total.crossbars},
      {"unit", "crossbars"},
      {"description", "ISAAC/NeuroSim baseline mapping of the same network and spec"}};
  const double reduction =
      static_cast<double>(baseline.total.crossbars) / std::max<int64_t>(stats.total.crossbars, 1);
  stats_json["total"]["stats"]["reduction"] = {
      {"value", reduction}, {"unit", "x"}, {"description", "baseline crossbars / crossbars"}};
  if (!cmd.out.empty()) tessera::write_file_atomic(cmd.out, stats_json.dump(2) + "\n");

  if (cmd.layers) {
    Table t({"layer", "rows x cols x groups", "crossbars", "baseline", "zero xbars",
             "utilization %", "ADC conv/inf"});
    for (size_t i = 0; i < stats.layers.size(); ++i) {
      const auto& l = stats.layers[i];
      t.add_row({l.name, fmt::format("{}x{}x{}", l.rows, l.cols, l.groups),
                 std::to_string(l.crossbars), std::to_string(baseline.layers[i].crossbars),
                 std::to_string(l.zero_crossbars), fmt_pct(l.utilization(spec)),
                 std::to_string(l.adc_conversions)});
    }
    std::cout << t.to_string() << "\n";
  }
  std::cout << fmt::format("{}: {} weighted layers, {} weights; weights: {}\n", net.workload.model,
                           stats.layers.size(), stats.total.weights, net.weight_source);
  std::cout << fmt::format(
      "mapping {} ({}): {} crossbars vs baseline {} -> {:.2f}x; utilization {:.1f}%, zero "
      "crossbars {}, ADC conversions/inference {}; mapped in {:.3f} s wall, {:.3f} s CPU on one "
      "core ({:.0f} layers/s wall, {:.0f} layers/s CPU); wrote {}\n",
      sme.describe(), cmd.mapping, stats.total.crossbars, baseline.total.crossbars, reduction,
      100 * stats.total.utilization(spec), stats.total.zero_crossbars, stats.total.adc_conversions,
      stats.map_seconds, stats.map_cpu_seconds,
      stats.layers.size() / std::max(stats.map_seconds, 1e-9),
      stats.layers.size() / std::max(stats.map_cpu_seconds, 1e-9), cmd.out);
  if (stats.total.energy_pj)
    std::cout << fmt::format("energy {:.4g} pJ/inference\n", *stats.total.energy_pj);
  if (stats.total.latency_ns)
    std::cout << fmt::format("latency {:.4g} ns/inference\n", *stats.total.latency_ns);

  tessera::Report report("reram map",
                         {{"input",
                           {{"model", cmd.input.model},
                            {"workload", cmd.input.workload},
                            {"imagenet", cmd.input.imagenet},
                            {"donor", cmd.input.donor},
                            {"synthetic", cmd.input.synthetic}}},
                          {"spec", spec.to_json()},
                          {"sme", sme.describe()}},
                         cmd.seed);
  report.results()["total"] = stats_json["total"];
  report.results()["quantize_seconds"] = quant_seconds;
  if (!net.uniform.empty()) {
    const auto rows = reram::ablation(net.workload, net.uniform, sparse, spec);
    std::cout << "\nstep shares (each combination of the three SME steps):\n"
              << ablation_table(rows).to_string();
    report.results()["ablation"] = ablation_table(rows).to_json();
  }
  if (cmd.eval) {
    TESSERA_CHECK(net.model.has_value(), "--eval needs --model (a trained Tessera model)");
    const int64_t size = (*net.model)->config().image_size;
    tessera::data::Dataset test = reram::load_fashion_mnist_at("test", cmd.data_dir, size);
    if (cmd.eval_images > 0 && cmd.eval_images < test.size()) test = test.head(cmd.eval_images);
    if (cmd.recalibrate_bn > 0) {
      const double before = tessera::train::evaluate(*net.model, test).accuracy;
      reram::recalibrate_batch_norm(*net.model,
                                    reram::load_fashion_mnist_at("train", cmd.data_dir, size),
                                    cmd.recalibrate_bn);
      std::cout << fmt::format(
          "BN statistics re-estimated over {} training images (float32 test accuracy before: "
          "{:.2f}%)\n",
          cmd.recalibrate_bn, 100 * before);
    }
    const double acc_float = tessera::train::evaluate(*net.model, test).accuracy;
    const double acc_uniform = reram::quantized_accuracy(*net.model, net.uniform, test);
    const double acc_sparse = reram::quantized_accuracy(*net.model, sparse, test);
    Table t({"weights", "test accuracy %", "drop vs 8-bit uniform (points)"});
    t.add_row({"float32", fmt_pct(acc_float), "-"});
    t.add_row({fmt::format("uniform {}-bit", spec.weight_bits), fmt_pct(acc_uniform), "0.00"});
    t.add_row({"bit-sparse " + sme.quantizer.describe(), fmt_pct(acc_sparse),
               fmt::format("{:.2f}", 100 * (acc_uniform - acc_sparse))});
    std::cout << "\n" << t.to_string();
    report.results()["accuracy"] = {{"float", acc_float},
                                    {"uniform", acc_uniform},
                                    {"bit_sparse", acc_sparse},
                                    {"images", test.size()}};
  }
  report.write(cmd.json);
}

void register_map(CLI::App* group) {
  auto cmd = std::make_shared<MapCommand>();
  auto* sub =
      group->add_subcommand("map", "map one network onto ReRAM crossbars; write stats.json");
  add_input_options(sub, cmd->input);
  add_quantizer_options(sub, cmd->quantizer);
  sub->add_option("--mapping", cmd->mapping, "sme or baseline")->capture_default_str();
  sub->add_flag("--no-bit-sparse", cmd->no_bit_sparse, "SME without bit-sparse quantization");
  sub->add_flag("--no-splice", cmd->no_splice, "SME without bit-slice splicing");
  sub->add_flag("--no-squeeze", cmd->no_squeeze, "SME without squeeze-out");
  sub->add_flag("--layers", cmd->layers, "print the per-layer table");
  sub->add_flag("--eval", cmd->eval,
                "with --model: Fashion-MNIST test accuracy of uniform vs bit-sparse weights");
  sub->add_option("--recalibrate-bn", cmd->recalibrate_bn,
                  "with --eval: first re-estimate the BN statistics over N training images (0 = "
                  "keep the file's)")
      ->capture_default_str();
  sub->add_option("--eval-images", cmd->eval_images,
                  "evaluate on the first N test images (0 = all)")
      ->capture_default_str();
  sub->add_option("-o,--out", cmd->out, "stats.json path (empty: none)")->capture_default_str();
  tessera::cli::add_data_option(sub, cmd->data_dir);
  tessera::cli::add_seed_option(sub, cmd->seed);
  tessera::cli::add_json_option(sub, cmd->json);
  sub->callback([cmd] { run_map(*cmd); });
}

// -------------------------------------------------------------------------------------- sweep

struct SweepCommand {
  InputOptions input;
  std::vector<int64_t> sizes = {64, 128, 256};
  std::vector<int> cells = {1, 2};
  std::vector<std::string> settings = {"1:1", "1:2", "2:2", "2:3", "3:4", "7:0"};
  std::string scope = "row";
  std::string accuracy_model;
  int64_t eval_images = 2000;
  std::string data_dir;
  std::string svg = "reram_sweep.svg";
  std::string json;
  uint64_t seed = 0;
};

std::pair<int, int> parse_setting(const std::string& s) {
  const auto colon = s.find(':');
  TESSERA_CHECK(colon != std::string::npos, "--settings item '{}' is not terms:positions", s);
  try {
    return {std::stoi(s.substr(0, colon)), std::stoi(s.substr(colon + 1))};
  } catch (const std::exception&) {
    TESSERA_CHECK(false, "--settings item '{}' is not terms:positions (integers)", s);
  }
  return {0, 0};
}

/// The bit-sparse quantizer of one `--settings` item ("terms:positions") with the given scope.
reram::BitSparseOptions quantizer_of(const std::string& setting, const std::string& scope) {
  const auto [t, k] = parse_setting(setting);
  reram::BitSparseOptions q;
  q.max_terms = t;
  q.n_positions = k;
  q.scope = reram::position_scope_from_string(scope);
  return q;
}

void run_sweep(const SweepCommand& cmd) {
  tessera::seed_everything(cmd.seed);
  const reram::HardwareSpec base_spec = load_spec_or_default(cmd.input.spec);
  Network net = load_network(cmd.input, base_spec, cmd.seed);
  TESSERA_CHECK(!net.uniform.empty(),
                "sweep needs weight values: give --model, or --donor/--synthetic with a workload");
  // Accuracy comes from the model itself, or from --accuracy-model (the donor, typically).
  std::optional<models::Model> acc_model = net.model;
  if (!cmd.accuracy_model.empty()) {
    acc_model = models::load(cmd.accuracy_model);
    (*acc_model)->eval();
  }
  std::optional<tessera::data::Dataset> test;
  std::vector<quant::QuantizedTensor> acc_uniform;
  double acc_uniform_value = -1;
  if (acc_model) {
    test = reram::load_fashion_mnist_at("test", cmd.data_dir, (*acc_model)->config().image_size);
    if (cmd.eval_images > 0 && cmd.eval_images < test->size()) test = test->head(cmd.eval_images);
    const auto w = (*acc_model)->workload();
    acc_uniform = reram::quantize_model(*acc_model, w, base_spec.weight_bits);
    acc_uniform_value = reram::quantized_accuracy(*acc_model, acc_uniform, *test);
  }
  Table table({"crossbar", "cell bits", "quantizer", "baseline xbars", "SME xbars", "reduction",
               "accuracy %"});
  nlohmann::json points = nlohmann::json::array();
  std::vector<reram::SvgSeries> series;
  reram::SvgSeries baseline_series{"baseline, uniform 8-bit", {}, false};
  // Accuracy does not depend on the crossbar geometry: evaluate each quantizer once.
  std::map<std::string, double> accuracy_of;
  for (const std::string& setting : cmd.settings) {
    reram::BitSparseOptions q = quantizer_of(setting, cmd.scope);
    double acc = -1;
    if (acc_model) {
      const auto w = (*acc_model)->workload();
      acc = reram::quantized_accuracy(*acc_model, reram::bit_sparse_all(w, acc_uniform, q), *test);
    }
    accuracy_of[setting] = acc;
  }
  for (int64_t size : cmd.sizes) {
    for (int cell : cmd.cells) {
      reram::HardwareSpec spec = base_spec;
      spec.crossbar_rows = spec.crossbar_cols = size;
      spec.cell_bits = cell;
      spec.columns_per_adc = std::min(spec.columns_per_adc, size);
      spec.validate();
      const int64_t base = reram::map_network(net.workload, net.uniform, spec, {}).total.crossbars;
      reram::SvgSeries s{fmt::format("{}x{}, {}-bit cells", size, size, cell), {}, true};
      if (acc_model) baseline_series.points.push_back({double(base), 100 * acc_uniform_value});
      for (const std::string& setting : cmd.settings) {
        reram::BitSparseOptions q = quantizer_of(setting, cmd.scope);
        const auto sparse = reram::bit_sparse_all(net.workload, net.uniform, q);
        const int64_t sme =
            reram::map_network(net.workload, sparse, spec, {true, true}).total.crossbars;
        const double acc = accuracy_of[setting];
        table.add_row({fmt::format("{}x{}", size, size), std::to_string(cell), q.describe(),
                       std::to_string(base), std::to_string(sme),
                       fmt_ratio(double(base) / std::max<int64_t>(sme, 1)),
                       acc >= 0 ? fmt_pct(acc) : "-"});
        points.push_back({{"crossbar", size},
                          {"cell_bits", cell},
                          {"quantizer", q.describe()},
                          {"baseline_crossbars", base},
                          {"sme_crossbars", sme},
                          {"accuracy", acc}});
        if (acc >= 0) s.points.push_back({double(sme), 100 * acc});
      }
      std::sort(s.points.begin(), s.points.end());
      if (!s.points.empty()) series.push_back(s);
    }
  }
  std::cout << fmt::format(
      "{}; weights: {}; accuracy: {}\n", net.workload.model, net.weight_source,
      acc_model ? fmt::format("{} on {} Fashion-MNIST test images (uniform "
                              "8-bit {:.2f}%)",
                              (*acc_model)->config().name, test->size(), 100 * acc_uniform_value)
                : std::string("not measured (no model)"));
  std::cout << table.to_string();
  if (!series.empty() && !cmd.svg.empty()) {
    reram::SvgPlot plot(net.workload.model + ": SME crossbars vs accuracy", "crossbars (log)",
                        "Fashion-MNIST test accuracy (%)");
    plot.set_log_x(true);
    for (auto& s : series) plot.add_series(s);
    plot.add_series(baseline_series);
    tessera::write_file_atomic(cmd.svg, plot.render());
    std::cout << "wrote " << cmd.svg << "\n";
  }
  tessera::Report report("reram sweep",
                         {{"model", cmd.input.model},
                          {"workload", cmd.input.workload},
                          {"imagenet", cmd.input.imagenet},
                          {"donor", cmd.input.donor},
                          {"sizes", cmd.sizes},
                          {"cells", cmd.cells},
                          {"settings", cmd.settings},
                          {"scope", cmd.scope},
                          {"eval_images", cmd.eval_images}},
                         cmd.seed);
  report.results()["points"] = points;
  report.results()["uniform_accuracy"] = acc_uniform_value;
  report.write(cmd.json);
}

void register_sweep(CLI::App* group) {
  auto cmd = std::make_shared<SweepCommand>();
  auto* sub = group->add_subcommand(
      "sweep", "crossbar size x cell bits x quantizer: crossbars and accuracy, SVG plot");
  add_input_options(sub, cmd->input);
  sub->add_option("--sizes", cmd->sizes, "square crossbar sizes")->capture_default_str();
  sub->add_option("--cells", cmd->cells, "cell bits")->capture_default_str();
  sub->add_option("--settings", cmd->settings, "bit-sparse settings terms:positions")
      ->capture_default_str();
  sub->add_option("--scope", cmd->scope, "bit-sparse position scope: row or layer")
      ->capture_default_str();
  sub->add_option("--accuracy-model", cmd->accuracy_model,
                  "model file whose accuracy is measured (default: --model)");
  sub->add_option("--eval-images", cmd->eval_images, "test images for accuracy (0 = all)")
      ->capture_default_str();
  sub->add_option("--svg", cmd->svg, "SVG plot path (empty: none)")->capture_default_str();
  tessera::cli::add_data_option(sub, cmd->data_dir);
  tessera::cli::add_seed_option(sub, cmd->seed);
  tessera::cli::add_json_option(sub, cmd->json);
  sub->callback([cmd] { run_sweep(*cmd); });
}

// -------------------------------------------------------------------------------------- bench

struct BenchCommand {
  std::vector<std::string> networks = {"resnet50", "mobilenetv2"};
  std::string resnet_arch = "resnet50";
  std::string resnet_donor, mobilenet_donor;
  std::string work_dir = "reram_bench";
  int64_t resnet_image_size = 32;
  int64_t mobilenet_image_size = 16;
  int64_t epochs = 2;
  int64_t train_images = 10000;
  int64_t val_images = 2000;
  int64_t test_images = 0;
  double lr = 0.05;
  std::vector<std::string> settings = {"3:4", "2:3", "2:2", "1:2", "1:1"};
  std::string scope = "row";
  double max_drop_points = 0.3;
  reram::FineTuneOptions fine_tune;
  std::vector<std::string> fine_tune_settings;  // empty: every setting
  int timing_repeats = 5;
  std::string spec;
  std::string data_dir;
  std::string json;
  uint64_t seed = 0;
};

// The trained Fashion-MNIST model for a donor: loaded from `path` if given or already in the work
// directory, else trained now (on the first train_images images) and saved there.
models::Model get_donor(const BenchCommand& cmd, const std::string& arch, int64_t image_size,
                        const std::string& path, const tessera::data::Dataset& train_set,
                        std::string& provenance) {
  if (!path.empty()) {
    provenance = "loaded " + path;
    models::Model m = models::load(path);
    m->eval();
    return m;
  }
  std::filesystem::create_directories(cmd.work_dir);
  const std::string file = fmt::format("{}/{}_fmnist{}_e{}_n{}_s{}.safetensors", cmd.work_dir, arch,
                                       image_size, cmd.epochs, cmd.train_images, cmd.seed);
  if (tessera::file_exists(file)) {
    provenance = "reused " + file;
    models::Model m = models::load(file);
    m->eval();
    return m;
  }
  reram::DonorTraining t;
  t.arch = arch;
  t.image_size = image_size;
  t.epochs = cmd.epochs;
  t.train_images = cmd.train_images;
  t.seed = cmd.seed;
  t.lr = cmd.lr;
  if (arch == "resnet50") t.extra = {{"zero_init_residual", 1}};
  tessera::log::info("training {} on {} Fashion-MNIST images at {}x{}, {} epochs", arch,
                     cmd.train_images, image_size, image_size, cmd.epochs);
  const tessera::Timer timer;
  models::Model m = reram::train_fashion_model(t, train_set, nullptr);
  models::save(file, m);
  provenance = fmt::format("trained here ({:.0f} s), saved {}", timer.elapsed_s(), file);
  return m;
}

// One quantizer setting of one network: accuracy of the Fashion-MNIST model and crossbars of the
// ImageNet-shaped network, without or with fine-tuning.
struct SettingResult {
  reram::BitSparseOptions q;
  bool fine_tuned = false;
  double val = 0, test = 0;  // accuracy with bit-sparse weights
  int64_t crossbars = 0, donor_crossbars = 0;
  double reduction = 0, donor_reduction = 0;
  std::vector<quant::QuantizedTensor> uniform, sparse;  // ImageNet-shaped weights
};

std::string drop_str(double reference, double accuracy) {
  return fmt::format("{:.2f}", 100 * (reference - accuracy));
}

void run_bench(const BenchCommand& cmd) {
  tessera::seed_everything(cmd.seed);
  const reram::HardwareSpec spec = load_spec_or_default(cmd.spec);
  reram::FineTuneOptions ft_options = cmd.fine_tune;
  ft_options.seed = cmd.seed;
  ft_options.validate();
  TESSERA_CHECK(
      cmd.val_images > 0 && cmd.train_images > 0 && cmd.train_images + cmd.val_images <= 60000,
      "--train-images {} + --val-images {} must be positive and fit in 60000", cmd.train_images,
      cmd.val_images);
  std::vector<reram::BitSparseOptions> quantizers;
  for (const std::string& setting : cmd.settings) {
    reram::BitSparseOptions q = quantizer_of(setting, cmd.scope);
    q.validate(spec.weight_bits - 1);
    quantizers.push_back(q);
  }
  struct Target {
    std::string name, arch, donor_path;
    int64_t image_size;
    double paper_reduction;
  };
  std::vector<Target> targets;
  for (const std::string& name : cmd.networks) {
    if (name == "resnet50") {
      targets.push_back({name, cmd.resnet_arch, cmd.resnet_donor, cmd.resnet_image_size, 8.7});
    } else if (name == "mobilenetv2") {
      targets.push_back({name, "mobilenetv2", cmd.mobilenet_donor, cmd.mobilenet_image_size, 2.1});
    } else {
      TESSERA_CHECK(false, "--networks item '{}' is not resnet50 or mobilenetv2", name);
    }
  }
  const bool fine_tune = ft_options.steps > 0;
  Table paper({"network (ImageNet shapes)", "crossbar reduction: paper", "ours, no fine-tuning",
               "ours, fine-tuned", "accuracy drop: paper", "ours (test, points): no FT / FT",
               "quantizer: no FT / FT", "weights"});
  Table detail({"network", "quantizer", "fine-tuned", "SME xbars", "reduction",
                "on the F-MNIST model", "val acc %", "val drop", "test acc %", "test drop"});
  nlohmann::json results = nlohmann::json::object();
  std::string text;
  for (const Target& target : targets) {
    const auto full_train = reram::load_fashion_mnist_at("train", cmd.data_dir, target.image_size);
    // Validation images come from the end of the training split and are never trained on; the
    // quantizer setting is chosen on them, the test set only reports.
    std::vector<int64_t> val_index;
    for (int64_t i = full_train.size() - cmd.val_images; i < full_train.size(); ++i)
      val_index.push_back(i);
    const auto val = full_train.subset(val_index);
    const auto train_subset = full_train.head(cmd.train_images);
    auto test = reram::load_fashion_mnist_at("test", cmd.data_dir, target.image_size);
    if (cmd.test_images > 0 && cmd.test_images < test.size()) test = test.head(cmd.test_images);

    std::string provenance;
    models::Model donor =
        get_donor(cmd, target.arch, target.image_size, target.donor_path, full_train, provenance);
    const workload::Workload donor_w = donor->workload();
    const auto donor_uniform = reram::quantize_model(donor, donor_w, spec.weight_bits);
    const double test_uniform = reram::quantized_accuracy(donor, donor_uniform, test);
    const bool chance = reram::at_chance(test_uniform, donor->config().num_classes);
    const double val_uniform = chance ? 0 : reram::quantized_accuracy(donor, donor_uniform, val);
    std::cout << fmt::format("{}: donor {} ({}), 8-bit uniform test accuracy {:.2f}%\n",
                             target.name, target.arch, provenance, 100 * test_uniform);
    if (chance) {
      tessera::log::warn(
          "{}: the donor {} is at chance accuracy ({:.2f}% on the test set, chance {:.0f}%): "
          "no accuracy drop is reported and no fine-tuning is done; train it longer (--epochs, "
          "--train-images) or give a trained --{}-donor",
          target.name, target.arch, 100 * test_uniform, 100.0 / donor->config().num_classes,
          target.name == "resnet50" ? "resnet" : "mobilenet");
    }

    const workload::Workload w = reram::imagenet_workload(target.name);
    std::string weight_source;
    auto imagenet_uniform = [&](models::Model& m) {
      return reram::quantize_all(w, imagenet_weights(w, m, target.arch, cmd.seed, weight_source),
                                 spec.weight_bits);
    };
    const auto uniform = imagenet_uniform(donor);
    const int64_t base = reram::map_network(w, uniform, spec, {}).total.crossbars;
    const int64_t donor_base = reram::map_network(donor_w, donor_uniform, spec, {}).total.crossbars;

    // Evaluates one setting on the (fine-tuned or not) model `m`.
    auto evaluate_setting = [&](models::Model& m, const reram::BitSparseOptions& q, bool tuned) {
      SettingResult r;
      r.q = q;
      r.fine_tuned = tuned;
      const auto m_uniform =
          tuned ? reram::quantize_model(m, donor_w, spec.weight_bits) : donor_uniform;
      const auto m_sparse = reram::bit_sparse_all(donor_w, m_uniform, q);
      if (!chance) {
        r.val = reram::quantized_accuracy(m, m_sparse, val);
        r.test = reram::quantized_accuracy(m, m_sparse, test);
      }
      r.uniform = tuned ? imagenet_uniform(m) : uniform;
      r.sparse = reram::bit_sparse_all(w, r.uniform, q);
      r.crossbars = reram::map_network(w, r.sparse, spec, {true, true}).total.crossbars;
      r.donor_crossbars = reram::map_network(donor_w, m_sparse, spec, {true, true}).total.crossbars;
      r.reduction = double(base) / std::max<int64_t>(r.crossbars, 1);
      r.donor_reduction = double(donor_base) / std::max<int64_t>(r.donor_crossbars, 1);
      return r;
    };

    nlohmann::json r = {
        {"baseline_crossbars", base},        {"donor", provenance},
        {"donor_arch", target.arch},         {"image_size", target.image_size},
        {"weights", weight_source},          {"test_uniform", test_uniform},
        {"donor_at_chance", chance},         {"donor_baseline_crossbars", donor_base},
        {"fine_tune", ft_options.describe()}};
    if (!chance) r["val_uniform"] = val_uniform;
    // Plain 8-bit uniform model fine-tuned the same way: the reference for fine-tuned drops.
    double val_ref_ft = val_uniform, test_ref_ft = test_uniform;
    if (fine_tune && !chance) {
      models::Model control =
          reram::fine_tune_quantized(donor, spec.weight_bits, nullptr, train_subset, ft_options);
      const auto control_q = reram::quantize_model(control, donor_w, spec.weight_bits);
      val_ref_ft = reram::quantized_accuracy(control, control_q, val);
      test_ref_ft = reram::quantized_accuracy(control, control_q, test);
      r["val_uniform_fine_tuned"] = val_ref_ft;
      r["test_uniform_fine_tuned"] = test_ref_ft;
      std::cout << fmt::format(
          "{}: 8-bit uniform model fine-tuned the same way ({}): test accuracy {:.2f}%\n",
          target.name, ft_options.describe(), 100 * test_ref_ft);
    }
    std::vector<SettingResult> plain, tuned;
    nlohmann::json rows = nlohmann::json::array();
    auto add_row = [&](const SettingResult& s) {
      const double vref = s.fine_tuned ? val_ref_ft : val_uniform;
      const double tref = s.fine_tuned ? test_ref_ft : test_uniform;
      detail.add_row({target.name, s.q.describe(), s.fine_tuned ? "yes" : "no",
                      std::to_string(s.crossbars), fmt_ratio(s.reduction),
                      fmt_ratio(s.donor_reduction), chance ? "-" : fmt_pct(s.val),
                      chance ? "-" : drop_str(vref, s.val), chance ? "-" : fmt_pct(s.test),
                      chance ? "-" : drop_str(tref, s.test)});
      nlohmann::json row = {{"quantizer", s.q.describe()},
                            {"fine_tuned", s.fine_tuned},
                            {"sme_crossbars", s.crossbars},
                            {"reduction", s.reduction},
                            {"donor_sme_crossbars", s.donor_crossbars}};
      if (!chance) {
        row["val_accuracy"] = s.val;
        row["test_accuracy"] = s.test;
        row["test_drop_points"] = 100 * (tref - s.test);
        if (s.fine_tuned) row["test_drop_vs_unfinetuned_uniform"] = 100 * (test_uniform - s.test);
      }
      rows.push_back(row);
    };
    for (size_t i = 0; i < quantizers.size(); ++i) {
      const reram::BitSparseOptions& q = quantizers[i];
      plain.push_back(evaluate_setting(donor, q, false));
      add_row(plain.back());
      const auto& only = cmd.fine_tune_settings;
      if (fine_tune && !chance &&
          (only.empty() || std::find(only.begin(), only.end(), cmd.settings[i]) != only.end())) {
        models::Model ft =
            reram::fine_tune_quantized(donor, spec.weight_bits, &q, train_subset, ft_options);
        const std::string file =
            fmt::format("{}/{}_fmnist{}_ft{}_t{}k{}{}_s{}.safetensors", cmd.work_dir, target.arch,
                        target.image_size, ft_options.steps, q.max_terms, q.n_positions,
                        reram::to_string(q.scope), cmd.seed);
        std::filesystem::create_directories(cmd.work_dir);
        models::save(file, ft);
        tuned.push_back(evaluate_setting(ft, q, true));
        add_row(tuned.back());
        rows.back()["model_file"] = file;
      }
    }
    r["settings"] = rows;
    // The largest reduction whose validation drop is within the budget (never at chance).
    auto choose = [&](const std::vector<SettingResult>& list, double vref) {
      int best = -1;
      for (size_t i = 0; i < list.size() && !chance; ++i) {
        if (100 * (vref - list[i].val) <= cmd.max_drop_points &&
            (best < 0 || list[i].reduction > list[best].reduction)) {
          best = static_cast<int>(i);
        }
      }
      return best;
    };
    const int best_plain = choose(plain, val_uniform);
    const int best_tuned = choose(tuned, val_ref_ft);
    auto cell = [&](const std::vector<SettingResult>& list, int best, double tref) {
      if (chance) return std::pair<std::string, std::string>{"-", "refused: donor at chance"};
      if (list.empty()) return std::pair<std::string, std::string>{"-", "-"};
      if (best < 0) {
        double top = 0;
        for (const auto& s : list) top = std::max(top, s.reduction);
        return std::pair<std::string, std::string>{
            fmt::format("none within budget (max {} over the settings)", fmt_ratio(top)), "-"};
      }
      return std::pair<std::string, std::string>{fmt_ratio(list[best].reduction),
                                                 drop_str(tref, list[best].test)};
    };
    const auto [red_plain, drop_plain] = cell(plain, best_plain, test_uniform);
    const auto [red_tuned, drop_tuned] = cell(tuned, best_tuned, test_ref_ft);
    paper.add_row({target.name, fmt_ratio(target.paper_reduction), red_plain, red_tuned, "< 0.3%",
                   drop_plain + " / " + drop_tuned,
                   (best_plain >= 0 ? plain[best_plain].q.describe() : "-") + " / " +
                       (best_tuned >= 0 ? tuned[best_tuned].q.describe() : "-"),
                   weight_source.substr(0, weight_source.find(" (")) + " (" + target.arch + ")"});
    if (best_plain >= 0) r["chosen_no_fine_tuning"] = plain[best_plain].q.describe();
    if (best_tuned >= 0) r["chosen_fine_tuned"] = tuned[best_tuned].q.describe();

    // Step shares and mapping time for the chosen setting (fine-tuned first), else the first.
    const SettingResult& shown = best_tuned >= 0   ? tuned[best_tuned]
                                 : best_plain >= 0 ? plain[best_plain]
                                                   : plain.front();
    const auto ablation = reram::ablation(w, shown.uniform, shown.sparse, spec);
    text += fmt::format("\n{} step shares ({}{}{}):\n", target.name, shown.q.describe(),
                        shown.fine_tuned ? ", fine-tuned" : "",
                        (best_tuned >= 0 || best_plain >= 0) ? "" : "; no setting within budget") +
            ablation_table(ablation).to_string();
    r["ablation"] = ablation_table(ablation).to_json();
    if (target.name == "resnet50") {
      // Mapping speed on one core: the mapper is single-threaded; LibTorch is pinned to 1
      // thread too so nothing else runs in parallel.
      const int threads = torch::get_num_threads();
      torch::set_num_threads(1);
      double best_s = 1e30, sum_s = 0, sum_cpu = 0;
      for (int i = 0; i < cmd.timing_repeats; ++i) {
        const reram::NetworkStats timed = reram::map_network(w, shown.sparse, spec, {true, true});
        best_s = std::min(best_s, timed.map_seconds);
        sum_s += timed.map_seconds;
        sum_cpu += timed.map_cpu_seconds;
      }
      const double cpu_s = sum_cpu / cmd.timing_repeats;
      torch::set_num_threads(threads);
      const double mean_s = sum_s / cmd.timing_repeats;
      text += fmt::format(
          "\nResNet-50 full SME mapping on one core: wall min {:.3f} s, mean {:.3f} s; CPU "
          "mean {:.3f} s over {} runs ({:.0f} layers/s at the wall mean, {:.0f} at the CPU mean; "
          "goal < 1 s)\n",
          best_s, mean_s, cpu_s, cmd.timing_repeats, w.weighted_layers().size() / mean_s,
          w.weighted_layers().size() / cpu_s);
      r["map_cpu_seconds_mean"] = cpu_s;
      r["map_seconds_min"] = best_s;
      r["map_seconds_mean"] = mean_s;
      r["layers_per_second"] = w.weighted_layers().size() / mean_s;
    }
    results[target.name] = r;
  }
  std::cout << "\n"
            << paper.to_string() << "\n"
            << detail.to_string() << text
            << "\nDrops are in points against 8-bit uniform weights; fine-tuned drops against "
               "the 8-bit uniform model fine-tuned for the same steps.\n";
  tessera::Report report("reram bench",
                         {{"spec", spec.to_json()},
                          {"networks", cmd.networks},
                          {"resnet_image_size", cmd.resnet_image_size},
                          {"mobilenet_image_size", cmd.mobilenet_image_size},
                          {"epochs", cmd.epochs},
                          {"train_images", cmd.train_images},
                          {"val_images", cmd.val_images},
                          {"test_images", cmd.test_images},
                          {"lr", cmd.lr},
                          {"settings", cmd.settings},
                          {"scope", cmd.scope},
                          {"max_drop_points", cmd.max_drop_points},
                          {"fine_tune", ft_options.describe()},
                          {"resnet_arch", cmd.resnet_arch}},
                         cmd.seed);
  report.results() = results;
  report.results()["paper_table"] = paper.to_json();
  report.write(cmd.json);
}

void register_bench(CLI::App* group) {
  auto cmd = std::make_shared<BenchCommand>();
  auto* sub = group->add_subcommand(
      "bench", "the paper's table (crossbar reduction at <= 0.3 points drop) beside ours");
  sub->add_option("--networks", cmd->networks, "ImageNet-shaped networks: resnet50, mobilenetv2")
      ->capture_default_str();
  sub->add_option("--resnet-arch", cmd->resnet_arch,
                  "registry model trained as the ResNet-50 weight donor (resnet50: the same "
                  "architecture; another: its rows are resampled)")
      ->capture_default_str();
  sub->add_option("--resnet-donor", cmd->resnet_donor, "trained model file (skips training)");
  sub->add_option("--mobilenet-donor", cmd->mobilenet_donor, "trained model file (skips training)");
  sub->add_option("--work-dir", cmd->work_dir,
                  "where trained and fine-tuned donors are saved (and trained ones reused)")
      ->capture_default_str();
  sub->add_option("--resnet-image-size", cmd->resnet_image_size,
                  "reduced Fashion-MNIST input side of the ResNet donor")
      ->capture_default_str();
  sub->add_option("--mobilenet-image-size", cmd->mobilenet_image_size,
                  "reduced Fashion-MNIST input side of the MobileNetV2 donor")
      ->capture_default_str();
  sub->add_option("--epochs", cmd->epochs, "donor training epochs")->capture_default_str();
  sub->add_option("--train-images", cmd->train_images, "donor training images")
      ->capture_default_str();
  sub->add_option("--lr", cmd->lr, "donor training peak learning rate")->capture_default_str();
  sub->add_option("--val-images", cmd->val_images,
                  "held-out training images for choosing the quantizer")
      ->capture_default_str();
  sub->add_option("--test-images", cmd->test_images, "first N test images (0 = all 10000)")
      ->capture_default_str();
  sub->add_option("--settings", cmd->settings, "bit-sparse settings terms:positions to try")
      ->capture_default_str();
  sub->add_option("--scope", cmd->scope, "bit-sparse position scope: row or layer")
      ->capture_default_str();
  sub->add_option("--max-drop", cmd->max_drop_points, "accuracy budget in points (validation)")
      ->capture_default_str();
  sub->add_option("--fine-tune-steps", cmd->fine_tune.steps,
                  "quantization-aware fine-tuning steps per setting (STE; 0 = none)")
      ->capture_default_str();
  sub->add_option("--fine-tune-batch", cmd->fine_tune.batch_size, "fine-tuning batch size")
      ->capture_default_str();
  sub->add_option("--fine-tune-lr", cmd->fine_tune.lr, "fine-tuning peak lr (cosine to 0)")
      ->capture_default_str();
  sub->add_option("--fine-tune-settings", cmd->fine_tune_settings,
                  "fine-tune only these of --settings (default: all of them)");
  sub->add_option("--timing-repeats", cmd->timing_repeats, "ResNet-50 mapping timing runs")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--spec", cmd->spec, "hardware spec JSON (default: the documented defaults)");
  tessera::cli::add_data_option(sub, cmd->data_dir);
  tessera::cli::add_seed_option(sub, cmd->seed);
  tessera::cli::add_json_option(sub, cmd->json);
  sub->callback([cmd] { run_bench(*cmd); });
}

// ---------------------------------------------------------------------------- workload export

void register_export(CLI::App* group) {
  auto name = std::make_shared<std::string>("resnet50");
  auto out = std::make_shared<std::string>();
  auto* sub =
      group->add_subcommand("export-workload", "write a built-in ImageNet-shaped workload as JSON");
  sub->add_option("--imagenet", *name, "resnet50 or mobilenetv2")->capture_default_str();
  sub->add_option("-o,--out", *out, "JSON path")->required();
  sub->callback([name, out] {
    workload::save(*out, reram::imagenet_workload(*name));
    std::cout << "wrote " << *out << "\n";
  });
}

}  // namespace

void register_reram(CLI::App& app, tessera::cli::Tour& tour) {
  auto* group = app.add_subcommand(
      "reram", "SME ReRAM crossbar simulator: map, sweep, bench (arXiv 2103.01705)");
  group->require_subcommand(1);
  register_map(group);
  register_sweep(group);
  register_bench(group);
  register_export(group);
  tour.add("reram", [](const tessera::cli::TourContext& ctx) -> std::vector<tessera::cli::TourRow> {
    // Quick demo: ResNet-50 and MobileNetV2 at ImageNet shapes with seeded i.i.d. Laplace weights
    // (no training), default spec and quantizer: baseline vs full SME crossbars.
    std::vector<tessera::cli::TourRow> rows;
    const reram::HardwareSpec spec;
    for (const auto& [name, paper] : std::vector<std::pair<std::string, std::string>>{
             {"resnet50", "8.7x"}, {"mobilenetv2", "2.1x"}}) {
      const workload::Workload w = reram::imagenet_workload(name);
      const auto uniform = reram::quantize_all(w, reram::synthesize_weights(w, {}, ctx.seed), 8);
      const auto sparse = reram::bit_sparse_all(w, uniform, reram::BitSparseOptions{});
      const int64_t base = reram::map_network(w, uniform, spec, {}).total.crossbars;
      const reram::NetworkStats sme = reram::map_network(w, sparse, spec, {true, true});
      rows.push_back(
          {"reram (SME)",
           fmt::format("{} crossbars {} -> {} ({:.2f}x, i.i.d. weights, mapped in "
                       "{:.2f} s)",
                       name, base, sme.total.crossbars,
                       double(base) / std::max<int64_t>(sme.total.crossbars, 1), sme.map_seconds),
           paper + " crossbar reduction (" + name + ", ImageNet)"});
    }
    return rows;
  });
}
