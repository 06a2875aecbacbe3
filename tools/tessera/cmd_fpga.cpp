// `tessera fpga ...`: the N3H-Core heterogeneous DSP/LUT accelerator model (arXiv 2112.08193).
// The flags bind into fpga's options; latency, bench and the tour step are library functions.
#include <iostream>
#include <memory>

#include "cli.h"
#include "tessera/core/fs.h"
#include "tessera/core/report.h"
#include "tessera/fpga/bench.h"

namespace {

namespace fpga = tessera::fpga;

void add_spec_flags(CLI::App* sub, std::string& spec, std::string& device) {
  sub->add_option("--spec", spec,
                  "accelerator spec JSON (device, dsp_core, lut_core, "
                  "resource_model); overrides --device")
      ->capture_default_str();
  sub->add_option("--device", device, "device preset: xc7z020, xc7z045, zu2eg, zu9eg")
      ->capture_default_str();
}

void add_latency_flags(CLI::App* sub, fpga::LatencyOptions& o) {
  add_spec_flags(sub, o.spec, o.device);
  sub->add_option("--workload", o.workload, "workload JSON (default: ResNet-18 ImageNet shapes)")
      ->capture_default_str();
  sub->add_option("--model", o.model, "model file (Tessera or TorchScript): its workload");
  sub->add_option("--weight-bits", o.weight_bits, "LUT-core weight bits of the middle layers")
      ->capture_default_str();
  sub->add_option("--activation-bits", o.activation_bits,
                  "LUT-core activation bits of the middle layers")
      ->capture_default_str();
  sub->add_option("--repeats", o.repeats, "timed evaluations")->capture_default_str();
}

void add_search_flags(CLI::App* sub, fpga::SearchOptions& o) {
  sub->add_option("--evaluations", o.evaluations, "designs per searcher (the shared budget)")
      ->capture_default_str();
  sub->add_option("--target-ms", o.target_ms,
                  "latency target T in ms (0: all-DSP latency / --target-speedup)")
      ->capture_default_str();
  sub->add_option("--target-speedup", o.target_speedup, "T = all-DSP latency / this")
      ->capture_default_str();
  sub->add_option("--max-weight-bits", o.max_weight_bits, "LUT-core weight bits upper bound")
      ->capture_default_str();
  sub->add_option("--min-weight-bits", o.min_weight_bits, "LUT-core weight bits lower bound")
      ->capture_default_str();
  sub->add_option("--max-activation-bits", o.max_activation_bits,
                  "LUT-core activation bits upper bound (the repository: 4)")
      ->capture_default_str();
  sub->add_option("--min-activation-bits", o.min_activation_bits,
                  "LUT-core activation bits lower bound")
      ->capture_default_str();
  sub->add_option("--proxy-scale", o.proxy_scale,
                  "accuracy proxy: points lost per unit of mean quantization-noise power")
      ->capture_default_str();
  sub->add_flag_callback(
      "--fixed-dsp-cols", [&o] { o.search_dsp_cols = false; },
      "keep the spec's DSP columns (the repository searches only the LUT core and buffers)");
  tessera::cli::add_seed_option(sub, o.seed);
}

void add_ddpg_flags(CLI::App* sub, fpga::DdpgOptions& o) {
  sub->add_option("--ddpg-warmup", o.warmup_episodes, "random-action warm-up episodes")
      ->capture_default_str();
  sub->add_option("--ddpg-hidden", o.hidden, "actor/critic hidden width")->capture_default_str();
  sub->add_option("--ddpg-noise", o.initial_noise, "initial exploration sigma")
      ->capture_default_str();
  sub->add_option("--ddpg-noise-decay", o.noise_decay, "sigma decay per episode")
      ->capture_default_str();
}

void add_accuracy_flags(CLI::App* sub, fpga::AccuracyOptions& o) {
  sub->add_option("--fine-tune-steps", o.fine_tune_steps, "QAT steps per design (0 = PTQ only)")
      ->capture_default_str();
  sub->add_option("--fine-tune-lr", o.lr, "QAT peak lr (cosine to 0)")->capture_default_str();
  sub->add_option("--fine-tune-batch", o.batch_size, "QAT batch size")->capture_default_str();
  sub->add_option("--test-images", o.test_images, "first N test images (0 = all 10000)")
      ->capture_default_str();
}

void add_bench_flags(CLI::App* sub, fpga::FpgaBenchOptions& o) {
  add_spec_flags(sub, o.spec, o.device);
  add_search_flags(sub, o.search);
  add_ddpg_flags(sub, o.ddpg);
  add_accuracy_flags(sub, o.accuracy);
  sub->add_flag_callback(
      "--no-imagenet", [&o] { o.imagenet = false; }, "skip ResNet-18 (ImageNet shapes)");
  sub->add_flag_callback(
      "--no-fmnist", [&o] { o.fmnist = false; }, "skip the Fashion-MNIST ResNet-20");
  sub->add_flag_callback(
      "--no-accuracy", [&o] { o.measure_accuracy = false; }, "latency and resources only");
  tessera::cli::add_data_option(sub, o.data_dir);
}

struct Outputs {
  std::string json, svg, layers;
};

void register_latency(CLI::App* group) {
  auto options = std::make_shared<fpga::LatencyOptions>();
  auto out = std::make_shared<Outputs>();
  auto* sub = group->add_subcommand(
      "latency", "one design on a network: per-layer split, latency, resources, evaluation time");
  add_latency_flags(sub, *options);
  tessera::cli::add_json_option(sub, out->json);
  sub->callback([options, out] {
    tessera::cli::check_writable({out->json});
    const fpga::LatencyResult r = fpga::run_latency(*options);
    std::cout << r.layers().to_string() << "\n" << r.summary();
    tessera::Report report("fpga latency", options->to_json(), 0);
    report.results() = r.to_json();
    report.write(out->json);
  });
}

void register_bench(CLI::App* group) {
  auto options = std::make_shared<fpga::FpgaBenchOptions>();
  auto out = std::make_shared<Outputs>();
  out->layers = tessera::cli::default_output("fpga_layers.md");
  auto* sub = group->add_subcommand(
      "bench",
      "random search vs DDPG, baselines, accuracy: ResNet-18 ImageNet shapes and the "
      "Fashion-MNIST ResNet-20");
  add_bench_flags(sub, *options);
  tessera::cli::add_json_option(sub, out->json);
  tessera::cli::add_svg_option(sub, out->svg);
  sub->add_option("--layers-out", out->layers, "the searched per-layer split/precision tables")
      ->capture_default_str();
  sub->callback([options, out] {
    tessera::cli::check_writable({out->json, out->svg, out->layers});
    const fpga::FpgaBenchResult r = fpga::run_bench(*options);
    std::string layers;
    for (const auto& nb : r.networks) {
      std::cout << "\n## " << nb.network << "\n\n" << nb.table().to_string();
      std::cout << "random best reward " << nb.random.best.reward << " (" << nb.random.seconds
                << " s), DDPG best reward " << nb.ddpg.best.reward << " (" << nb.ddpg.seconds
                << " s)\n";
      layers += "## " + nb.network + ": " + nb.searched.name + "\n\n" +
                nb.layer_table().to_string() + "\n";
    }
    if (!out->layers.empty()) tessera::write_file_atomic(out->layers, layers);
    if (!out->svg.empty()) tessera::write_file_atomic(out->svg, r.svg());
    tessera::Report report("fpga bench", options->to_json(), options->search.seed);
    report.results() = r.to_json();
    report.write(out->json);
    if (!out->layers.empty()) std::cout << "\nper-layer tables: " << out->layers << "\n";
  });
}

}  // namespace

void register_fpga(CLI::App& app, tessera::cli::Tour& tour) {
  auto* group = app.add_subcommand(
      "fpga", "N3H-Core DSP/LUT FPGA accelerator model: latency, search, bench (arXiv 2112.08193)");
  group->require_subcommand(1);
  register_latency(group);
  register_bench(group);
  tour.add("fpga", &fpga::tour);
  tour.add_references(fpga::reference_models());
}
