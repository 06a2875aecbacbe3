// `tessera sfl ...`: split federated learning (in-process and over gRPC), the model-extraction
// attacks of arXiv 2303.08581 and their benchmark; and the tour's SFL row.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>

#include "cli.h"
#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/image.h"
#include "tessera/core/log.h"
#include "tessera/core/report.h"
#include "tessera/core/seed.h"
#include "tessera/core/table.h"
#include "tessera/core/timer.h"
#include "tessera/data/dataset.h"
#include "tessera/data/sampling.h"
#include "tessera/models/registry.h"
#include "tessera/splitfed/experiments.h"
#include "tessera/splitfed/resistance.h"
#include "tessera/splitfed/runtime.h"

extern char** environ;

namespace {

namespace sf = tessera::splitfed;
namespace data = tessera::data;
namespace models = tessera::models;
using tessera::Table;

/// Flags shared by `sfl train`, `sfl server` and `sfl bench-*`: they become SflOptions.
struct RunFlags {
  std::string model = "vgg11_bn";
  double width = 0.25;
  int64_t image_size = 32;
  int64_t cut = -1;
  int64_t server_layers = 5;
  std::string convention = "weights";
  int64_t bottleneck = 0;
  int64_t bottleneck_stride = 1;
  int64_t clients = 3;
  std::string ordering = "v2";
  double sample_ratio = 1.0;
  std::string partition = "iid";
  int64_t shards = 2;
  int64_t epochs = 3;
  int64_t batch_size = 64;
  double lr = 0.05;
  double client_lr = -1.0;
  std::string schedule = "cosine";
  int64_t augment_pad = 2;
  int64_t train_samples = 12000;
  int64_t test_samples = 10000;
  int64_t max_batches = 0;
  double grad_noise = 0.0;
  double l1 = 0.0;
  double l2 = 0.0;
  uint64_t seed = 0;
  std::string data_dir;
};

void add_run_flags(CLI::App* cmd, RunFlags& f) {
  cmd->add_option("--model", f.model, "model name (" + models::known_model_names() + ")")
      ->capture_default_str();
  cmd->add_option("--width", f.width, "channel width multiplier (CPU budget)")
      ->capture_default_str();
  cmd->add_option("--image-size", f.image_size, "input side (Fashion-MNIST is zero-padded)")
      ->capture_default_str();
  cmd->add_option("--cut", f.cut, "client keeps units [0, cut); -1: from --server-layers")
      ->capture_default_str();
  cmd->add_option("--server-layers", f.server_layers, "server-side layers when --cut is -1")
      ->capture_default_str();
  cmd->add_option("--convention", f.convention,
                  "how server layers count: weights (conv/fc, pool joins its conv) or units")
      ->capture_default_str();
  cmd->add_option("--bottleneck", f.bottleneck, "bottleneck channels at the cut (0 = none)")
      ->capture_default_str();
  cmd->add_option("--bottleneck-stride", f.bottleneck_stride, "bottleneck stride (1 or 2)")
      ->capture_default_str();
  cmd->add_option("--clients", f.clients, "number of clients K")->capture_default_str();
  cmd->add_option("--ordering", f.ordering, "v2 (clients take turns) or v1 (summed server grads)")
      ->capture_default_str();
  cmd->add_option("--sample-ratio", f.sample_ratio, "fraction of clients active per epoch")
      ->capture_default_str();
  cmd->add_option("--partition", f.partition, "iid or label_shards")->capture_default_str();
  cmd->add_option("--shards", f.shards, "label shards per client (label_shards)")
      ->capture_default_str();
  cmd->add_option("--epochs", f.epochs, "epochs")->capture_default_str();
  cmd->add_option("--batch-size", f.batch_size, "batch size per client step")
      ->capture_default_str();
  cmd->add_option("--lr", f.lr, "server learning rate (SGD, momentum 0.9, wd 5e-4)")
      ->capture_default_str();
  cmd->add_option("--client-lr", f.client_lr, "client learning rate (-1 = --lr)")
      ->capture_default_str();
  cmd->add_option("--schedule", f.schedule, "constant, step, multistep or cosine")
      ->capture_default_str();
  cmd->add_option("--augment-pad", f.augment_pad, "random-crop padding (0 = no augmentation)")
      ->capture_default_str();
  cmd->add_option("--train-samples", f.train_samples, "first N training images (0 = all 60000)")
      ->capture_default_str();
  cmd->add_option("--test-samples", f.test_samples, "first N test images")->capture_default_str();
  cmd->add_option("--max-batches", f.max_batches, "cap on steps per client and epoch (0 = none)")
      ->capture_default_str();
  cmd->add_option("--grad-noise", f.grad_noise,
                  "defense: server adds s*U[0,1) to returned gradients")
      ->capture_default_str();
  cmd->add_option("--l1", f.l1, "defense: L1 penalty on client-side weights")
      ->capture_default_str();
  cmd->add_option("--l2", f.l2, "defense: L2 penalty on client-side weights")
      ->capture_default_str();
  tessera::cli::add_seed_option(cmd, f.seed);
  tessera::cli::add_data_option(cmd, f.data_dir);
}

struct Data {
  data::Dataset train;
  data::Dataset test;
};

Data load_data(const RunFlags& f) {
  Data d;
  d.train = data::load_fashion_mnist("train", f.data_dir, f.image_size);
  d.test = data::load_fashion_mnist("test", f.data_dir, f.image_size);
  TESSERA_CHECK(f.train_samples >= 0 && f.test_samples >= 0,
                "--train-samples {} / --test-samples {} must be >= 0", f.train_samples,
                f.test_samples);
  if (f.train_samples > 0 && f.train_samples < d.train.size())
    d.train = d.train.head(f.train_samples);
  if (f.test_samples > 0 && f.test_samples < d.test.size()) d.test = d.test.head(f.test_samples);
  return d;
}

sf::SflOptions make_options(const RunFlags& f, int64_t n_train) {
  sf::SflOptions o;
  o.model.name = f.model;
  o.model.in_channels = 1;
  o.model.image_size = f.image_size;
  o.model.num_classes = 10;
  o.model.width_mult = f.width;
  o.split.cut = f.cut;
  if (f.cut < 0) {
    models::Model probe = models::create(o.model);
    o.split.cut = sf::cut_for_server_layers(probe, f.server_layers, f.convention);
  }
  o.split.bottleneck_channels = f.bottleneck;
  o.split.bottleneck_stride = f.bottleneck_stride;
  o.n_clients = f.clients;
  o.ordering = f.ordering;
  o.sample_ratio = f.sample_ratio;
  o.partition = f.partition;
  o.shards_per_client = f.shards;
  o.epochs = f.epochs;
  o.batch_size = f.batch_size;
  o.lr = f.lr;
  o.client_lr = f.client_lr;
  o.schedule = f.schedule;
  o.augment_pad = f.augment_pad;
  o.augment_flip = f.augment_pad > 0;
  o.n_train = n_train;
  o.max_batches_per_epoch = f.max_batches;
  o.grad_noise = f.grad_noise;
  o.client_l1 = f.l1;
  o.client_l2 = f.l2;
  o.seed = f.seed;
  o.validate();
  return o;
}

void add_history_rows(Table& table, const std::vector<sf::EpochRecord>& history) {
  for (const auto& r : history) {
    table.add_row({std::to_string(r.epoch + 1), fmt::format("{:.4f}", r.lr),
                   fmt::format("{:.4f}", r.train_loss),
                   fmt::format("{:.2f}", 100 * r.train_accuracy),
                   fmt::format("{:.2f}", 100 * r.test_accuracy), std::to_string(r.n_active),
                   std::to_string(r.n_dropped), fmt::format("{:.1f}", r.seconds)});
  }
}

Table history_table() {
  return Table(
      {"epoch", "lr", "train loss", "train acc %", "test acc %", "active", "dropped", "s"});
}

std::map<std::string, std::string> read_tokens(const std::string& path, const std::string& token,
                                               const sf::SflOptions& o) {
  std::map<std::string, std::string> tokens;
  if (!path.empty()) {
    std::istringstream in(tessera::read_file(path));
    std::string id, secret;
    while (in >> id >> secret) tokens[id] = secret;
    TESSERA_CHECK(!tokens.empty(), "token file {} holds no 'client_id token' lines", path);
  } else {
    TESSERA_CHECK(!token.empty(), "the server needs --tokens FILE or --token SECRET");
    for (int64_t i = 0; i < o.n_clients; ++i) tokens[o.client_id(i)] = token;
  }
  return tokens;
}

std::vector<int64_t> parse_list(const std::string& text, const char* flag) {
  std::vector<int64_t> values;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    try {
      values.push_back(std::stoll(item));
    } catch (const std::exception&) {
      TESSERA_CHECK(false, "{}: '{}' is not an integer", flag, item);
    }
  }
  TESSERA_CHECK(!values.empty(), "{} is empty", flag);
  return values;
}

