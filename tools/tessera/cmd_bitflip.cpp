// `tessera bitflip ...`: keygen, protect (RADAR signatures), attack (PBFA or random flips),
// verify [--recover], bench and the tour row. The work is in tessera/bitflip/bench.h and
// bench_commands.h; this file binds flags into their options, prints and writes the reports.
#include <filesystem>
#include <iostream>
#include <memory>

#include "cli.h"
#include "tessera/bitflip/attack.h"
#include "tessera/bitflip/bench.h"
#include "tessera/bitflip/bench_commands.h"
#include "tessera/bitflip/quantized_model.h"
#include "tessera/bitflip/radar.h"
#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/report.h"
#include "tessera/core/table.h"
#include "tessera/data/dataset.h"
#include "tessera/train/cache.h"

namespace {

namespace bitflip = tessera::bitflip;
namespace cli = tessera::cli;
namespace data = tessera::data;

using tessera::Table;
constexpr const char* kSmallLayerHelp = "RADAR: layers with fewer weights use G = 2 (0 = off)";

// ---------------------------------------------------------------------------------------------
// Shared flags and helpers

struct KeyOptions {
  std::string key_path;
  uint64_t secret_seed = 0;
  CLI::Option* seed_option = nullptr;
};

void add_key_flags(CLI::App* cmd, KeyOptions& k) {
  cmd->add_option("--key", k.key_path, "RADAR key file (64 hex digits; see `bitflip keygen`)");
  k.seed_option = cmd->add_option("--secret-seed", k.secret_seed,
                                  "derive the RADAR key from this seed instead of a key file "
                                  "(reproducible experiments only: the seed is the secret)");
}

bitflip::RadarKey load_key(const KeyOptions& k) {
  const bool from_seed = k.seed_option != nullptr && k.seed_option->count() > 0;
  TESSERA_CHECK(from_seed != !k.key_path.empty(),
                "give exactly one of --key FILE or --secret-seed N");
  return from_seed ? bitflip::RadarKey::from_seed(k.secret_seed)
                   : bitflip::RadarKey::from_file(k.key_path);
}

void add_radar_flags(CLI::App* cmd, bitflip::RadarOptions& r) {
  cmd->add_option("--group-size,-G", r.group_size, "weights per RADAR group")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--check-bits", r.check_bits, "signature bits per group (1 or 2)")
      ->capture_default_str()
      ->check(CLI::Range(1, 2));
  cmd->add_option("--block-weights", r.block_weights, "weights per RADAR block (cache-sized)")
      ->capture_default_str()
      ->check(CLI::Range(32, 1 << 20));
  cmd->add_option("--small-layer-weights", r.small_layer_weights, kSmallLayerHelp)
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
}

void add_recovery_flag(CLI::App* cmd, bitflip::RecoveryMode& mode) {
  cmd->add_option_function<std::string>(
         "--recovery",
         [&mode](const std::string& name) { mode = bitflip::parse_recovery_mode(name); },
         "group: zero each flagged group (paper); marked: zero only its MSB-marked weights; "
         "restore: flip back the marked MSB that restores the signature")
      ->check(CLI::IsMember({"group", "marked", "restore"}))
      ->default_str(bitflip::recovery_mode_name(mode));
}

void add_pbfa_flags(CLI::App* cmd, bitflip::PbfaOptions& p) {
  cmd->add_option("--k-top", p.k_top, "PBFA: weights ranked per layer by |gradient| (0 = all)")
      ->capture_default_str();
}

void add_attack_flags(CLI::App* cmd, bitflip::AttackOptions& a) {
  // Bound to the enum: an unknown name is a usage error; the default shown is its name.
  cmd->add_option_function<std::string>(
         "--method",
         [&a](const std::string& name) { a.method = bitflip::parse_attack_method(name); },
         "pbfa or random")
      ->check(CLI::IsMember({"pbfa", "random"}))
      ->default_str(bitflip::attack_method_name(a.method));
  cmd->add_option("--flips", a.n_flips, "bits to flip")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  add_pbfa_flags(cmd, a.pbfa);
  cli::add_seed_option(cmd, a.seed);
}

void add_attack_run_flags(CLI::App* cmd, bitflip::AttackRunOptions& r) {
  add_attack_flags(cmd, r.attack);
  cmd->add_option("--attack-batch", r.attack_batch,
                  "PBFA: attack batch size (random training images, labelled by the model)")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--eval-size", r.eval_size,
                  "test images for the accuracy after each flip (0 = all 10000)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
}

void add_trial_flags(CLI::App* cmd, bitflip::TrialOptions& t) {
  cmd->add_option("--flips", t.n_flips, "PBFA flips per seed")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--defended-flips", t.n_defended_flips, "PBFA flips dumped onto RADAR and CRC")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--random-flips", t.n_random_flips, "random flips per seed")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--group-sizes", t.group_sizes, "RADAR G values (comma-separated)")
      ->capture_default_str()
      ->delimiter(',')
      ->check(CLI::PositiveNumber);
  cmd->add_option("--attack-batch", t.attack_batch, "PBFA attack batch")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--small-layer-weights", t.small_layer_weights, kSmallLayerHelp)
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  add_pbfa_flags(cmd, t.pbfa);
}

