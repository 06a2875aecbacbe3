// `tessera bitflip ...`: keygen, protect (RADAR signatures), attack (PBFA or random flips),
// verify [--recover], bench (ResNet-20 and VGG-11 on Fashion-MNIST, many seeds), and the tour row.
#include <cmath>
#include <filesystem>
#include <iostream>
#include <numeric>

#include "cli.h"
#include "tessera/bitflip/attack.h"
#include "tessera/bitflip/crc_guard.h"
#include "tessera/bitflip/experiment.h"
#include "tessera/bitflip/guard.h"
#include "tessera/bitflip/quantized_model.h"
#include "tessera/bitflip/radar.h"
#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/log.h"
#include "tessera/core/progress.h"
#include "tessera/core/report.h"
#include "tessera/core/seed.h"
#include "tessera/core/table.h"
#include "tessera/core/timer.h"
#include "tessera/data/dataset.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "tessera/train/train.h"

namespace {

namespace bitflip = tessera::bitflip;
namespace data = tessera::data;
namespace models = tessera::models;
namespace train = tessera::train;
using tessera::Table;

// ---------------------------------------------------------------------------------------------
// Shared flags

struct KeyOptions {
  std::string key_path;
  uint64_t secret_seed = 0;
  CLI::Option* seed_option = nullptr;
};

void add_key_options(CLI::App* cmd, KeyOptions& k) {
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

std::string pct(double fraction) { return fmt::format("{:.2f}", 100.0 * fraction); }

/// "mean +- sd" of percentages (sample sd; 0 for one value).
std::string mean_sd(const std::vector<double>& values, double scale = 100.0, int digits = 2) {
  if (values.empty()) return "-";
  const double mean = std::accumulate(values.begin(), values.end(), 0.0) / values.size();
  double var = 0.0;
  for (double v : values) var += (v - mean) * (v - mean);
  const double sd = values.size() > 1 ? std::sqrt(var / (values.size() - 1)) : 0.0;
  return fmt::format("{:.{}f} ± {:.{}f}", scale * mean, digits, scale * sd, digits);
}

double mean_of(const std::vector<double>& values) {
  return values.empty() ? 0.0 : std::accumulate(values.begin(), values.end(), 0.0) / values.size();
}

data::Dataset eval_subset(const data::Dataset& test, int64_t n) {
  return n > 0 && n < test.size() ? test.head(n) : test;
}

void check_channels(const bitflip::QuantizedModel& qm, const data::Dataset& d) {
  TESSERA_CHECK(d.channels() == qm.model->config().in_channels &&
                    d.image_size() == qm.model->config().image_size,
                "the model expects {}x{}x{} inputs but the data is {}x{}x{}",
                qm.model->config().in_channels, qm.model->config().image_size,
                qm.model->config().image_size, d.channels(), d.image_size(), d.image_size());
}

// ---------------------------------------------------------------------------------------------
// keygen, protect

void register_keygen(CLI::App* group) {
  auto out = std::make_shared<std::string>("radar.key");
  auto* cmd = group->add_subcommand("keygen", "write a fresh random RADAR key (64 hex digits)");
  cmd->add_option("-o,--out", *out, "key file to write")->capture_default_str();
  cmd->callback([out] {
    TESSERA_CHECK(!tessera::file_exists(*out), "key file '{}' exists; refusing to overwrite it",
                  *out);
    const auto key = bitflip::RadarKey::generate();
    key.save(*out);
    std::cout << fmt::format("wrote {} (key id {})\n", *out, key.id());
  });
}

struct ProtectOptions {
  std::string model, out = "model.radar", json;
  KeyOptions key;
  bitflip::RadarOptions radar;
  int bits = 8;
};

void register_protect(CLI::App* group) {
  auto o = std::make_shared<ProtectOptions>();
  auto* cmd = group->add_subcommand(
      "protect", "compute RADAR golden signatures of a (quantized) model into an HMAC'd file");
  cmd->add_option("--model", o->model, "model file (float Tessera model or quantized bitflip file)")
      ->required();
  cmd->add_option("-o,--out", o->out, "signature file to write")->capture_default_str();
  cmd->add_option("--group-size,-G", o->radar.group_size, "weights per RADAR group")
      ->capture_default_str();
  cmd->add_option("--check-bits", o->radar.check_bits, "signature bits per group (1 or 2)")
      ->capture_default_str();
  cmd->add_option("--bits", o->bits, "weight bits when quantizing a float model")
      ->capture_default_str();
  add_key_options(cmd, o->key);
  tessera::cli::add_json_option(cmd, o->json);
  cmd->callback([o] {
    const auto key = load_key(o->key);
    auto qm = bitflip::load_quantized(o->model, o->bits);
    const bitflip::Radar radar(key, o->radar, qm.weights);
    const auto golden = radar.sign(qm.weights);
    golden.save(o->out, key);
    const double weight_bits = static_cast<double>(qm.n_weights() * qm.bits);
    Table table(
        {"layers", "weights", "G", "groups", "signature bits", "storage overhead %", "file bytes"});
    const auto file_bytes = std::filesystem::file_size(o->out);
    table.add_row({std::to_string(qm.n_layers()), std::to_string(qm.n_weights()),
                   std::to_string(o->radar.group_size), std::to_string(golden.n_groups()),
                   std::to_string(golden.storage_bits()),
                   fmt::format("{:.3f}", 100.0 * golden.storage_bits() / weight_bits),
                   std::to_string(file_bytes)});
    std::cout << table.to_string() << fmt::format("wrote {} (key id {})\n", o->out, key.id());
    tessera::Report report("bitflip protect",
                           {{"model", o->model},
                            {"group_size", o->radar.group_size},
                            {"check_bits", o->radar.check_bits},
                            {"bits", qm.bits},
                            {"key_id", key.id()},
                            {"out", o->out}},
                           0);
    report.results() = {{"layers", qm.n_layers()},
                        {"weights", qm.n_weights()},
                        {"groups", golden.n_groups()},
                        {"signature_bits", golden.storage_bits()},
                        {"storage_fraction", golden.storage_bits() / weight_bits},
                        {"file_bytes", file_bytes}};
    report.write(o->json);
  });
}

// ---------------------------------------------------------------------------------------------
// attack

struct AttackCommand {
  std::string model, out, data_dir, json;
  bitflip::AttackOptions attack;
  int64_t attack_batch = 128;
  int64_t eval_size = 1000;
  int bits = 8;
};

void register_attack(CLI::App* group) {
  auto o = std::make_shared<AttackCommand>();
  auto* cmd = group->add_subcommand(
      "attack", "flip bits of a quantized model with PBFA or at random; report accuracy per flip");
  cmd->add_option("--model", o->model, "model file (float Tessera model or quantized bitflip file)")
      ->required();
  cmd->add_option("--method", o->attack.method, "pbfa or random")
      ->capture_default_str()
      ->check(CLI::IsMember({"pbfa", "random"}));
  cmd->add_option("--flips", o->attack.n_flips, "bits to flip")->capture_default_str();
  cmd->add_option("--k-top", o->attack.pbfa.k_top,
                  "PBFA: weights ranked per layer by |gradient| (0 = all)")
      ->capture_default_str();
  cmd->add_option("--attack-batch", o->attack_batch,
                  "PBFA: attack batch size (random training images, labelled by the model)")
      ->capture_default_str();
  cmd->add_option("--eval-size", o->eval_size,
                  "test images for the accuracy after each flip (0 = all 10000)")
      ->capture_default_str();
  cmd->add_option("--bits", o->bits, "weight bits when quantizing a float model")
      ->capture_default_str();
  cmd->add_option("-o,--out", o->out, "write the attacked quantized model here");
  tessera::cli::add_data_option(cmd, o->data_dir);
  tessera::cli::add_seed_option(cmd, o->attack.seed);
  tessera::cli::add_json_option(cmd, o->json);
  cmd->callback([o] {
    TESSERA_CHECK(o->attack.n_flips >= 1, "--flips must be >= 1, got {}", o->attack.n_flips);
    TESSERA_CHECK(o->attack_batch >= 1, "--attack-batch must be >= 1, got {}", o->attack_batch);
    TESSERA_CHECK(o->eval_size >= 0, "--eval-size must be >= 0, got {}", o->eval_size);
    tessera::seed_everything(o->attack.seed);
    auto qm = bitflip::load_quantized(o->model, o->bits);
    const int64_t image_size = qm.model->config().image_size;
    const auto test =
        eval_subset(data::load_fashion_mnist("test", o->data_dir, image_size), o->eval_size);
    check_channels(qm, test);
    torch::Tensor batch;
    if (o->attack.method == "pbfa") {
      const auto train_set = data::load_fashion_mnist("train", o->data_dir, image_size);
      batch = bitflip::sample_attack_batch(train_set, o->attack_batch, o->attack.seed);
    }
    const double clean = bitflip::evaluate(qm, test).accuracy;
    Table table({"flip", "layer", "index", "bit", "old", "new", "accuracy %"});
    table.add_row({"0", "(clean)", "", "", "", "", pct(clean)});
    int64_t n = 0;
    tessera::ProgressBar bar("bit flips", o->attack.n_flips);
    const auto result = bitflip::run_attack(
        qm, batch, &test, o->attack, [&](const bitflip::BitFlip& f, double accuracy) {
          table.add_row({std::to_string(++n), f.layer, std::to_string(f.index),
                         std::to_string(f.bit), std::to_string(f.old_value),
                         std::to_string(f.new_value), pct(accuracy)});
          bar.update();
        });
    bar.finish();
    std::cout << table.to_string()
              << fmt::format("{} {} flips: accuracy {}% -> {}% on {} test images\n",
                             result.flips.size(), o->attack.method, pct(clean),
                             pct(result.accuracy_after.back()), test.size());
    if (!o->out.empty()) {
      bitflip::save_quantized(o->out, qm);
      std::cout << "wrote " << o->out << "\n";
    }
    nlohmann::json flips = nlohmann::json::array();
    for (size_t i = 0; i < result.flips.size(); ++i) {
      auto j = result.flips[i].to_json();
      j["accuracy_after"] = result.accuracy_after[i];
      flips.push_back(j);
    }
    tessera::Report report("bitflip attack",
                           {{"model", o->model},
                            {"method", o->attack.method},
                            {"flips", o->attack.n_flips},
                            {"k_top", o->attack.pbfa.k_top},
                            {"attack_batch", o->attack_batch},
                            {"eval_size", test.size()},
                            {"out", o->out}},
                           o->attack.seed);
    report.results() = {{"clean_accuracy", clean}, {"flips", flips}};
    report.write(o->json);
  });
}

// ---------------------------------------------------------------------------------------------
// verify

struct VerifyCommand {
  std::string model, signatures, out, data_dir, json;
  KeyOptions key;
  bool recover = false;
  int64_t eval_size = 0;
  int bits = 8;
};

void register_verify(CLI::App* group) {
  auto o = std::make_shared<VerifyCommand>();
  auto* cmd = group->add_subcommand(
      "verify", "check a model against its RADAR signatures; --recover zeroes flagged groups");
  cmd->add_option("--model", o->model, "model file (quantized bitflip file or float model)")
      ->required();
  cmd->add_option("--signatures", o->signatures, "signature file from `bitflip protect`")
      ->required();
  cmd->add_flag("--recover", o->recover, "zero every weight of every flagged group");
  cmd->add_option("-o,--out", o->out, "with --recover: write the recovered quantized model here");
  cmd->add_option("--eval-size", o->eval_size,
                  "also report test accuracy on this many images (0 = skip)")
      ->capture_default_str();
  cmd->add_option("--bits", o->bits, "weight bits when quantizing a float model")
      ->capture_default_str();
  add_key_options(cmd, o->key);
  tessera::cli::add_data_option(cmd, o->data_dir);
  tessera::cli::add_json_option(cmd, o->json);
  cmd->callback([o] {
    TESSERA_CHECK(o->out.empty() || o->recover, "--out needs --recover");
    const auto key = load_key(o->key);
    const auto golden = bitflip::GoldenSignatures::load(o->signatures, key);
    auto qm = bitflip::load_quantized(o->model, o->bits);
    const bitflip::Radar radar(key, golden.options, qm.weights);
    const auto check = radar.check(qm.weights, golden);
    std::unique_ptr<data::Dataset> test;
    double before = -1, after = -1;
    if (o->eval_size != 0) {
      test = std::make_unique<data::Dataset>(
          eval_subset(data::load_fashion_mnist("test", o->data_dir, qm.model->config().image_size),
                      o->eval_size));
      check_channels(qm, *test);
      before = bitflip::evaluate(qm, *test).accuracy;
    }
    Table table({"layer", "groups", "flagged groups"});
    for (const auto& l : check.layers)
      table.add_row({l.name, std::to_string(radar.layout(l.layer).n_groups()),
                     std::to_string(l.flagged_groups.size())});
    int64_t zeroed = 0;
    if (o->recover && !check.clean()) {
      zeroed = radar.recover(qm.weights, check);
      qm.sync();
    }
    if (test) after = bitflip::evaluate(qm, *test).accuracy;
    if (check.clean()) {
      std::cout << fmt::format("OK: all {} groups of {} layers match their signatures (G = {})\n",
                               golden.n_groups(), qm.n_layers(), golden.options.group_size);
    } else {
      std::cout << table.to_string()
                << fmt::format("MISMATCH: {} of {} groups flagged in {} layer(s)\n",
                               check.n_flagged_groups(), golden.n_groups(), check.layers.size());
      if (o->recover) std::cout << fmt::format("recovered: {} weights zeroed\n", zeroed);
    }
    if (test) {
      std::cout << fmt::format(
          "accuracy on {} test images: {}%{}\n", test->size(), pct(before),
          o->recover && !check.clean() ? " -> " + pct(after) + "% recovered" : std::string());
    }
    if (!o->out.empty()) {
      bitflip::save_quantized(o->out, qm);
      std::cout << "wrote " << o->out << "\n";
    }
    nlohmann::json layers = nlohmann::json::array();
    for (const auto& l : check.layers)
      layers.push_back({{"layer", l.name}, {"flagged_groups", l.flagged_groups}});
    tessera::Report report("bitflip verify",
                           {{"model", o->model},
                            {"signatures", o->signatures},
                            {"recover", o->recover},
                            {"key_id", key.id()}},
                           0);
    report.results() = {{"clean", check.clean()},
                        {"flagged_groups", check.n_flagged_groups()},
                        {"groups", golden.n_groups()},
                        {"layers", layers},
                        {"weights_zeroed", zeroed}};
    if (test) {
      report.results()["accuracy_before"] = before;
      report.results()["accuracy_after"] = after;
    }
    report.write(o->json);
  });
}

// ---------------------------------------------------------------------------------------------
// bench

struct BenchCommand {
  std::vector<std::string> archs = {"resnet20", "vgg11_bn"};
  double vgg_width = 0.25;
  int64_t epochs = 3;
  int64_t train_subset = 0;
  std::string model_dir = "bitflip-models";
  int64_t n_seeds = 5;
  uint64_t seed = 0;
  int64_t eval_size = 2000;
  int64_t evasion_trials = 200000;
  int64_t overhead_batch = 128;
  int64_t overhead_reps = 20;
  bitflip::TrialOptions trial;
  double random_level = 0.11;
  std::string data_dir, json;
};

/// The trained float model for `arch`, from the cache directory or trained now.
models::Model trained_model(const BenchCommand& o, const std::string& arch,
                            const data::Dataset& train_set, const data::Dataset& test_set) {
  models::ModelConfig config;
  config.name = arch;
  config.in_channels = 1;
  config.image_size = 32;
  config.num_classes = 10;
  config.width_mult = arch.rfind("vgg", 0) == 0 ? o.vgg_width : 1.0;
  const std::string path = fmt::format("{}/{}_w{}_e{}_n{}_s{}.safetensors", o.model_dir, arch,
                                       config.width_mult, o.epochs, train_set.size(), o.seed);
  if (tessera::file_exists(path)) {
    tessera::log::info("reusing {}", path);
    return models::load(path);
  }
  tessera::seed_everything(o.seed);
  auto model = models::create(config);
  train::TrainOptions options;
  options.epochs = o.epochs;
  options.lr = 0.05;
  options.schedule = "cosine";
  options.augment_flip = true;
  options.augment_pad = 2;
  options.seed = o.seed;
  options.progress_label = "train " + arch;
  tessera::log::info("training {} for {} epochs on {} images", arch, o.epochs, train_set.size());
  train::fit(model, train_set, &test_set, options, [&](const train::EpochStats& s) {
    tessera::log::info("{} epoch {}: test accuracy {:.2f}% ({:.0f} s)", arch, s.epoch,
                       100 * s.test_accuracy, s.seconds);
    return true;
  });
  std::filesystem::create_directories(o.model_dir);
  models::save(path, model);
  return model;
}

void run_bench(const BenchCommand& o) {
  TESSERA_CHECK(o.n_seeds >= 1, "--seeds must be >= 1, got {}", o.n_seeds);
  TESSERA_CHECK(!o.archs.empty(), "--models is empty");
  TESSERA_CHECK(o.trial.n_defended_flips <= o.trial.n_flips,
                "--defended-flips ({}) cannot exceed --flips ({})", o.trial.n_defended_flips,
                o.trial.n_flips);
  auto train_set = data::load_fashion_mnist("train", o.data_dir, 32);
  if (o.train_subset > 0 && o.train_subset < train_set.size())
    train_set = train_set.head(o.train_subset);
  const auto full_test = data::load_fashion_mnist("test", o.data_dir, 32);
  const auto eval_set = eval_subset(full_test, o.eval_size);
  nlohmann::json config = {{"models", o.archs},
                           {"vgg_width", o.vgg_width},
                           {"epochs", o.epochs},
                           {"train_images", train_set.size()},
                           {"seeds", o.n_seeds},
                           {"eval_size", eval_set.size()},
                           {"flips", o.trial.n_flips},
                           {"defended_flips", o.trial.n_defended_flips},
                           {"random_flips", o.trial.n_random_flips},
                           {"group_sizes", o.trial.group_sizes},
                           {"k_top", o.trial.pbfa.k_top},
                           {"attack_batch", o.trial.attack_batch},
                           {"random_level", o.random_level}};
  tessera::Report report("bitflip bench", config, o.seed);
  Table attack_table({"model", "float acc %", "8-bit acc %", "PBFA 5 flips %", "PBFA 10 flips %",
                      fmt::format("PBFA {} flips %", o.trial.n_flips),
                      fmt::format("flips to <= {:.0f}%", 100 * o.random_level),
                      fmt::format("random {} flips %", o.trial.n_random_flips)});
  Table radar_table({"model", "G", "detected / " + std::to_string(o.trial.n_defended_flips),
                     "flagged groups", "attacked acc %", "recovered acc %", "clean 8-bit acc %",
                     "gap (points)", "signature storage %"});
  Table crc_table({"model", "layers flagged", "weights zeroed", "zero-layer acc %", "reload acc %",
                   "extra storage for reload %"});
  Table overhead_table({"model", "batch", "inference ms", "check ms", "check + inference ms",
                        "check / inference %"});
  Table evasion_table({"model", "G", "trials", "undetected", "measured rate", "predicted rate"});
  nlohmann::json results = nlohmann::json::object();
  for (const auto& arch : o.archs) {
    auto model = trained_model(o, arch, train_set, full_test);
    model->eval();
    const double float_acc = train::evaluate(model, eval_set).accuracy;
    const auto clean = bitflip::quantize_model(model, 8);
    auto clean_copy = clean.clone();
    const double quant_acc = bitflip::evaluate(clean_copy, eval_set).accuracy;
    tessera::log::info("{}: float {:.2f}%, 8-bit {:.2f}% on {} test images", arch, 100 * float_acc,
                       100 * quant_acc, eval_set.size());
    std::vector<bitflip::TrialResult> trials;
    for (int64_t s = 0; s < o.n_seeds; ++s) {
      trials.push_back(
          bitflip::run_trial(clean, train_set, eval_set, o.trial, o.seed + 1000 * (s + 1)));
      const auto& t = trials.back();
      tessera::log::info(
          "{} seed {}: PBFA {} flips -> {:.2f}%, RADAR G={} recovered {:.2f}% ({:.0f} s)", arch, s,
          t.flips.size(), 100 * t.pbfa_accuracy.back(), t.radar.front().group_size,
          100 * t.radar.front().recovered_accuracy, t.seconds);
    }
    // Attack table.
    std::vector<double> at5, at10, at_end, random_end, flips_to_random;
    int64_t reached = 0;
    for (const auto& t : trials) {
      // Columns for flip counts the run did not reach stay empty ("-").
      if (t.pbfa_accuracy.size() >= 5) at5.push_back(t.pbfa_accuracy[4]);
      if (t.pbfa_accuracy.size() >= 10) at10.push_back(t.pbfa_accuracy[9]);
      at_end.push_back(t.pbfa_accuracy.back());
      if (!t.random_accuracy.empty()) random_end.push_back(t.random_accuracy.back());
      for (size_t i = 0; i < t.pbfa_accuracy.size(); ++i) {
        if (t.pbfa_accuracy[i] <= o.random_level) {
          flips_to_random.push_back(static_cast<double>(i + 1));
          ++reached;
          break;
        }
      }
    }
    const std::string label =
        arch == "vgg11_bn" && o.vgg_width != 1.0 ? fmt::format("{} x{}", arch, o.vgg_width) : arch;
    attack_table.add_row(
        {label, pct(float_acc), pct(quant_acc), mean_sd(at5), mean_sd(at10), mean_sd(at_end),
         fmt::format("{} ({}/{} seeds)", mean_sd(flips_to_random, 1.0, 1), reached, trials.size()),
         mean_sd(random_end)});
    // RADAR table.
    nlohmann::json radar_json = nlohmann::json::array();
    for (size_t g = 0; g < o.trial.group_sizes.size(); ++g) {
      std::vector<double> detected, flagged, recovered, attacked;
      for (const auto& t : trials) {
        detected.push_back(static_cast<double>(t.radar[g].n_detected));
        flagged.push_back(static_cast<double>(t.radar[g].n_flagged_groups));
        recovered.push_back(t.radar[g].recovered_accuracy);
        attacked.push_back(t.defended_attack_accuracy);
      }
      const double storage = trials.front().radar[g].storage_fraction;
      radar_table.add_row({label, std::to_string(o.trial.group_sizes[g]), mean_sd(detected, 1.0),
                           mean_sd(flagged, 1.0, 1), mean_sd(attacked), mean_sd(recovered),
                           pct(quant_acc),
                           fmt::format("{:.2f}", 100 * (quant_acc - mean_of(recovered))),
                           fmt::format("{:.3f}", 100 * storage)});
      radar_json.push_back({{"group_size", o.trial.group_sizes[g]},
                            {"detected", detected},
                            {"flagged_groups", flagged},
                            {"recovered_accuracy", recovered},
                            {"storage_fraction", storage}});
    }
    // CRC table.
    std::vector<double> crc_layers, crc_zeroed, crc_zero_acc, crc_reload_acc;
    for (const auto& t : trials) {
      crc_layers.push_back(static_cast<double>(t.crc.n_layers_flagged));
      crc_zeroed.push_back(static_cast<double>(t.crc.n_weights_zeroed));
      crc_zero_acc.push_back(t.crc.zeroed_accuracy);
      crc_reload_acc.push_back(t.crc.reload_accuracy);
    }
    crc_table.add_row({label, mean_sd(crc_layers, 1.0, 1), mean_sd(crc_zeroed, 1.0, 0),
                       mean_sd(crc_zero_acc), mean_sd(crc_reload_acc), "100 (a clean copy)"});
    // Overhead: same model, same batch, side by side.
    {
      auto guarded = clean.clone();
      const bitflip::Radar radar(
          bitflip::RadarKey::from_seed(o.seed),
          bitflip::RadarOptions{o.trial.group_sizes.front(), o.trial.check_bits}, guarded.weights);
      const auto golden = radar.sign(guarded.weights);
      for (const int64_t batch_size : {int64_t{1}, o.overhead_batch}) {
        const auto batch = eval_set.head(std::min(batch_size, eval_set.size())).images;
        const auto ov =
            bitflip::measure_check_overhead(guarded, radar, golden, batch, o.overhead_reps);
        overhead_table.add_row({label, std::to_string(batch.size(0)),
                                fmt::format("{:.3f}", ov.t_inference_us / 1000),
                                fmt::format("{:.3f}", ov.t_check_us / 1000),
                                fmt::format("{:.3f}", ov.t_guarded_us / 1000),
                                fmt::format("{:.2f}", 100 * ov.overhead_fraction)});
      }
    }
    // Stretch: evasion by a checksum-cancelling attacker without the secret.
    nlohmann::json evasion_json = nlohmann::json::array();
    if (o.evasion_trials > 0) {
      for (const int64_t g_size : o.trial.group_sizes) {
        const auto ev = bitflip::measure_evasion(clean, g_size, o.evasion_trials, o.seed + 7);
        evasion_table.add_row({label, std::to_string(g_size), std::to_string(ev.n_trials),
                               std::to_string(ev.n_undetected),
                               fmt::format("{:.5f}", ev.measured_rate),
                               fmt::format("{:.5f}", ev.predicted_rate)});
        evasion_json.push_back({{"group_size", g_size},
                                {"trials", ev.n_trials},
                                {"undetected", ev.n_undetected},
                                {"measured", ev.measured_rate},
                                {"predicted", ev.predicted_rate}});
      }
    }
    nlohmann::json per_seed = nlohmann::json::array();
    for (const auto& t : trials) {
      nlohmann::json flips = nlohmann::json::array();
      for (const auto& f : t.flips) flips.push_back(f.to_json());
      per_seed.push_back({{"pbfa_accuracy", t.pbfa_accuracy},
                          {"random_accuracy", t.random_accuracy},
                          {"flips", flips},
                          {"crc_zero_accuracy", t.crc.zeroed_accuracy},
                          {"seconds", t.seconds}});
    }
    results[label] = {{"float_accuracy", float_acc},
                      {"quantized_accuracy", quant_acc},
                      {"radar", radar_json},
                      {"evasion", evasion_json},
                      {"seeds", per_seed}};
  }
  std::cout << "\nPBFA vs random flips (accuracy on " << eval_set.size() << " test images, "
            << o.n_seeds << " seeds, mean ± sd)\n"
            << attack_table.to_string() << "\nRADAR after " << o.trial.n_defended_flips
            << " PBFA flips (detected = flips whose group was flagged)\n"
            << radar_table.to_string() << "\nCRC32 per layer, same flips\n"
            << crc_table.to_string() << "\nRun-time check overhead (median of " << o.overhead_reps
            << ", check before every inference, G = " << o.trial.group_sizes.front() << ")\n"
            << overhead_table.to_string();
  if (o.evasion_trials > 0)
    std::cout << "\nStretch: checksum-cancelling MSB pairs without the secret\n"
              << evasion_table.to_string();
  results["attack_table"] = attack_table.to_json();
  results["radar_table"] = radar_table.to_json();
  results["crc_table"] = crc_table.to_json();
  results["overhead_table"] = overhead_table.to_json();
  results["evasion_table"] = evasion_table.to_json();
  report.results() = results;
  report.write(o.json);
}

void register_bench(CLI::App* group) {
  auto o = std::make_shared<BenchCommand>();
  auto* cmd = group->add_subcommand(
      "bench", "PBFA, random flips, RADAR and CRC32 on 8-bit ResNet-20 and VGG-11 (many seeds)");
  cmd->add_option("--models", o->archs, "architectures to train and attack")->capture_default_str();
  cmd->add_option("--vgg-width", o->vgg_width, "VGG-11 width multiplier")->capture_default_str();
  cmd->add_option("--epochs", o->epochs, "training epochs per model")->capture_default_str();
  cmd->add_option("--train-subset", o->train_subset, "train on the first N images (0 = all 60000)")
      ->capture_default_str();
  cmd->add_option("--model-dir", o->model_dir, "cache of trained models (reused when present)")
      ->capture_default_str();
  cmd->add_option("--seeds", o->n_seeds, "attack seeds (attack batch, RADAR key, random flips)")
      ->capture_default_str();
  cmd->add_option("--eval-size", o->eval_size, "test images for accuracies (0 = all 10000)")
      ->capture_default_str();
  cmd->add_option("--flips", o->trial.n_flips, "PBFA flips per seed")->capture_default_str();
  cmd->add_option("--defended-flips", o->trial.n_defended_flips,
                  "PBFA flips dumped onto RADAR and CRC")
      ->capture_default_str();
  cmd->add_option("--random-flips", o->trial.n_random_flips, "random flips per seed")
      ->capture_default_str();
  cmd->add_option("--group-sizes", o->trial.group_sizes, "RADAR G values")->capture_default_str();
  cmd->add_option("--k-top", o->trial.pbfa.k_top, "PBFA in-layer candidates (0 = all)")
      ->capture_default_str();
  cmd->add_option("--attack-batch", o->trial.attack_batch, "PBFA attack batch")
      ->capture_default_str();
  cmd->add_option("--random-level", o->random_level,
                  "accuracy counted as random guessing (10 classes)")
      ->capture_default_str();
  cmd->add_option("--overhead-batch", o->overhead_batch, "batch for the overhead timing")
      ->capture_default_str();
  cmd->add_option("--overhead-reps", o->overhead_reps, "timing repetitions")->capture_default_str();
  cmd->add_option("--evasion-trials", o->evasion_trials,
                  "stretch: cancelling-pair trials per G (0 = skip)")
      ->capture_default_str();
  tessera::cli::add_data_option(cmd, o->data_dir);
  tessera::cli::add_seed_option(cmd, o->seed);
  tessera::cli::add_json_option(cmd, o->json);
  cmd->callback([o] { run_bench(*o); });
}

// ---------------------------------------------------------------------------------------------
// Tour

std::vector<tessera::cli::TourRow> tour_bitflip(const tessera::cli::TourContext& ctx) {
  const std::string reuse = ctx.work_dir + "/tour_cnn.safetensors";
  const auto test = data::load_fashion_mnist("test", ctx.data_dir, 32).head(1000);
  const auto train_set = data::load_fashion_mnist("train", ctx.data_dir, 32);
  models::Model model{nullptr};
  std::string what;
  if (tessera::file_exists(reuse)) {
    model = models::load(reuse);
    what = "the tour's CNN";
  } else {
    // No model from the foundation step: train VGG-11 x0.25 for one epoch on 10k images.
    models::ModelConfig config;
    config.name = "vgg11_bn";
    config.in_channels = 1;
    config.width_mult = 0.25;
    tessera::seed_everything(ctx.seed);
    model = models::create(config);
    train::TrainOptions options;
    options.epochs = 1;
    options.seed = ctx.seed;
    options.progress_label = "tour bitflip";
    const auto subset = train_set.head(10000);
    train::fit(model, subset, nullptr, options);
    what = "VGG-11 x0.25 (1 epoch, 10k images)";
  }
  model->eval();
  const auto clean = bitflip::quantize_model(model, 8);
  bitflip::TrialOptions options;
  options.n_flips = 10;
  options.n_defended_flips = 10;
  options.n_random_flips = 10;
  options.group_sizes = {8};
  auto clean_copy = clean.clone();
  const double clean_acc = bitflip::evaluate(clean_copy, test).accuracy;
  const auto t = bitflip::run_trial(clean, train_set, test, options, ctx.seed + 1);
  const auto& r = t.radar.front();
  return {{"bitflip: PBFA 10 flips on 8-bit " + what,
           fmt::format("acc {}% -> {}% attacked -> {}% RADAR G=8 recovered; {}/10 flips "
                       "detected (1000 test images; random 10 flips: {}%)",
                       pct(clean_acc), pct(t.pbfa_accuracy.back()), pct(r.recovered_accuracy),
                       r.n_detected, pct(t.random_accuracy.back())),
           "ResNet-20 CIFAR-10 G=8: 90.15% -> 18.01% -> 81.07%; 9.6/10 flips detected "
           "(ResNet-18 ImageNet)"}};
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
  tour.add("bitflip", tour_bitflip);
}