std::vector<std::string> split_names(const std::string& text) {
  std::vector<std::string> names;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) names.push_back(item);
  return names;
}

std::string pct(double v) { return fmt::format("{:.2f}", 100 * v); }

/// Attack flags shared by `sfl attack` and `sfl bench-me`.
struct AttackFlags {
  int64_t surrogate_epochs = 10;
  double attacker_fraction = 0.02;
  double surrogate_lr = 0.02;
  int64_t craft_steps = 50;
  std::string gm_aux = "attacker";
};

void add_attack_flags(CLI::App* cmd, AttackFlags& a) {
  cmd->add_option("--surrogate-epochs", a.surrogate_epochs,
                  "surrogate training epochs (paper: 200)")
      ->capture_default_str();
  cmd->add_option("--attacker-fraction", a.attacker_fraction,
                  "attacker's labelled data as a fraction of the training set (Train/SoftTrain; "
                  "GM uses its images only)")
      ->capture_default_str();
  cmd->add_option("--surrogate-lr", a.surrogate_lr, "surrogate SGD learning rate")
      ->capture_default_str();
  cmd->add_option("--craft-steps", a.craft_steps, "Craft-ME Adam steps per image")
      ->capture_default_str();
  cmd->add_option("--gm-aux", a.gm_aux,
                  "GM-ME auxiliary images: attacker (the attacker's data) or heldout (the "
                  "training images the target never saw, beyond its first n_train; labels unused)")
      ->check(CLI::IsMember({"attacker", "heldout"}))
      ->capture_default_str();
}

/// GM-ME's auxiliary images under --gm-aux heldout: the training images after the run's first
/// n_train (the target never trained on them; GM-ME uses no labels).
data::Dataset heldout_images(const std::string& data_dir, int64_t image_size, int64_t n_train) {
  const data::Dataset all = data::load_fashion_mnist("train", data_dir, image_size);
  TESSERA_CHECK(all.size() > n_train, "--gm-aux heldout: no training images beyond the run's {}",
                n_train);
  std::vector<int64_t> index;
  for (int64_t i = n_train; i < all.size(); ++i) index.push_back(i);
  return all.subset(index);
}

