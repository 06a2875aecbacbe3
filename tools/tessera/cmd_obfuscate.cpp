// `tessera obfuscate ...`: bench (sequence and dimension obfuscation of ResNet-18 and VGG-11 under
// a latency budget), apply (obfuscate a model file), trace (print a model's side channel). The
// work is in tessera/obfuscate/bench.h; this file binds flags, prints and writes reports.
#include <iostream>
#include <memory>

#include "cli.h"
#include "tessera/core/error.h"
#include "tessera/core/report.h"
#include "tessera/models/model_io.h"
#include "tessera/obfuscate/bench.h"

namespace {

namespace cli = tessera::cli;
namespace obf = tessera::obfuscate;

void add_recipe_flags(CLI::App* cmd, obf::AttackerRecipe& r) {
  cmd->add_option("--train-nets", r.train_nets, "random networks traced to train the attackers")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--test-nets", r.test_nets, "held-out random networks")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--trace-repeats", r.trace_repeats, "traced runs per network (median)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--max-log2-channels", r.random.max_log2_channels,
                  "random nets: channels up to 2^N (section 4.3: 9)")
      ->capture_default_str();
  cmd->add_option("--hidden", r.attacker.hidden, "attacker LSTM width")->capture_default_str();
  cmd->add_flag("--bidirectional", r.attacker.bidirectional,
                "bidirectional LSTM (section 4.3: unidirectional)");
  cmd->add_option("--epochs", r.attacker.epochs, "LSTM-CTC training epochs")->capture_default_str();
  cmd->add_option("--dim-epochs", r.attacker.dim_epochs, "dimension predictor epochs")
      ->capture_default_str();
  cmd->add_option("--attacker-seed", r.seed, "seed of the random networks and the attackers")
      ->capture_default_str();
}