void add_bench_flags(CLI::App* cmd, bitflip::BenchOptions& o) {
  cmd->add_option("--archs,--models", o.archs,
                  "architectures to train and attack (comma-separated)")
      ->capture_default_str()
      ->delimiter(',');
  cmd->add_option("--vgg-width", o.vgg_width, "VGG-11 width multiplier")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--epochs", o.epochs, "training epochs per model")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_flag("!--train-resnet20", o.resnet20_reference,
                "train ResNet-20 with this recipe instead of the reference model resnet20-fmnist");
  cmd->add_option("--train-subset", o.train_subset, "train on the first N images (0 = all 60000)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--seeds", o.n_seeds,
                  "rounds per model (attack batch, RADAR key, random flips; 0 = timing only)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--eval-size", o.eval_size, "test images for accuracies (0 = all 10000)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--random-level", o.random_level, "accuracy counted as random (10 classes)")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--overhead-batch", o.overhead_batch, "batch for the overhead timing")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--overhead-reps", o.overhead_reps, "timing repetitions")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--evasion-trials", o.evasion_trials, "cancelling-pair trials per G (0 = skip)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  add_trial_flags(cmd, o.trial);
  cli::add_data_option(cmd, o.data_dir);
  cli::add_seed_option(cmd, o.seed);
}

void save_model(const std::string& path, const bitflip::QuantizedModel& qm) {
  if (path.empty()) return;
  bitflip::save_quantized(path, qm);
  std::cout << "wrote " << path << "\n";
}

// ---------------------------------------------------------------------------------------------
// keygen, protect

void register_keygen(CLI::App* group) {
  auto out = std::make_shared<std::string>(cli::default_output("radar.key"));
  auto* cmd = group->add_subcommand("keygen", "write a fresh random RADAR key (64 hex digits)");
  cmd->add_option("-o,--out", *out, "key file to write")->capture_default_str();
  cmd->callback([out] {
    cli::check_writable({*out});
    TESSERA_CHECK(!tessera::file_exists(*out), "key file '{}' exists; refusing to overwrite it",
                  *out);
    const auto key = bitflip::RadarKey::generate();
    key.save(*out);
    std::cout << fmt::format("wrote {} (key id {})\n", *out, key.id());
  });
}

struct ProtectCommand {
  std::string model, out = cli::default_output("model.radar"), json;
  KeyOptions key;
  bitflip::RadarOptions radar;
  int bits = 8;
};