/// The attacker's data: a seeded random subset of the training set of the given fraction.
data::Dataset attacker_data(const data::Dataset& train, double fraction, uint64_t seed) {
  TESSERA_CHECK(fraction > 0.0 && fraction <= 1.0, "--attacker-fraction {} must be in (0, 1]",
                fraction);
  std::vector<int64_t> order(train.size());
  for (int64_t i = 0; i < train.size(); ++i) order[i] = i;
  std::mt19937_64 rng = tessera::make_rng(seed, 77);
  data::shuffle_indices(order, rng);
  order.resize(std::max<int64_t>(1, std::llround(fraction * train.size())));
  return train.subset(order);
}

sf::ExtractionOptions extraction_options(const AttackFlags& a, const std::string& attack,
                                         int64_t budget, uint64_t seed) {
  sf::ExtractionOptions o;
  o.attack = attack;
  o.budget = budget;
  o.surrogate_epochs = a.surrogate_epochs;
  o.lr = a.surrogate_lr;
  o.craft_steps = a.craft_steps;
  o.seed = seed;
  o.validate();
  return o;
}

const char* attack_label(const std::string& a) {
  if (a == "craft") return "Craft-ME";
  if (a == "gan") return "GAN-ME";
  if (a == "gm") return "GM-ME";
  if (a == "train") return "Train-ME";
  return "SoftTrain-ME";
}

// ---------------------------------------------------------------------------------------------

void register_train(CLI::App* sfl) {
  auto flags = std::make_shared<RunFlags>();
  auto out = std::make_shared<std::string>("sfl_run.safetensors");
  auto json = std::make_shared<std::string>();
  auto central = std::make_shared<bool>(false);
  auto checkpoint = std::make_shared<std::string>();
  auto* cmd = sfl->add_subcommand("train", "in-process SFL training (server + K client threads)");
  add_run_flags(cmd, *flags);
  cmd->add_option("--out", *out, "saved run (client + server states, options)")
      ->capture_default_str();
  cmd->add_option("--checkpoint", *checkpoint, "atomic server checkpoint after every epoch");
  cmd->add_flag("--central", *central, "also train the uncut model centrally, same epochs");
  tessera::cli::add_json_option(cmd, *json);
  cmd->callback([=] {
    const Data d = load_data(*flags);
    const sf::SflOptions o = make_options(*flags, d.train.size());
    tessera::Report report("sfl train", o.to_json(), o.seed);
    sf::ServerSettings settings;
    settings.checkpoint_path = *checkpoint;
    settings.resume = !checkpoint->empty();
    const sf::RunResult run = sf::run_in_process(o, d.train, &d.test, settings);
    Table table = history_table();
    add_history_rows(table, run.history);
    std::cout << table.to_string();
    std::cout << fmt::format("SFL ({} clients, {}, cut {}): test accuracy {:.2f}% in {:.1f} s\n",
                             o.n_clients, o.ordering, o.split.cut, 100 * run.final_test_accuracy,
                             run.seconds);
    report.results()["sfl"] = run.to_json();
    if (*central) {
      tessera::Timer timer;
      const auto c = sf::train_central(o, d.train, d.test);
      std::cout << fmt::format(
          "central (same model, epochs, batch, schedule): {:.2f}% in {:.1f} s\n", 100 * c.accuracy,
          timer.elapsed_s());
      report.results()["central_accuracy"] = c.accuracy;
    }
    sf::save_run(*out, o, run.client_state, run.server_state);
    report.write(*json);
  });
}

void register_server(CLI::App* sfl) {
  auto flags = std::make_shared<RunFlags>();
  auto listen = std::make_shared<std::string>("0.0.0.0:50051");
  auto tokens_file = std::make_shared<std::string>();
  auto token = std::make_shared<std::string>();
  auto max_mb = std::make_shared<int64_t>(64);
  auto timeout_s = std::make_shared<double>(60.0);
  auto checkpoint = std::make_shared<std::string>("sfl_server.ckpt");
  auto resume = std::make_shared<bool>(false);
  auto out = std::make_shared<std::string>("sfl_run.safetensors");
  auto json = std::make_shared<std::string>();
  auto tls_cert = std::make_shared<std::string>();
  auto tls_key = std::make_shared<std::string>();
  auto from = std::make_shared<std::string>();
  auto* cmd = sfl->add_subcommand("server", "gRPC SFL server; clients join with `sfl client`");
  add_run_flags(cmd, *flags);
  cmd->add_option("--listen", *listen, "host:port to listen on")->capture_default_str();
  cmd->add_option("--tokens", *tokens_file, "file of 'client_id token' lines (per-client secrets)");
  cmd->add_option("--token", *token, "one secret for every client id (when no --tokens)");
  cmd->add_option("--max-message-mb", *max_mb, "largest message accepted or sent, MiB")
      ->capture_default_str();
  cmd->add_option("--step-timeout", *timeout_s,
                  "seconds a client may take for its turn before it is dropped for the epoch")
      ->capture_default_str();
  cmd->add_option("--checkpoint", *checkpoint, "atomic checkpoint after every epoch ('' = none)")
      ->capture_default_str();
  cmd->add_flag("--resume", *resume, "continue from --checkpoint if it exists");
  cmd->add_option("--out", *out, "saved run at the end")->capture_default_str();
  cmd->add_option("--tls-cert", *tls_cert, "PEM certificate chain: serve over TLS only");
  cmd->add_option("--tls-key", *tls_key, "PEM private key of --tls-cert");
  cmd->add_option("--from", *from,
                  "expert from `sfl pretrain`: ResSFL step B, clients and server start from its "
                  "feature layers (same --cut and --bottleneck; clients add --defense "
                  "attacker_aware --defense-decoder conv_normN0C16 --interval 5)");
  tessera::cli::add_json_option(cmd, *json);
  cmd->callback([=] {
    const Data d = load_data(*flags);
    const sf::SflOptions o = make_options(*flags, d.train.size());
    TESSERA_CHECK(*timeout_s > 0, "--step-timeout {} must be positive", *timeout_s);
    TESSERA_CHECK(*max_mb >= 1 && *max_mb < 2048, "--max-message-mb {} must be in [1, 2047]",
                  *max_mb);
    tessera::net::ServerOptions net_options;
    net_options.address = *listen;
    net_options.max_message_bytes = *max_mb << 20;
    net_options.tokens = read_tokens(*tokens_file, *token, o);
    TESSERA_CHECK(tls_cert->empty() == tls_key->empty(), "--tls-cert and --tls-key go together");
    if (!tls_cert->empty()) {
      net_options.tls_cert_chain = tessera::read_file(*tls_cert);
      net_options.tls_private_key = tessera::read_file(*tls_key);
    }
    sf::ServerSettings settings;
    settings.step_timeout_ms = static_cast<int64_t>(*timeout_s * 1000);
    settings.checkpoint_path = *checkpoint;
    settings.resume = *resume;
    settings.test_set = &d.test;
    if (!from->empty()) {
      const sf::SavedRun expert = sf::load_run(*from);
      std::tie(settings.initial_client_state, settings.initial_server_state) =
          sf::transfer_states(o, expert.options, expert.client, expert.server);
    }
    tessera::Report report("sfl server", o.to_json(), o.seed);
    const sf::RunResult run = sf::serve_grpc(o, settings, net_options, 2000, [&](int port) {
      tessera::log::info("sfl server listening on port {} for {} clients", port, o.n_clients);
    });
    Table table = history_table();
    add_history_rows(table, run.history);
    std::cout << table.to_string();
    std::cout << fmt::format("SFL over gRPC: test accuracy {:.2f}% in {:.1f} s\n",
                             100 * run.final_test_accuracy, run.seconds);
    report.results()["sfl"] = run.to_json();
    sf::save_run(*out, o, run.client_state, run.server_state);
    report.write(*json);
  });
}

