// `tessera subnet ...`: bench (the progressive search's sub-nets against US-Net at equal FLOPs)
// and info (the sub-nets of a sub-net file). The work is in tessera/subnet/bench.h; this file
// binds flags into its options, prints and writes reports.
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "cli.h"
#include "tessera/core/fs.h"
#include "tessera/core/report.h"
#include "tessera/core/table.h"
#include "tessera/core/timer.h"
#include "tessera/subnet/bench.h"

namespace {

namespace cli = tessera::cli;
namespace subnet = tessera::subnet;

void add_net_flags(CLI::App* cmd, subnet::SlimNetOptions& n) {
  cmd->add_option("--stage-channels", n.stage_channels, "super-net widths per stage")
      ->capture_default_str()
      ->delimiter(',');
  cmd->add_option("--blocks", n.blocks_per_stage, "BasicBlocks per stage (3: ResNet-20)")
      ->capture_default_str()
      ->check(CLI::Range(1, 16));
  cmd->add_option("--image-size", n.image_size, "input side (28: Fashion-MNIST unpadded)")
      ->capture_default_str();
}

void add_search_flags(CLI::App* cmd, subnet::SearchOptions& s) {
  cmd->add_option("--group", s.group, "channels removed per search step (g)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--targets", s.targets, "target MACs as fractions of the full net, descending")
      ->capture_default_str()
      ->delimiter(',');
  cmd->add_option("--threshold", s.threshold,
                  "fine-tune when validation accuracy drops more than this (fraction)")
      ->capture_default_str();
  cmd->add_option("--finetune-steps", s.finetune_steps, "steps of each brief fine-tune")
      ->capture_default_str();
  cmd->add_option("--finetune-lr", s.finetune_lr, "fine-tune learning rate")->capture_default_str();
  cmd->add_option("--flops-weighted", s.flops_weighted,
                  "score groups by tolerance x MACs removed (RECONSTRUCTED; true/false)")
      ->capture_default_str();
  cmd->add_option("--reselect-window", s.reselect_window,
                  "re-selection: path points after each sub-net tried")
      ->capture_default_str();
}

void add_noise_flags(CLI::App* cmd, subnet::NoiseRankOptions& n) {
  cmd->add_option("--alpha-init", n.alpha_init, "initial noise scale (PNI: 0.25)")
      ->capture_default_str();
  cmd->add_option("--noise-reward", n.reward,
                  "loss -= reward x mean(alpha) during ranking (RECONSTRUCTED)")
      ->capture_default_str();
}

void add_bench_flags(CLI::App* cmd, subnet::SubnetBenchOptions& o) {
  add_net_flags(cmd, o.net);
  add_search_flags(cmd, o.search);
  add_noise_flags(cmd, o.noise);
  cmd->add_option("--train-images", o.train_images, "training images (0: all but the val ones)")
      ->capture_default_str();
  cmd->add_option("--val-images", o.val_images, "held-out training images for the search")
      ->capture_default_str();
  cmd->add_option("--batch-size", o.batch_size, "training batch size")->capture_default_str();
  cmd->add_option("--lr", o.lr, "SGD learning rate (per-step cosine)")->capture_default_str();
  cmd->add_option("--pretrain-steps", o.pretrain_steps, "noise-ranking pre-training steps")
      ->capture_default_str();
  cmd->add_option("--train-steps", o.train_steps,
                  "multi-term steps (US-Net: these + the search's fine-tune steps)")
      ->capture_default_str();
  cmd->add_flag("--distill", o.distill, "ours: in-place distillation");
  cmd->add_option("--usnet-min-width", o.usnet_min_width, "US-Net smallest width")
      ->capture_default_str();
  cmd->add_option("--usnet-distill", o.usnet_distill, "US-Net in-place distillation (true/false)")
      ->capture_default_str();
  cmd->add_option("--calibration-images", o.calibration_images, "BN calibration images")
      ->capture_default_str();
  cmd->add_option("--eval-size", o.eval_size, "test images (0: all 10000)")->capture_default_str();
  cmd->add_option("--latency-batches", o.latency_batches, "batch sizes timed")
      ->capture_default_str()
      ->delimiter(',');
  cmd->add_option("--latency-reps", o.latency_reps, "timed forwards per sub-net and batch")
      ->capture_default_str();
  cli::add_data_option(cmd, o.data_dir);
  cli::add_seed_option(cmd, o.seed);
}

struct BenchCommand {
  subnet::SubnetBenchOptions options;
  std::string json, svg, prepare_only;
};

void run_bench(const BenchCommand& c) {
  cli::check_writable({c.json, c.svg});
  c.options.validate();
  if (!c.prepare_only.empty()) {
    const auto files = subnet::prepare_models(c.options, c.prepare_only);
    std::cout << "pretrain: " << files.pretrain << "\nours: " << files.ours
              << "\nus-net: " << files.usnet << "\n";
    return;
  }
  tessera::Report report("subnet bench", c.options.to_json(), c.options.seed);
  const subnet::SubnetBenchResult result = subnet::run_subnet_bench(c.options);
  std::cout << result.to_string();
  if (!c.svg.empty()) tessera::write_file_atomic(c.svg, result.accuracy_flops_plot().render());
  report.results() = result.to_json();
  report.write(c.json);
}

void register_bench(CLI::App* group) {
  auto c = std::make_shared<BenchCommand>();
  auto* cmd = group->add_subcommand(
      "bench", "searched sub-nets against US-Net at equal FLOPs: MACs, latency, accuracy, gain");
  add_bench_flags(cmd, c->options);
  cli::add_json_option(cmd, c->json);
  cli::add_svg_option(cmd, c->svg)->description("write accuracy against MACs as an SVG plot");
  cmd->add_option("--prepare-only", c->prepare_only,
                  "only build (or find) the cached stages up to this one, then stop")
      ->check(CLI::IsMember({"pretrain", "ours", "usnet"}));
  cmd->callback([c] { run_bench(*c); });
}

void print_info(const std::string& path) {
  const tessera::Timer load_timer;
  subnet::LoadedSlimNet loaded = subnet::load_slim_net(path);
  const double load_ms = static_cast<double>(load_timer.elapsed_us()) / 1000.0;
  subnet::SlimNet& net = loaded.net;
  const auto& o = net->options();
  std::cout << o.describe() << "; stage '" << loaded.info.value("stage", "?") << "'\n";
  tessera::Table t({"#", "MMACs", "MACs %", "set_subnet us", "widths"});
  const double full = static_cast<double>(net->macs(net->full_spec()));
  for (int64_t k = 0; k < net->n_subnets(); ++k) {
    const tessera::Timer timer;
    net->set_subnet(k);
    const double us = static_cast<double>(timer.elapsed_us());
    const auto& spec = net->subnets()[static_cast<size_t>(k)];
    const auto macs = static_cast<double>(net->macs(spec));
    t.add_row({std::to_string(k), fmt::format("{:.2f}", macs / 1e6),
               fmt::format("{:.1f}", 100 * macs / full), fmt::format("{:.0f}", us),
               spec.describe(static_cast<int64_t>(o.stage_channels.size()), o.blocks_per_stage)});
  }
  std::cout << t.to_string() << fmt::format("file loaded in {:.2f} ms\n", load_ms);
}

void register_info(CLI::App* group) {
  auto path = std::make_shared<std::string>();
  auto* cmd = group->add_subcommand("info", "the sub-nets of a sub-net file and their switch time");
  cmd->add_option("--model", *path, "sub-net file (.safetensors)")->required();
  cmd->callback([path] { print_info(*path); });
}

}  // namespace

void register_subnet(CLI::App& app, tessera::cli::Tour& tour) {
  auto* group = app.add_subcommand(
      "subnet", "progressive sub-net search for dynamic inference, US-Net baseline, switching");
  group->require_subcommand(1);
  register_bench(group);
  register_info(group);
  tour.add("subnet", &subnet::tour);
  tour.add_references(subnet::reference_files());
}
