// `tessera reram ...`: the SME ReRAM crossbar simulator (arXiv 2103.01705). The flags bind into
// reram's options; map, sweep, bench and the tour step are library functions (reram/bench.h).
#include <iostream>
#include <memory>

#include "cli.h"
#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/report.h"
#include "tessera/reram/bench.h"
#include "tessera/reram/bench_budget.h"

namespace {

namespace reram = tessera::reram;

// A flag whose text a library parse_ function reads into `value`; a bad value is a usage error
// (exit 2), and the help shows `shown` as the default.
template <typename T, typename Parse>
CLI::Option* add_parsed_option(CLI::App* app, const std::string& flag, T& value, Parse parse,
                               const std::string& shown, const std::string& help) {
  auto read = [&value, parse, flag](const std::string& text) {
    try {
      value = parse(text);
    } catch (const tessera::Error& e) {
      throw CLI::ValidationError(flag, e.what());
    }
  };
  return app->add_option_function<std::string>(flag, read, help)->default_str(shown);
}

// The same for a comma-separated list (space-separated values work too).
template <typename T, typename Parse, typename Name>
CLI::Option* add_parsed_list(CLI::App* app, const std::string& flag, std::vector<T>& values,
                             Parse parse, Name name, const std::string& help) {
  std::string shown;
  for (const T& v : values) shown += (shown.empty() ? "" : ",") + name(v);
  auto read = [&values, parse, flag](const std::vector<std::string>& items) {
    values.clear();
    for (const std::string& item : items) {
      try {
        values.push_back(parse(item));
      } catch (const tessera::Error& e) {
        throw CLI::ValidationError(flag, e.what());
      }
    }
  };
  return app->add_option_function<std::vector<std::string>>(flag, read, help)
      ->delimiter(',')
      ->default_str(shown);
}

void add_source_flags(CLI::App* sub, reram::NetworkSource& in) {
  sub->add_option("--model", in.model,
                  "model file (Tessera or TorchScript): shapes + trained weights")
      ->capture_default_str();
  sub->add_option("--workload", in.workload, "workload JSON (core/workload format)")
      ->capture_default_str();
  add_parsed_option(sub, "--imagenet", in.imagenet, reram::parse_imagenet_network, "",
                    "built-in ImageNet-shaped network: resnet50, mobilenetv2");
  sub->add_option("--donor", in.donor,
                  "with --workload/--imagenet: trained model file whose weights are copied (same "
                  "architecture) or whose rows are resampled onto the shapes")
      ->capture_default_str();
  sub->add_flag("--synthetic", in.synthetic,
                "with --workload/--imagenet and no --donor: i.i.d. Laplace weights");
  sub->add_option("--spec", in.spec, "hardware spec JSON (default: the documented defaults)")
      ->capture_default_str();
}

void add_quantizer_flags(CLI::App* sub, reram::BitSparseOptions& q) {
  sub->add_option("--terms", q.max_terms, "bit-sparse: non-zero bits kept per weight (t)")
      ->capture_default_str();
  sub->add_option("--positions", q.n_positions,
                  "bit-sparse: allowed bit positions per scope (K, 0 = all)")
      ->capture_default_str();
  add_parsed_option(sub, "--scope", q.scope, reram::parse_position_scope,
                    reram::position_scope_name(q.scope),
                    "bit-sparse: where positions are chosen: row or layer");
}

void add_map_flags(CLI::App* sub, reram::MapOptions& o) {
  add_source_flags(sub, o.input);
  add_quantizer_flags(sub, o.quantizer);
  add_parsed_option(sub, "--mapping", o.mapping, reram::parse_mapping_kind,
                    reram::mapping_kind_name(o.mapping), "sme or baseline");
  sub->add_flag_callback(
      "--no-bit-sparse", [&o] { o.bit_sparse = false; }, "SME without bit-sparse quantization");
  sub->add_flag_callback(
      "--no-splice", [&o] { o.splice = false; }, "SME without bit-slice splicing");
  sub->add_flag_callback(
      "--no-squeeze", [&o] { o.squeeze = false; }, "SME without squeeze-out");
  sub->add_flag("--eval", o.eval,
                "with --model: Fashion-MNIST test accuracy of uniform vs bit-sparse weights");
  sub->add_option("--recalibrate-bn", o.recalibrate_bn,
                  "with --eval: first re-estimate the BN statistics over N training images (0 = "
                  "keep the file's)")
      ->capture_default_str();
  sub->add_option("--eval-images", o.eval_images, "evaluate on the first N test images (0 = all)")
      ->capture_default_str();
  tessera::cli::add_data_option(sub, o.data_dir);
  tessera::cli::add_seed_option(sub, o.seed);
}

void add_settings_flag(CLI::App* sub, const std::string& flag,
                       std::vector<reram::QuantizerSetting>& settings, const std::string& help) {
  add_parsed_list(sub, flag, settings, reram::parse_quantizer_setting,
                  reram::quantizer_setting_name, help);
}

void add_sweep_flags(CLI::App* sub, reram::SweepOptions& o) {
  add_source_flags(sub, o.input);
  sub->add_option("--sizes", o.sizes, "square crossbar sizes")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--cells", o.cells, "cell bits")->delimiter(',')->capture_default_str();
  add_settings_flag(sub, "--settings", o.settings, "bit-sparse settings terms:positions");
  add_parsed_option(sub, "--scope", o.scope, reram::parse_position_scope,
                    reram::position_scope_name(o.scope), "bit-sparse position scope: row or layer");
  sub->add_option("--accuracy-model", o.accuracy_model,
                  "model file whose accuracy is measured (default: --model)")
      ->capture_default_str();
  sub->add_option("--eval-images", o.eval_images, "test images for accuracy (0 = all)")
      ->capture_default_str();
  tessera::cli::add_data_option(sub, o.data_dir);
  tessera::cli::add_seed_option(sub, o.seed);
}

void add_fine_tune_flags(CLI::App* sub, reram::FineTuneOptions& o) {
  sub->add_option("--fine-tune-steps", o.steps,
                  "quantization-aware fine-tuning steps per setting (STE; 0 = none)")
      ->capture_default_str();
  sub->add_option("--fine-tune-batch", o.batch_size, "fine-tuning batch size")
      ->capture_default_str();
  sub->add_option("--fine-tune-lr", o.lr, "fine-tuning peak lr (cosine to 0)")
      ->capture_default_str();
}

// The donors of `reram bench`: which networks, which models, how they are trained.
void add_bench_donor_flags(CLI::App* sub, reram::BenchOptions& o) {
  add_parsed_list(sub, "--networks", o.networks, reram::parse_imagenet_network,
                  reram::imagenet_network_name, "ImageNet-shaped networks: resnet50, mobilenetv2");
  sub->add_option("--resnet-arch", o.resnet_arch,
                  "registry architecture trained as the ResNet-50 weight donor (resnet50: the "
                  "same architecture; another: its rows are resampled)")
      ->capture_default_str();
  sub->add_option("--resnet-donor", o.resnet_donor, "trained model file (skips training)")
      ->capture_default_str();
  sub->add_option("--mobilenet-donor", o.mobilenet_donor, "trained model file (skips training)")
      ->capture_default_str();
  sub->add_option("--resnet-image-size", o.resnet_image_size,
                  "reduced Fashion-MNIST input side of the ResNet donor")
      ->capture_default_str();
  sub->add_option("--mobilenet-image-size", o.mobilenet_image_size,
                  "reduced Fashion-MNIST input side of the MobileNetV2 donor")
      ->capture_default_str();
  sub->add_option("--epochs", o.epochs, "donor training epochs")->capture_default_str();
  sub->add_option("--train-images", o.train_images, "donor training images")->capture_default_str();
  sub->add_option("--lr", o.lr, "donor training peak learning rate")->capture_default_str();
}

void add_bench_flags(CLI::App* sub, reram::BenchOptions& o) {
  add_bench_donor_flags(sub, o);
  sub->add_option("--work-dir", o.work_dir, "where fine-tuned donors are saved")
      ->capture_default_str();
  sub->add_option("--val-images", o.val_images,
                  "held-out training images for choosing the quantizer")
      ->capture_default_str();
  sub->add_option("--test-images", o.test_images, "first N test images (0 = all 10000)")
      ->capture_default_str();
  add_settings_flag(sub, "--settings", o.settings, "bit-sparse settings terms:positions to try");
  add_parsed_option(sub, "--scope", o.scope, reram::parse_position_scope,
                    reram::position_scope_name(o.scope), "bit-sparse position scope: row or layer");
  sub->add_option("--max-drop", o.max_drop_points, "accuracy budget in points (validation)")
      ->capture_default_str();
  add_fine_tune_flags(sub, o.fine_tune);
  add_settings_flag(sub, "--fine-tune-settings", o.fine_tune_settings,
                    "fine-tune only these of --settings (default: all of them)");
  sub->add_option("--timing-repeats", o.timing_repeats, "ResNet-50 mapping timing runs")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  sub->add_option("--spec", o.spec, "hardware spec JSON (default: the documented defaults)")
      ->capture_default_str();
  tessera::cli::add_data_option(sub, o.data_dir);
  tessera::cli::add_seed_option(sub, o.seed);
}

// ---------------------------------------------------------------------------------- commands

struct MapOutput {
  std::string out = "stats.json";
  std::string json;
  bool layers = false;
};

void run_map(const reram::MapOptions& options, const MapOutput& output) {
  tessera::cli::check_writable({output.out, output.json});
  const reram::MapResult r = reram::run_map(options);
  if (!output.out.empty()) tessera::write_file_atomic(output.out, r.stats_json().dump(2) + "\n");
  if (output.layers) std::cout << r.layer_table().to_string() << "\n";
  std::cout << r.summary(output.out);
  if (!r.ablation.empty()) {
    std::cout << "\nstep shares (each combination of the three SME steps):\n"
              << reram::ablation_table(r.ablation).to_string();
  }
  if (r.accuracy) std::cout << r.accuracy_text();
  tessera::Report report("reram map", r.config, options.seed);
  report.results() = r.to_json();
  report.write(output.json);
}

void register_map(CLI::App* group) {
  auto options = std::make_shared<reram::MapOptions>();
  auto output = std::make_shared<MapOutput>();
  auto* sub =
      group->add_subcommand("map", "map one network onto ReRAM crossbars; write stats.json");
  add_map_flags(sub, *options);
  sub->add_flag("--layers", output->layers, "print the per-layer table");
  sub->add_option("-o,--out", output->out, "stats.json path (empty: none)")->capture_default_str();
  tessera::cli::add_json_option(sub, output->json);
  sub->callback([options, output] { run_map(*options, *output); });
}

struct SweepOutput {
  std::string svg = "reram_sweep.svg";
  std::string json;
};

void run_sweep(const reram::SweepOptions& options, const SweepOutput& output) {
  const reram::SweepResult r = reram::run_sweep(options);
  std::cout << r.summary() << r.table().to_string();
  const std::string svg = r.svg();
  if (!svg.empty() && !output.svg.empty()) {
    tessera::write_file_atomic(output.svg, svg);
    std::cout << "wrote " << output.svg << "\n";
  }
  tessera::Report report("reram sweep", r.config, options.seed);
  report.results() = r.to_json();
  report.write(output.json);
}

void register_sweep(CLI::App* group) {
  auto options = std::make_shared<reram::SweepOptions>();
  auto output = std::make_shared<SweepOutput>();
  auto* sub = group->add_subcommand(
      "sweep", "crossbar size x cell bits x quantizer: crossbars and accuracy, SVG plot");
  add_sweep_flags(sub, *options);
  sub->add_option("--svg", output->svg, "SVG plot of crossbars vs accuracy (empty: none)")
      ->capture_default_str();
  tessera::cli::add_json_option(sub, output->json);
  sub->callback([options, output] { run_sweep(*options, *output); });
}

void run_bench(const reram::BenchOptions& options, const std::string& json) {
  const reram::BenchResult r = reram::run_bench(options);
  std::cout << r.summary() << "\n"
            << r.paper_table().to_string() << "\n"
            << r.detail_table().to_string() << r.details();
  tessera::Report report("reram bench", r.config, options.seed);
  report.results() = r.to_json();
  report.write(json);
}

void register_bench(CLI::App* group) {
  auto options = std::make_shared<reram::BenchOptions>();
  auto json = std::make_shared<std::string>();
  auto* sub = group->add_subcommand(
      "bench", "the paper's table (crossbar reduction at <= 0.3 points drop) beside ours");
  add_bench_flags(sub, *options);
  tessera::cli::add_json_option(sub, *json);
  sub->callback([options, json] { run_bench(*options, *json); });
}

void run_budgets(const reram::BudgetBenchOptions& options, const std::string& json) {
  tessera::cli::check_writable({json});
  const reram::BudgetBenchResult r = reram::run_budget_bench(options);
  std::cout << r.summary() << "\n"
            << r.ratio_table().to_string() << "\n"
            << r.cost_table().to_string();
  tessera::Report report("reram budgets", r.config, options.base.seed);
  report.results() = r.to_json();
  report.write(json);
}

void register_budgets(CLI::App* group) {
  auto options = std::make_shared<reram::BudgetBenchOptions>();
  auto json = std::make_shared<std::string>();
  auto* sub = group->add_subcommand(
      "budgets", "per-row plane budgets + residual squeeze-out against the named baselines");
  reram::BenchOptions& b = options->base;
  add_bench_donor_flags(sub, b);
  sub->add_option("--resnet-budgets", options->resnet_budgets, "mean plane budgets (ResNet-50)")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--mobilenet-budgets", options->mobilenet_budgets,
                  "mean plane budgets (MobileNetV2)")
      ->delimiter(',')
      ->capture_default_str();
  sub->add_option("--residual-fill", options->residual_fill,
                  "blocks filling less than this of a crossbar move to the residual (0: none)")
      ->capture_default_str();
  sub->add_option("--fisher-images", options->fisher_images, "images of the Fisher sensitivity")
      ->capture_default_str();
  sub->add_option("--val-images", b.val_images, "held-out training images (selection)")
      ->capture_default_str();
  sub->add_option("--test-images", b.test_images, "first N test images (0 = all 10000)")
      ->capture_default_str();
  sub->add_option("--max-drop", b.max_drop_points, "validation budget in points")
      ->capture_default_str();
  add_fine_tune_flags(sub, b.fine_tune);
  sub->add_option("--spec", b.spec, "SME hardware spec JSON (default: the diff8 baseline's)")
      ->capture_default_str();
  tessera::cli::add_data_option(sub, b.data_dir);
  tessera::cli::add_seed_option(sub, b.seed);
  tessera::cli::add_json_option(sub, *json);
  sub->callback([options, json] { run_budgets(*options, *json); });
}

struct ExportOptions {
  reram::ImagenetNetwork network = reram::ImagenetNetwork::ResNet50;
  std::string out;
};

void register_export(CLI::App* group) {
  auto options = std::make_shared<ExportOptions>();
  auto* sub =
      group->add_subcommand("export-workload", "write a built-in ImageNet-shaped workload as JSON");
  add_parsed_option(sub, "--imagenet", options->network, reram::parse_imagenet_network,
                    reram::imagenet_network_name(options->network), "resnet50 or mobilenetv2");
  sub->add_option("-o,--out", options->out, "JSON path")->required();
  sub->callback([options] {
    tessera::workload::save(options->out, reram::imagenet_workload(options->network));
    std::cout << "wrote " << options->out << "\n";
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
  register_budgets(group);
  register_export(group);
  tour.add("reram", &reram::tour);
  tour.add_references(reram::reference_models());
}