void add_defense_flags(CLI::App* cmd, sf::DefenseOptions& d);  // cmd_splitfed_mi.inc

void register_client(CLI::App* sfl) {
  auto defense = std::make_shared<sf::DefenseOptions>();
  auto server = std::make_shared<std::string>();
  auto id = std::make_shared<std::string>("client0");
  auto token = std::make_shared<std::string>();
  auto data_dir = std::make_shared<std::string>();
  auto image_size = std::make_shared<int64_t>(32);
  auto timeout_s = std::make_shared<double>(120.0);
  auto retry_s = std::make_shared<double>(60.0);
  auto max_mb = std::make_shared<int64_t>(64);
  auto tls = std::make_shared<bool>(false);
  auto tls_ca = std::make_shared<std::string>();
  auto tls_name = std::make_shared<std::string>();
  auto* cmd = sfl->add_subcommand("client",
                                  "one SFL client process; everything else comes from the server");
  cmd->add_option("--server", *server, "server host:port")->required();
  cmd->add_option("--id", *id, "client id (client0 .. client<K-1>)")->capture_default_str();
  cmd->add_option("--token", *token, "this client's secret token")->required();
  cmd->add_option("--image-size", *image_size, "input side (must match the server's)")
      ->capture_default_str();
  cmd->add_option("--timeout", *timeout_s, "seconds one call may take (turns included)")
      ->capture_default_str();
  cmd->add_option("--retry", *retry_s, "seconds to keep retrying an unreachable server")
      ->capture_default_str();
  cmd->add_option("--max-message-mb", *max_mb, "largest message, MiB")->capture_default_str();
  cmd->add_flag("--tls", *tls, "connect over TLS (implied by --tls-ca)");
  cmd->add_option("--tls-ca", *tls_ca,
                  "PEM root certificate(s) to verify the server with (default: system roots)");
  cmd->add_option("--tls-server-name", *tls_name,
                  "name the server certificate must carry, if not the --server host");
  add_defense_flags(cmd, *defense);
  tessera::cli::add_data_option(cmd, *data_dir);
  cmd->callback([=] {
    defense->validate();
    const data::Dataset train = data::load_fashion_mnist("train", *data_dir, *image_size);
    tessera::net::ClientOptions o;
    o.address = *server;
    o.client_id = *id;
    o.token = *token;
    o.timeout_ms = static_cast<int64_t>(*timeout_s * 1000);
    o.max_message_bytes = *max_mb << 20;
    o.tls = *tls || !tls_ca->empty();
    if (!tls_ca->empty()) o.tls_root_certs = tessera::read_file(*tls_ca);
    o.tls_server_name = *tls_name;
    const sf::ClientReport r =
        sf::run_grpc_client(o, train,
                            defense->name == "none" || defense->name == "bottleneck"
                                ? nullptr
                                : std::make_shared<sf::DefenseStrategy>(*defense),
                            0, static_cast<int64_t>(*retry_s * 1000));
    std::cout << fmt::format("{}: {} epochs active, {} skipped, {} steps\n", *id, r.epochs_active,
                             r.epochs_skipped, r.steps);
  });
}