void run_protect(const ProtectCommand& o) {
  cli::check_writable({o.out, o.json});
  const auto key = load_key(o.key);
  const auto qm = bitflip::load_quantized(o.model, o.bits);
  const bitflip::ProtectResult result = bitflip::protect_model(qm, key, o.radar);
  result.golden.save(o.out, key);
  const auto file_bytes = static_cast<int64_t>(std::filesystem::file_size(o.out));
  std::cout << result.table(file_bytes).to_string()
            << fmt::format("wrote {} (key id {})\n", o.out, key.id());
  tessera::Report report("bitflip protect",
                         {{"model", o.model},
                          {"group_size", o.radar.group_size},
                          {"check_bits", o.radar.check_bits},
                          {"bits", qm.bits},
                          {"key_id", key.id()},
                          {"out", o.out}},
                         0);
  report.results() = result.to_json();
  report.results()["file_bytes"] = file_bytes;
  report.write(o.json);
}

void add_model_flags(CLI::App* cmd, std::string& model, int& bits) {
  cmd->add_option("--model", model,
                  "model file: float Tessera model, quantized bitflip file or TorchScript")
      ->required();
  cmd->add_option("--bits", bits, "weight bits when quantizing a float model")
      ->capture_default_str()
      ->check(CLI::Range(2, 16));
}

void register_protect(CLI::App* group) {
  auto o = std::make_shared<ProtectCommand>();
  auto* cmd = group->add_subcommand(
      "protect", "compute RADAR golden signatures of a (quantized) model into an HMAC'd file");
  add_model_flags(cmd, o->model, o->bits);
  cmd->add_option("-o,--out", o->out, "signature file to write")->capture_default_str();
  add_radar_flags(cmd, o->radar);
  add_key_flags(cmd, o->key);
  cli::add_json_option(cmd, o->json);
  cmd->callback([o] { run_protect(*o); });
}

// ---------------------------------------------------------------------------------------------
// attack

struct AttackCommand {
  std::string model, out, json, svg;
  data::ImageData data;
  bitflip::AttackRunOptions run;
  int bits = 8;
};

void run_attack_command(const AttackCommand& o) {
  cli::check_writable({o.out, o.json, o.svg});
  nlohmann::json config = o.run.to_json();
  config["model"] = o.model;
  config["out"] = o.out;
  tessera::Report report("bitflip attack", config, o.run.attack.seed);
  auto qm = bitflip::load_quantized(o.model, o.bits);
  const auto test = bitflip::load_eval_set(qm, o.data, o.run.eval_size);
  data::Dataset pool;
  if (o.run.attack.method == bitflip::AttackMethod::pbfa)
    pool = data::load_images(o.data, "train", qm.model->config().image_size);
  const bitflip::AttackRun run = bitflip::attack_model(qm, test, &pool, o.run);
  std::cout << run.table().to_string() << run.summary() << "\n";
  save_model(o.out, qm);
  if (!o.svg.empty()) {
    const auto title = fmt::format("{}: 8-bit accuracy against bit flips", o.model);
    tessera::write_file_atomic(o.svg, run.plot(title).render());
  }
  report.results() = run.to_json();
  report.write(o.json);
}

void register_attack(CLI::App* group) {
  auto o = std::make_shared<AttackCommand>();
  auto* cmd = group->add_subcommand(
      "attack", "flip bits of a quantized model with PBFA or at random; report accuracy per flip");
  add_model_flags(cmd, o->model, o->bits);
  add_attack_run_flags(cmd, o->run);
  cmd->add_option("-o,--out", o->out, "write the attacked quantized model here");
  cli::add_image_data_options(cmd, o->data);
  cli::add_json_option(cmd, o->json);
  cli::add_svg_option(cmd, o->svg);
  cmd->callback([o] { run_attack_command(*o); });
}

// ---------------------------------------------------------------------------------------------
// verify

struct VerifyCommand {
  std::string model, signatures, out, json;
  data::ImageData data;
  KeyOptions key;
  bool recover = false;
  bitflip::RecoveryMode mode = bitflip::RecoveryMode::zero_group;
  int64_t eval_size = 0;
  int bits = 8;
};