void add_ga_flags(CLI::App* cmd, obf::GaOptions& g, const std::string& prefix) {
  const std::string what = prefix.empty() ? "sequence GA" : "dimension GA";
  cmd->add_option("--" + prefix + "population", g.population, what + ": population (even)")
      ->capture_default_str();
  cmd->add_option("--" + prefix + "generations", g.generations, what + ": generations")
      ->capture_default_str();
  cmd->add_option("--" + prefix + "budget", g.budget,
                  what + ": latency budget as a fraction (0.02 = 2%)")
      ->capture_default_str();
  cmd->add_option("--" + prefix + "knobs", g.knobs, what + ": knobs the GA may use")
      ->capture_default_str()
      ->delimiter(',')
      ->check(CLI::IsMember(obf::knob_names()));
  cmd->add_option("--" + prefix + "sigma", g.sigma, what + ": mutation scale")
      ->capture_default_str();
  cmd->add_option("--" + prefix + "ga-seed", g.seed, what + ": seed")->capture_default_str();
  cmd->add_option("--" + prefix + "retime-top", g.retime_top,
                  what + ": best candidates re-timed per generation (0 = off)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--" + prefix + "margin", g.margin,
                  what + ": re-timed overhead must be <= budget * (1 - margin)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 0.99));
}

void add_bench_flags(CLI::App* cmd, obf::ObfuscateBenchOptions& o) {
  cmd->add_option("--models", o.models, "models to obfuscate")
      ->capture_default_str()
      ->delimiter(',')
      ->check(CLI::IsMember({"resnet18", "vgg11_bn"}));
  cmd->add_option("--image-size", o.image_size, "input side (1 channel)")->capture_default_str();
  cmd->add_option("--width", o.width_mult, "model width multiplier")->capture_default_str();
  add_recipe_flags(cmd, o.recipe);
  add_ga_flags(cmd, o.seq_ga, "");
  add_ga_flags(cmd, o.dim_ga, "dim-");
  cmd->add_option("--ga-latency-reps", o.ga_latency_reps, "paired timing reps per GA genome")
      ->capture_default_str();
  cmd->add_option("--retime-reps", o.retime_reps,
                  "paired timing reps when the GA re-times its best candidates")
      ->capture_default_str();
  cmd->add_option("--final-latency-reps", o.final_latency_reps,
                  "paired timing reps for the reported overhead")
      ->capture_default_str();
  cmd->add_option("--final-latency-rounds", o.final_latency_rounds,
                  "rounds of those reps; the overhead is the median of their ratios")
      ->capture_default_str();
  cmd->add_option("--latency-threads", o.latency_threads,
                  "threads while latency is timed (0 = --threads; traces keep --threads)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--eval-images", o.eval_images,
                  "test images whose outputs are compared (0 = all 10000)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cli::add_data_option(cmd, o.data_dir);
  cli::add_seed_option(cmd, o.seed)->description("seed of the models' initial weights");
}

struct BenchCommand {
  obf::ObfuscateBenchOptions options;
  bool synthetic = false;
  std::string json;
};

void register_bench(CLI::App* group) {
  auto c = std::make_shared<BenchCommand>();
  c->options.save_dir = cli::default_output("obfuscate");
  auto* cmd = group->add_subcommand(
      "bench", "attackers on held-out random nets; ResNet-18 and VGG-11 obfuscated under a budget");
  add_bench_flags(cmd, c->options);
  cmd->add_flag("--synthetic-eval", c->synthetic,
                "compare outputs on synthetic images instead of Fashion-MNIST");
  cmd->add_option("--out-dir", c->options.save_dir,
                  "directory of the obfuscated model files (\"\" = not saved)")
      ->capture_default_str();
  cli::add_json_option(cmd, c->json);
  cmd->callback([c] {
    cli::check_writable({c->json});
    if (c->synthetic) c->options.data_dir.clear();
    c->options.validate();
    tessera::Report report("obfuscate bench", c->options.to_json(), c->options.seed);
    const auto result = obf::run_obfuscate_bench(c->options);
    std::cout << result.to_string();
    report.results() = result.to_json();
    report.write(c->json);
  });
}

struct ApplyCommand {
  obf::ObfuscateBenchOptions options;
  std::string model, out, json;
  bool dimension = false;
};

void run_apply(ApplyCommand& c) {
  if (c.out.empty()) c.out = cli::default_output("obfuscated.safetensors");
  const std::string dim_out = c.dimension ? c.out + ".dimension.safetensors" : "";
  cli::check_writable({c.out, c.json, dim_out});
  c.options.validate();
  tessera::models::Model model = tessera::models::load(c.model);
  const auto& config = model->config();
  c.options.image_size = config.image_size;
  obf::Attacker attacker = obf::cached_attacker(c.options.attacker_recipe());
  const auto eval_set = obf::eval_dataset(c.options);
  tessera::Report report("obfuscate apply", c.options.to_json(), c.options.seed);
  obf::ObfuscateBenchResult result;
  result.options = c.options;
  result.rows = obf::obfuscate_model(model, config.name, attacker, c.options, eval_set, c.out,
                                     dim_out, c.dimension);
  std::cout << result.sequence_table().to_string();
  if (c.dimension) std::cout << result.dimension_table().to_string();
  for (const auto& r : result.rows) std::cout << "wrote " << r.model_file << "\n";
  report.results() = result.to_json();
  report.write(c.json);
}

void register_apply(CLI::App* group) {
  auto c = std::make_shared<ApplyCommand>();
  auto* cmd = group->add_subcommand(
      "apply", "obfuscate a model file (GA under the budget) into a function-equal graph model");
  cmd->add_option("--model", c->model, "Tessera model file (ResNet-18, VGG-11 or graph)")
      ->required()
      ->check(CLI::ExistingFile);
  cmd->add_option("-o,--out", c->out, "obfuscated model file")
      ->default_str(cli::default_output("obfuscated.safetensors"));
  cmd->add_flag(
      "--dimension", c->dimension,
      "also run the dimension GA on its first 64->128 conv (to OUT.dimension.safetensors)");
  add_recipe_flags(cmd, c->options.recipe);
  add_ga_flags(cmd, c->options.seq_ga, "");
  cmd->add_option("--eval-images", c->options.eval_images, "test images compared (0 = all)")
      ->capture_default_str();
  cli::add_data_option(cmd, c->options.data_dir);
  cli::add_json_option(cmd, c->json);
  cmd->callback([c] { run_apply(*c); });
}

struct TraceCommand {
  std::string model, json;
  int repeats = 3;
};

void register_trace(CLI::App* group) {
  auto c = std::make_shared<TraceCommand>();
  auto* cmd = group->add_subcommand(
      "trace", "run a model in the traced executor and print its side channel, one kernel a row");
  cmd->add_option("--model", c->model, "Tessera model file")->required()->check(CLI::ExistingFile);
  cmd->add_option("--repeats", c->repeats, "traced runs (median latency)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cli::add_json_option(cmd, c->json);
  cmd->callback([c] {
    cli::check_writable({c->json});
    tessera::models::Model model = tessera::models::load(c->model);
    model->eval();
    const obf::Net net = obf::from_model(model);
    obf::Executor executor(net);
    const auto& s = net.input_shape;
    const torch::Tensor x = torch::randn({1, s[0], s[1], s[2]});
    executor.run(x);
    const obf::Trace trace = executor.trace(x, c->repeats);
    tessera::Table t(
        {"#", "op", "node", "latency us", "KB read", "KB written", "MFLOPs", "cache misses"});
    for (size_t i = 0; i < trace.steps.size(); ++i) {
      const auto& st = trace.steps[i];
      t.add_row({std::to_string(i), obf::label_name(st.label), st.node,
                 fmt::format("{:.1f}", st.latency_us), fmt::format("{:.1f}", st.bytes_read / 1024),
                 fmt::format("{:.1f}", st.bytes_written / 1024),
                 fmt::format("{:.2f}", st.flops * 1e-6),
                 st.cache_misses < 0 ? "n/a" : fmt::format("{:.0f}", st.cache_misses)});
    }
    std::cout << t.to_string()
              << fmt::format("{} kernels, {:.0f} us\n", trace.steps.size(), trace.total_us);
    tessera::Report report("obfuscate trace", {{"model", c->model}, {"repeats", c->repeats}}, 0);
    report.results() = trace.to_json();
    report.write(c->json);
  });
}

}  // namespace

void register_obfuscate(CLI::App& app, tessera::cli::Tour& tour) {
  auto* group =
      app.add_subcommand("obfuscate",
                         "NeurObfuscator: hide a network's layer sequence and dimensions from a "
                         "side-channel attacker at a bounded latency cost");
  group->require_subcommand(1);
  register_bench(group);
  register_apply(group);
  register_trace(group);
  tour.add("obfuscate", &obf::tour);
  tour.add_references(obf::reference_models());
}