void register_attack(CLI::App* sfl) {
  auto run_path = std::make_shared<std::string>("sfl_run.safetensors");
  auto attack = std::make_shared<std::string>("train");
  auto budget = std::make_shared<int64_t>(10000);
  auto layers = std::make_shared<int64_t>(5);
  auto convention = std::make_shared<std::string>("weights");
  auto grad_noise = std::make_shared<double>(0.0);
  auto a = std::make_shared<AttackFlags>();
  auto data_dir = std::make_shared<std::string>();
  auto seed = std::make_shared<uint64_t>(0);
  auto json = std::make_shared<std::string>();
  auto* cmd = sfl->add_subcommand("attack", "offline model extraction against a saved SFL run");
  cmd->add_option("--run", *run_path, "saved run from `sfl train` / `sfl server`")
      ->capture_default_str();
  cmd->add_option("--attack", *attack, "craft, gan, gm, train or softtrain")->capture_default_str();
  cmd->add_option("--budget", *budget, "gradient queries (1 = one sample)")->capture_default_str();
  cmd->add_option("--server-layers", *layers, "server-side layers of the re-split target")
      ->capture_default_str();
  cmd->add_option("--convention", *convention, "weights or units")->capture_default_str();
  cmd->add_option("--grad-noise", *grad_noise, "defense: noise on returned gradients")
      ->capture_default_str();
  add_attack_flags(cmd, *a);
  tessera::cli::add_data_option(cmd, *data_dir);
  tessera::cli::add_seed_option(cmd, *seed);
  tessera::cli::add_json_option(cmd, *json);
  cmd->callback([=] {
    tessera::seed_everything(*seed);
    const sf::SavedRun run = sf::load_run(*run_path);
    const auto& o = run.options;
    const data::Dataset train =
        data::load_fashion_mnist("train", *data_dir, o.model.image_size).head(o.n_train);
    const data::Dataset test = data::load_fashion_mnist("test", *data_dir, o.model.image_size);
    const data::Dataset mine = attacker_data(train, a->attacker_fraction, *seed);
    const data::Dataset aux = *attack == "gm" && a->gm_aux == "heldout"
                                  ? heldout_images(*data_dir, o.model.image_size, o.n_train)
                                  : mine;
    models::Model full = sf::full_model(o, run.client, run.server);
    const auto options = extraction_options(*a, *attack, *budget, *seed);
    const double target = tessera::train::evaluate(full, test).accuracy;
    const sf::ExtractionResult r =
        sf::extract_offline(full, *layers, *convention, options, &aux, test, *grad_noise);
    Table table({"attack", "server layers (" + *convention + ")", "budget", "queries",
                 "target acc %", "best acc %", "best fidelity %", "s"});
    table.add_row({attack_label(*attack), std::to_string(*layers), std::to_string(*budget),
                   std::to_string(r.queries_used), pct(target), pct(r.best_accuracy),
                   pct(r.best_fidelity), fmt::format("{:.1f}", r.seconds)});
    std::cout << table.to_string();
    tessera::Report report("sfl attack",
                           {{"run", *run_path},
                            {"attack", options.attack},
                            {"budget", *budget},
                            {"server_layers", *layers},
                            {"convention", *convention},
                            {"grad_noise", *grad_noise}},
                           *seed);
    report.results() = r.to_json();
    report.results()["target_accuracy"] = target;
    report.write(*json);
  });
}