void run_verify(const VerifyCommand& o) {
  TESSERA_CHECK(o.out.empty() || o.recover, "--out needs --recover");
  cli::check_writable({o.out, o.json});
  const auto key = load_key(o.key);
  const auto golden = bitflip::GoldenSignatures::load(o.signatures, key);
  auto qm = bitflip::load_quantized(o.model, o.bits);
  const bitflip::Radar radar(key, golden.options, qm.weights);
  std::unique_ptr<data::Dataset> test;
  if (o.eval_size != 0)
    test = std::make_unique<data::Dataset>(bitflip::load_eval_set(qm, o.data, o.eval_size));
  const auto result = bitflip::verify_model(qm, radar, golden, o.recover, test.get(), o.mode);
  std::cout << result.to_string();
  save_model(o.out, qm);
  tessera::Report report("bitflip verify",
                         {{"model", o.model},
                          {"signatures", o.signatures},
                          {"recover", o.recover},
                          {"key_id", key.id()}},
                         0);
  report.results() = result.to_json();
  report.write(o.json);
  std::cout.flush();
  // A mismatch is the command's answer, not an error: exit 3 so a deployment can gate on it.
  if (result.exit_code() != 0) throw CLI::RuntimeError(result.exit_code());
}

void register_verify(CLI::App* group) {
  auto o = std::make_shared<VerifyCommand>();
  auto* cmd = group->add_subcommand(
      "verify",
      "check a model against its RADAR signatures (exit 3 on a mismatch); --recover repairs it");
  add_model_flags(cmd, o->model, o->bits);
  cmd->add_option("--signatures", o->signatures, "signature file from `bitflip protect`")
      ->required();
  cmd->add_flag("--recover", o->recover, "repair every flagged group (see --recovery)");
  add_recovery_flag(cmd, o->mode);
  cmd->add_option("-o,--out", o->out, "with --recover: write the recovered quantized model here");
  cmd->add_option("--eval-size", o->eval_size,
                  "also report test accuracy on this many images (0 = skip)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  add_key_flags(cmd, o->key);
  cli::add_image_data_options(cmd, o->data);
  cli::add_json_option(cmd, o->json);
  cmd->callback([o] { run_verify(*o); });
}

// ---------------------------------------------------------------------------------------------
// bench

struct BenchCommand {
  bitflip::BenchOptions options;
  std::string model_dir, json, svg, radar_svg;
};

void run_bench_command(const BenchCommand& c) {
  cli::check_writable({c.json, c.svg, c.radar_svg});
  if (!c.model_dir.empty()) tessera::train::set_cache_dir(c.model_dir);
  tessera::Report report("bitflip bench", c.options.to_json(), c.options.seed);
  const bitflip::BenchResult result = bitflip::run_bench(c.options);
  std::cout << result.to_string();
  if (!c.svg.empty()) tessera::write_file_atomic(c.svg, result.accuracy_plot().render());
  if (!c.radar_svg.empty())
    tessera::write_file_atomic(c.radar_svg, result.detection_plot().render());
  report.results() = result.to_json();
  report.write(c.json);
}

void register_bench(CLI::App* group) {
  auto c = std::make_shared<BenchCommand>();
  auto* cmd = group->add_subcommand(
      "bench", "PBFA, random flips, RADAR and CRC32 on 8-bit ResNet-20 and VGG-11 (many seeds)");
  add_bench_flags(cmd, c->options);
  cmd->add_option("--model-dir", c->model_dir,
                  "model cache directory for this run (default: the model cache, see --cache-dir)");
  cli::add_json_option(cmd, c->json);
  cli::add_svg_option(cmd, c->svg)->description("write PBFA and random accuracy against flips");
  cmd->add_option("--radar-svg", c->radar_svg,
                  "write the RADAR detection rate against the group size as an SVG plot");
  cmd->callback([c] { run_bench_command(*c); });
}

}  // namespace

void register_bitflip(CLI::App& app, tessera::cli::Tour& tour) {
  auto* group = app.add_subcommand(
      "bitflip", "bit-flip attacks on quantized weights (PBFA) and RADAR detection/recovery");
  group->require_subcommand(1);
  register_keygen(group);
  register_protect(group);
  register_attack(group);
  register_verify(group);
  register_bench(group);
  tour.add("bitflip", &bitflip::tour);
  tour.add_references(bitflip::reference_models());
}
