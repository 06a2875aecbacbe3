// `tessera vit ...`: bench (CP-ViT, EViT and ToMe swept over keep ratios on one trained ViT) and
// flops (the analytic MACs model, at ImageNet size by default). The work is in
// tessera/vit_prune/bench.h; this file binds flags into its options, prints and writes reports.
#include <iostream>
#include <memory>

#include "cli.h"
#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/report.h"
#include "tessera/data/dataset.h"
#include "tessera/models/model_io.h"
#include "tessera/train/cache.h"
#include "tessera/vit_prune/bench.h"

namespace {

namespace cli = tessera::cli;
namespace data = tessera::data;
namespace vit_prune = tessera::vit_prune;

void add_cascade_flags(CLI::App* cmd, vit_prune::CascadeOptions& c) {
  cmd->add_option("--ramp-fraction", c.ramp_fraction,
                  "CP-ViT: the first ceil(f x depth) blocks prune (RECONSTRUCTED)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--layer-aware", c.layer_aware,
                  "CP-ViT: share the pruning by attention range (true/false)")
      ->capture_default_str();
  cmd->add_option("--head-keep", c.head_keep_ratio, "CP-ViT: fraction of heads each block keeps")
      ->capture_default_str();
  cmd->add_option_function<std::string>(
         "--patch-score",
         [&c](const std::string& name) { c.patch_score = vit_prune::parse_patch_score(name); },
         "CP-ViT patch score: column-max (published code), cls-row or column-mean")
      ->check(CLI::IsMember({"column-max", "cls-row", "column-mean"}))
      ->default_str(vit_prune::patch_score_name(c.patch_score));
  cmd->add_option_function<std::string>(
         "--head-score",
         [&c](const std::string& name) { c.head_score = vit_prune::parse_head_score(name); },
         "CP-ViT head score: score-weighted or peak (RECONSTRUCTED)")
      ->check(CLI::IsMember({"score-weighted", "peak"}))
      ->default_str(vit_prune::head_score_name(c.head_score));
}

void add_bench_flags(CLI::App* cmd, vit_prune::VitBenchOptions& o) {
  cmd->add_option("--keep-ratios", o.keep_ratios,
                  "target fractions of patches kept after the last reduction (comma-separated)")
      ->capture_default_str()
      ->delimiter(',');
  cmd->add_option("--methods", o.methods, "cp-vit, evit, tome (comma-separated)")
      ->capture_default_str()
      ->delimiter(',')
      ->check(CLI::IsMember({"cp-vit", "evit", "tome"}));
  add_cascade_flags(cmd, o.cascade);
  cmd->add_option("--evit-fuse", o.evit_fuse, "EViT: fuse the dropped tokens (true/false)")
      ->capture_default_str();
  cmd->add_option("--tome-proportional", o.tome_proportional,
                  "ToMe: proportional attention (true/false)")
      ->capture_default_str();
  cmd->add_option("--calibration-images", o.calibration_images,
                  "CP-ViT: training images that calibrate the schedule")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--eval-size", o.eval_size, "test images for accuracy (0 = all 10000)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--latency-batches", o.latency_batches, "batch sizes timed (comma-separated)")
      ->capture_default_str()
      ->delimiter(',');
  cmd->add_option("--latency-reps", o.latency_reps, "timed forwards per configuration and batch")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option(
         "--finetune-steps", o.finetune_steps,
         "fine-tune a copy per method and keep ratio with its reduction active, N steps (0 = off)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--finetune-lr", o.finetune_lr, "fine-tune peak learning rate (AdamW)")
      ->capture_default_str();
  cmd->add_option("--finetune-distill", o.finetune_distill,
                  "fine-tune: weight of the KL to the unpruned model (0 = labels only)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cli::add_data_option(cmd, o.data_dir);
  cli::add_seed_option(cmd, o.seed);
}

struct BenchCommand {
  vit_prune::VitBenchOptions options;
  std::string model, json, svg, latency_svg;
};

void run_bench_command(const BenchCommand& c) {
  cli::check_writable({c.json, c.svg, c.latency_svg});
  c.options.validate();
  nlohmann::json config = c.options.to_json();
  config["model"] = c.model.empty() ? "vit-fmnist (reference)" : c.model;
  tessera::Report report("vit bench", config, c.options.seed);
  vit_prune::VitBenchResult result;
  if (c.model.empty()) {
    result = vit_prune::run_vit_bench(c.options);
  } else {
    tessera::models::Model model = tessera::models::load(c.model);
    const int64_t size = model->config().image_size;
    result = vit_prune::run_vit_bench(
        model, data::load_fashion_mnist("train", c.options.data_dir, size),
        data::load_fashion_mnist("test", c.options.data_dir, size), c.options);
  }
  std::cout << result.to_string();
  if (!c.svg.empty()) tessera::write_file_atomic(c.svg, result.accuracy_flops_plot().render());
  if (!c.latency_svg.empty()) {
    std::vector<std::string> plots;
    for (size_t b = 0; b < c.options.latency_batches.size(); ++b)
      plots.push_back(result.accuracy_latency_plot(b).render());
    tessera::write_file_atomic(c.latency_svg, tessera::svg_side_by_side(plots));
  }
  report.results() = result.to_json();
  report.write(c.json);
}

void register_bench(CLI::App* group) {
  auto c = std::make_shared<BenchCommand>();
  auto* cmd = group->add_subcommand(
      "bench", "CP-ViT, EViT and ToMe on one trained ViT: accuracy, MACs, latency per keep ratio");
  add_bench_flags(cmd, c->options);
  cmd->add_option("--model", c->model,
                  "ViT model file (default: the cached reference model vit-fmnist)");
  cli::add_json_option(cmd, c->json);
  cli::add_svg_option(cmd, c->svg)->description("write accuracy against MACs as an SVG plot");
  cmd->add_option("--latency-svg", c->latency_svg,
                  "write accuracy against latency (one plot per batch size) as an SVG");
  cmd->callback([c] { run_bench_command(*c); });
}

struct FlopsCommand {
  std::vector<double> keep_ratios = {0.9, 0.7, 0.5};
  vit_prune::CascadeOptions cascade;
  std::string json;
};

void register_flops(CLI::App* group) {
  auto c = std::make_shared<FlopsCommand>();
  auto* cmd = group->add_subcommand(
      "flops", "analytic MACs of DeiT-S at 224 px, unpruned and under CP-ViT, EViT and ToMe");
  cmd->add_option("--keep-ratios", c->keep_ratios, "target keep ratios (comma-separated)")
      ->capture_default_str()
      ->delimiter(',');
  cmd->add_option("--ramp-fraction", c->cascade.ramp_fraction,
                  "CP-ViT: the first ceil(f x depth) blocks prune")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cli::add_json_option(cmd, c->json);
  cmd->callback([c] {
    cli::check_writable({c->json});
    tessera::Report report("vit flops", {{"keep_ratios", c->keep_ratios}}, 0);
    const auto result = vit_prune::imagenet_flops(c->keep_ratios, c->cascade);
    std::cout << "DeiT-S / ViT-S/16 at 224 px (MACs per image; norms and softmax not counted)\n"
              << result.table.to_string();
    report.results() = result.to_json();
    report.write(c->json);
  });
}

}  // namespace

void register_vit_prune(CLI::App& app, tessera::cli::Tour& tour) {
  auto* group = app.add_subcommand(
      "vit", "CP-ViT cascade patch and head pruning, EViT and ToMe baselines (measured speed-up)");
  group->require_subcommand(1);
  register_bench(group);
  register_flops(group);
  tour.add("vit_prune", &vit_prune::tour);
  tour.add_references(vit_prune::reference_models());
}