/// `sfl bench-me`: target + central baseline, then every attack x server layers x budget.
void register_bench_me(CLI::App* sfl) {
  auto flags = std::make_shared<RunFlags>();
  auto a = std::make_shared<AttackFlags>();
  auto layers = std::make_shared<std::string>("2,3,4,5,6,7,8");
  auto budgets = std::make_shared<std::string>("1000,10000,100000");
  auto attacks = std::make_shared<std::string>("craft,gan,gm,train,softtrain");
  auto defenses = std::make_shared<std::string>("");
  auto online = std::make_shared<std::string>("");
  auto run_path = std::make_shared<std::string>();
  auto json = std::make_shared<std::string>();
  auto* cmd = sfl->add_subcommand("bench-me", "model-extraction benchmark (research/sfl.md 2)");
  add_run_flags(cmd, *flags);
  add_attack_flags(cmd, *a);
  cmd->add_option("--layers", *layers, "server-side layer counts to attack")->capture_default_str();
  cmd->add_option("--budgets", *budgets, "query budgets")->capture_default_str();
  cmd->add_option("--attacks", *attacks, "attacks to run")->capture_default_str();
  cmd->add_option(
         "--defenses", *defenses,
         "extra targets trained with a defense, e.g. noise:0.01,l1:1.2e-4,l2:0.05; each is "
         "attacked at --server-layers with the largest budget")
      ->capture_default_str();
  cmd->add_option("--online", *online,
                  "attacks to also run online (during a fresh SFL training, queries in the last "
                  "epoch, largest budget)")
      ->capture_default_str();
  cmd->add_option("--run", *run_path,
                  "attack this saved run (`sfl train --out`) instead of training a target; its "
                  "options (model, data, seed) replace the run flags and no central baseline runs");
  tessera::cli::add_json_option(cmd, *json);
  cmd->callback([=] {
    Data d = load_data(*flags);
    sf::SflOptions o;
    sf::RunResult target_run;
    if (run_path->empty()) {
      o = make_options(*flags, d.train.size());
    } else {
      const sf::SavedRun saved = sf::load_run(*run_path);
      o = saved.options;
      d.train = data::load_fashion_mnist("train", flags->data_dir, o.model.image_size);
      TESSERA_CHECK(d.train.size() >= o.n_train, "{} was trained on {} images; only {} here",
                    *run_path, o.n_train, d.train.size());
      d.train = d.train.head(o.n_train);
      target_run.client_state = saved.client;
      target_run.server_state = saved.server;
      models::Model f = sf::full_model(o, saved.client, saved.server);
      target_run.final_test_accuracy = tessera::train::evaluate(f, d.test).accuracy;
    }
    const std::vector<int64_t> layer_list = parse_list(*layers, "--layers");
    const std::vector<int64_t> budget_list = parse_list(*budgets, "--budgets");
    const std::vector<std::string> attack_list = split_names(*attacks);
    for (const auto& name : attack_list) extraction_options(*a, name, 1000, o.seed);  // validate
    const data::Dataset mine = attacker_data(d.train, a->attacker_fraction, o.seed);
    const bool heldout_gm =
        a->gm_aux == "heldout" &&
        std::find(attack_list.begin(), attack_list.end(), "gm") != attack_list.end();
    const data::Dataset heldout =
        heldout_gm ? heldout_images(flags->data_dir, o.model.image_size, o.n_train) : mine;
    // The data an attack holds: GM-ME may use the held-out images instead of the attacker's.
    auto data_for = [&](const std::string& name) { return name == "gm" ? &heldout : &mine; };
    tessera::Report report("sfl bench-me", o.to_json(), o.seed);
    report.results()["layer_convention"] = flags->convention;
    report.results()["gm_aux"] = a->gm_aux;
    report.results()["attacker_fraction"] = a->attacker_fraction;
    report.results()["surrogate_epochs"] = a->surrogate_epochs;
    if (!run_path->empty()) report.results()["run"] = *run_path;

    // 1. Target (SFL) and the central baseline with the same epochs.
    Table targets({"model", "training", "epochs", "test acc %", "s"});
    const std::string model_name = fmt::format("{} x{} width", o.model.name, o.model.width_mult);
    const std::string sfl_label =
        fmt::format("SFL {} clients {} cut {}", o.n_clients, o.ordering, o.split.cut);
    if (run_path->empty()) {
      target_run = sf::run_in_process(o, d.train, &d.test);
      tessera::Timer central_timer;
      const auto central = sf::train_central(o, d.train, d.test);
      targets.add_row({model_name, sfl_label, std::to_string(o.epochs),
                       pct(target_run.final_test_accuracy),
                       fmt::format("{:.1f}", target_run.seconds)});
      targets.add_row({model_name, "central", std::to_string(o.epochs), pct(central.accuracy),
                       fmt::format("{:.1f}", central_timer.elapsed_s())});
    } else {
      targets.add_row({model_name, sfl_label + " (" + *run_path + ")", std::to_string(o.epochs),
                       pct(target_run.final_test_accuracy), "-"});
    }
    std::cout << targets.to_string() << "\n";
    report.results()["targets"] = targets.to_json();
    models::Model full = sf::full_model(o, target_run.client_state, target_run.server_state);

    // 2. Offline attacks: accuracy and fidelity tables (rows attack x budget, columns layers).
    std::vector<std::string> header = {"attack", "budget"};
    for (const int64_t l : layer_list) header.push_back(fmt::format("L={}", l));
    Table accuracy(header), fidelity(header);
    nlohmann::json rows = nlohmann::json::array();
    for (const auto& name : attack_list) {
      // Train-ME uses no gradients: one row, budget "-".
      const std::vector<int64_t> budgets_for =
          name == "train" ? std::vector<int64_t>{0} : budget_list;
      for (const int64_t budget : budgets_for) {
        std::vector<std::string> acc_row = {attack_label(name),
                                            budget ? std::to_string(budget) : "-"};
        std::vector<std::string> fid_row = acc_row;
        for (const int64_t l : layer_list) {
          const auto options = extraction_options(*a, name, budget, o.seed);
          const sf::ExtractionResult r =
              sf::extract_offline(full, l, flags->convention, options, data_for(name), d.test, 0.0);
          tessera::log::info("{} budget {} L={}: acc {:.2f}% fidelity {:.2f}% ({:.1f} s)",
                             attack_label(name), budget, l, 100 * r.best_accuracy,
                             100 * r.best_fidelity, r.seconds);
          acc_row.push_back(pct(r.best_accuracy));
          fid_row.push_back(pct(r.best_fidelity));
          nlohmann::json row = r.to_json();
          row["budget"] = budget;
          row["server_layers"] = l;
          rows.push_back(row);
        }
        accuracy.add_row(acc_row);
        fidelity.add_row(fid_row);
      }
    }
    std::cout << fmt::format(
                     "Surrogate accuracy % (offline; target {:.2f}%; server layers counted "
                     "by the '{}' convention)\n",
                     100 * target_run.final_test_accuracy, flags->convention)
              << accuracy.to_string() << "\n"
              << "Surrogate fidelity % (agreement with the target's top-1)\n"
              << fidelity.to_string() << "\n";
    report.results()["offline"] = rows;
    report.results()["accuracy_table"] = accuracy.to_json();
    report.results()["fidelity_table"] = fidelity.to_json();

    // 3. Defenses: retrain the target with each, attack at --server-layers, largest budget.
    const int64_t max_budget = *std::max_element(budget_list.begin(), budget_list.end());
    if (!defenses->empty()) {
      std::vector<std::string> dh = {"defense", "target acc %"};
      for (const auto& name : attack_list) dh.push_back(std::string(attack_label(name)) + " acc %");
      Table defense_table(dh);
      auto run_defense = [&](const std::string& label, sf::SflOptions od, bool retrain) {
        sf::RunResult run = retrain ? sf::run_in_process(od, d.train, &d.test) : target_run;
        models::Model f = sf::full_model(od, run.client_state, run.server_state);
        std::vector<std::string> row = {label, pct(run.final_test_accuracy)};
        for (const auto& name : attack_list) {
          const auto options =
              extraction_options(*a, name, name == "train" ? 0 : max_budget, o.seed);
          const auto r = sf::extract_offline(f, flags->server_layers, flags->convention, options,
                                             data_for(name), d.test, od.grad_noise);
          row.push_back(pct(r.best_accuracy));
        }
        defense_table.add_row(row);
      };
      run_defense("none", o, false);
      for (const auto& spec : split_names(*defenses)) {
        const auto colon = spec.find(':');
        TESSERA_CHECK(colon != std::string::npos, "--defenses: '{}' is not kind:strength", spec);
        const std::string kind = spec.substr(0, colon);
        const double strength = std::stod(spec.substr(colon + 1));
        sf::SflOptions od = o;
        if (kind == "noise") {
          od.grad_noise = strength;
        } else if (kind == "l1") {
          od.client_l1 = strength;
        } else if (kind == "l2") {
          od.client_l2 = strength;
        } else {
          TESSERA_CHECK(false, "--defenses: unknown defense '{}' (noise, l1, l2)", kind);
        }
        run_defense(spec, od, true);
      }
      std::cout << fmt::format("Defenses (offline attacks at L={}, budget {})\n",
                               flags->server_layers, max_budget)
                << defense_table.to_string() << "\n";
      report.results()["defense_table"] = defense_table.to_json();
    }

    // 4. Online attacks: queries are SFL steps of the attacker during the last epoch.
    if (!online->empty()) {
      Table online_table(
          {"attack", "budget", "queries", "target acc %", "best acc %", "best fidelity %"});
      for (const auto& name : split_names(*online)) {
        const auto options = extraction_options(*a, name, name == "train" ? 0 : max_budget, o.seed);
        const auto r =
            sf::extract_online(o, d.train, d.test, options, data_for(name), o.epochs - 1);
        online_table.add_row({attack_label(name), std::to_string(options.budget),
                              std::to_string(r.attack.queries_used), pct(r.run.final_test_accuracy),
                              pct(r.attack.best_accuracy), pct(r.attack.best_fidelity)});
      }
      std::cout << fmt::format("Online attacks (cut {}, queries in the last epoch)\n", o.split.cut)
                << online_table.to_string() << "\n";
      report.results()["online_table"] = online_table.to_json();
    }
    report.write(*json);
  });
}

/// Runs this binary as a child process.
pid_t spawn_self(const std::vector<std::string>& args, const std::string& log_path) {
  std::vector<char*> argv;
  for (const auto& s : args) argv.push_back(const_cast<char*>(s.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  TESSERA_CHECK(rc == 0, "could not start a child process (errno {})", rc);
  return pid;
}

int wait_child(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/// `sfl bench-transport`: the same run in process and as 1 server + K client processes on
/// loopback; accuracy and wall time side by side.
void register_bench_transport(CLI::App* sfl) {
  auto flags = std::make_shared<RunFlags>();
  auto port = std::make_shared<int>(50517);
  auto work = std::make_shared<std::string>("sfl_bench_transport");
  auto process_threads = std::make_shared<int>(1);
  auto json = std::make_shared<std::string>();
  auto* cmd = sfl->add_subcommand("bench-transport",
                                  "in-process vs gRPC loopback (1 server + K client processes)");
  add_run_flags(cmd, *flags);
  cmd->add_option("--port", *port, "loopback port")->capture_default_str();
  // K + 1 processes that each start one LibTorch thread per core oversubscribe a small machine;
  // the in-process run uses the global --threads.
  cmd->add_option("--process-threads", *process_threads,
                  "LibTorch threads of each gRPC process (0 = one per core)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--work-dir", *work, "where the processes write logs and reports")
      ->capture_default_str();
  tessera::cli::add_json_option(cmd, *json);
  cmd->callback([=] {
    // Both sides are timed end to end: data loading and training (the gRPC side from spawning
    // the processes until the last one exits).
    tessera::Timer local_timer;
    const Data d = load_data(*flags);
    const sf::SflOptions o = make_options(*flags, d.train.size());
    std::filesystem::create_directories(*work);
    std::filesystem::remove(*work + "/server.ckpt");  // a fresh run, not a resume
    const sf::RunResult local = sf::run_in_process(o, d.train, &d.test);
    const double local_seconds = local_timer.elapsed_s();

    const RunFlags& f = *flags;
    const std::string threads = std::to_string(*process_threads);
    std::vector<std::string> server_args = {"tessera",
                                            "--threads",
                                            threads,
                                            "sfl",
                                            "server",
                                            "--listen",
                                            fmt::format("127.0.0.1:{}", *port),
                                            "--token",
                                            "loopback-secret",
                                            "--checkpoint",
                                            *work + "/server.ckpt",
                                            "--out",
                                            *work + "/grpc_run.safetensors",
                                            "--json",
                                            *work + "/server.json",
                                            "--model",
                                            f.model,
                                            "--width",
                                            fmt::format("{}", f.width),
                                            "--image-size",
                                            std::to_string(f.image_size),
                                            "--cut",
                                            std::to_string(o.split.cut),
                                            "--bottleneck",
                                            std::to_string(f.bottleneck),
                                            "--bottleneck-stride",
                                            std::to_string(f.bottleneck_stride),
                                            "--clients",
                                            std::to_string(f.clients),
                                            "--ordering",
                                            f.ordering,
                                            "--sample-ratio",
                                            fmt::format("{}", f.sample_ratio),
                                            "--partition",
                                            f.partition,
                                            "--shards",
                                            std::to_string(f.shards),
                                            "--epochs",
                                            std::to_string(f.epochs),
                                            "--batch-size",
                                            std::to_string(f.batch_size),
                                            "--lr",
                                            fmt::format("{}", f.lr),
                                            "--client-lr",
                                            fmt::format("{}", f.client_lr),
                                            "--schedule",
                                            f.schedule,
                                            "--augment-pad",
                                            std::to_string(f.augment_pad),
                                            "--train-samples",
                                            std::to_string(f.train_samples),
                                            "--test-samples",
                                            std::to_string(f.test_samples),
                                            "--max-batches",
                                            std::to_string(f.max_batches),
                                            "--seed",
                                            std::to_string(f.seed),
                                            "--data",
                                            f.data_dir};
    tessera::Timer timer;
    const pid_t server = spawn_self(server_args, *work + "/server.log");
    std::vector<pid_t> clients;
    for (int64_t i = 0; i < o.n_clients; ++i) {
      clients.push_back(spawn_self(
          {"tessera", "--threads", threads, "sfl", "client", "--server",
           fmt::format("127.0.0.1:{}", *port), "--id", o.client_id(i), "--token", "loopback-secret",
           "--image-size", std::to_string(f.image_size), "--data", f.data_dir},
          *work + "/" + o.client_id(i) + ".log"));
    }
    int failures = 0;
    for (const pid_t pid : clients) failures += wait_child(pid) != 0;
    failures += wait_child(server) != 0;
    const double grpc_seconds = timer.elapsed_s();
    TESSERA_CHECK(failures == 0, "{} child process(es) failed; see the logs in {}", failures,
                  *work);
    const nlohmann::json server_report =
        nlohmann::json::parse(tessera::read_file(*work + "/server.json"));
    const double grpc_accuracy =
        server_report.at("results").at("sfl").at("final_test_accuracy").get<double>();
    const double grpc_train_seconds =
        server_report.at("results").at("sfl").at("seconds").get<double>();
    Table table({"transport", "processes", "torch threads", "test acc %", "training s", "wall s",
                 "wall ratio"});
    table.add_row({"in-process", "1", std::to_string(torch::get_num_threads()),
                   pct(local.final_test_accuracy), fmt::format("{:.1f}", local.seconds),
                   fmt::format("{:.1f}", local_seconds), "1.00"});
    table.add_row({"gRPC loopback", std::to_string(1 + o.n_clients),
                   *process_threads == 0 ? "per core" : threads + " per process",
                   pct(grpc_accuracy), fmt::format("{:.1f}", grpc_train_seconds),
                   fmt::format("{:.1f}", grpc_seconds),
                   fmt::format("{:.2f}", grpc_seconds / local_seconds)});
    std::cout << table.to_string();
    std::cout << fmt::format(
        "accuracy difference {:.2f} points; wall ratio {:.2f} (training s: in-process run, gRPC "
        "server from start to exit; wall s: data loading included, gRPC from spawn to the last "
        "exit)\n",
        100 * std::abs(grpc_accuracy - local.final_test_accuracy), grpc_seconds / local_seconds);
    tessera::Report report("sfl bench-transport", o.to_json(), o.seed);
    report.results()["table"] = table.to_json();
    report.results()["in_process_accuracy"] = local.final_test_accuracy;
    report.results()["grpc_accuracy"] = grpc_accuracy;
    report.results()["in_process_seconds"] = local_seconds;
    report.results()["in_process_training_seconds"] = local.seconds;
    report.results()["grpc_seconds"] = grpc_seconds;
    report.results()["grpc_server_seconds"] = grpc_train_seconds;
    report.results()["process_threads"] = *process_threads;
    report.write(*json);
  });
}

std::vector<tessera::cli::TourRow> tour_step(const tessera::cli::TourContext& ctx) {
  // A short SFL run (VGG-11-BN at 1/8 width, 3 clients, 2 epochs on 6000 images) and one
  // offline attack (Train-ME with 2% of the data, 5 server-side layers).
  RunFlags f;
  f.width = 0.125;
  f.epochs = 2;
  f.train_samples = 6000;
  f.test_samples = 2000;
  f.seed = ctx.seed;
  f.data_dir = ctx.data_dir;
  const Data d = load_data(f);
  const sf::SflOptions o = make_options(f, d.train.size());
  const sf::RunResult run = sf::run_in_process(o, d.train, &d.test);
  models::Model full = sf::full_model(o, run.client_state, run.server_state);
  AttackFlags a;
  a.surrogate_epochs = 5;
  const data::Dataset mine = attacker_data(d.train, 0.05, o.seed);
  const auto r = sf::extract_offline(full, 5, "weights", extraction_options(a, "train", 0, o.seed),
                                     &mine, d.test, 0.0);
  return {{"splitfed",
           fmt::format("SFL VGG-11 x1/8, 3 clients, 2 ep: {:.1f}%; Train-ME (5 server layers, 300 "
                       "imgs): acc {:.1f}%, fidelity {:.1f}%",
                       100 * run.final_test_accuracy, 100 * r.best_accuracy, 100 * r.best_fidelity),
           "VGG-11 CIFAR-10, 5 server layers: ME >90% acc, <2% below target"}};
}

#include "cmd_splitfed_mi.inc"

}  // namespace

void register_splitfed(CLI::App& app, tessera::cli::Tour& tour) {
  auto* sfl = app.add_subcommand("sfl", "split federated learning and model-extraction attacks");
  sfl->require_subcommand(1);
  register_train(sfl);
  register_server(sfl);
  register_client(sfl);
  register_attack(sfl);
  register_bench_me(sfl);
  register_bench_transport(sfl);
  tour.add("splitfed", tour_step);
  register_attack_mi(sfl);
  register_pretrain(sfl);
  register_train_defended(sfl);
  register_bench_mi(sfl);
  tour.add("splitfed-mi", tour_step_mi);
}
