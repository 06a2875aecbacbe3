// `tessera sfl ...`: split federated learning (in process and over gRPC), model extraction and
// model inversion with their benchmarks. The experiments are in tessera/splitfed/bench.h; this
// file binds flags into their options, prints their tables and writes the reports.
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "cli.h"
#include "cli_options.h"
#include "tessera/core/fs.h"
#include "tessera/core/image.h"
#include "tessera/core/report.h"
#include "tessera/models/registry.h"
#include "tessera/splitfed/bench.h"

namespace {

using namespace tessera::splitfed;  // the library this file binds
namespace cli = tessera::cli;

using tessera::cli::choice;
using tessera::cli::choices;
using tessera::cli::opt;

/// A command's options and the files it writes besides stdout.
template <typename Options>
struct Command {
  Options options;
  std::string out, json, svg;
  std::string dir;  ///< an output folder (not checked like the files)
};

/// --json and the command's callback: checks its outputs before any work, runs `body` (which
/// prints and returns the results) and writes the JSON report with the seed `*seed`.
template <typename Options, typename Body>
void on_run(CLI::App* cmd, std::shared_ptr<Command<Options>> c, const std::string& name,
            const uint64_t* seed, Body body) {
  cli::add_json_option(cmd, c->json);
  cmd->callback([c, name, seed, body] {
    cli::check_writable({c->out, c->json, c->svg});
    tessera::Report report(name, c->options.to_json(), *seed);
    report.results() = body(*c);
    report.write(c->json);
  });
}

/// Every flag of an SFL run (`sfl train`, `server`, the benches): they fill SflRunOptions.
void add_run_flags(CLI::App* cmd, SflRunOptions& r) {
  auto& o = r.sfl;
  opt(cmd, "--arch", o.model.name, "architecture (" + tessera::models::known_model_names() + ")");
  opt(cmd, "--width", o.model.width_mult, "channel width multiplier (CPU budget)");
  opt(cmd, "--image-size", o.model.image_size, "input side (Fashion-MNIST is zero-padded)");
  opt(cmd, "--cut", o.split.cut, "client keeps units [0, cut); -1: from --server-layers");
  opt(cmd, "--server-layers", r.server_layers, "server-side layers when --cut is -1");
  choice(cmd, "--convention", r.convention, parse_layer_convention, layer_convention_name,
         "how server layers count: weights (a pool joins its conv) or units");
  opt(cmd, "--bottleneck", o.split.bottleneck_channels, "bottleneck channels (0 = none)");
  opt(cmd, "--bottleneck-stride", o.split.bottleneck_stride, "bottleneck stride (1 or 2)");
  opt(cmd, "--clients", o.n_clients, "number of clients K");
  choice(cmd, "--ordering", o.ordering, parse_ordering, ordering_name, "v2 (turns) or v1");
  opt(cmd, "--sample-ratio", o.sample_ratio, "fraction of clients active per epoch");
  choice(cmd, "--partition", o.partition, parse_partition, partition_name, "iid or label_shards");
  opt(cmd, "--shards", o.shards_per_client, "label shards per client (label_shards)");
  opt(cmd, "--epochs", o.epochs, "epochs");
  opt(cmd, "--batch-size", o.batch_size, "batch size per client step");
  opt(cmd, "--lr", o.lr, "server learning rate (SGD, momentum 0.9, wd 5e-4)");
  opt(cmd, "--client-lr", o.client_lr, "client learning rate (-1 = --lr)");
  opt(cmd, "--schedule", o.schedule, "constant, step, multistep or cosine");
  opt(cmd, "--augment-pad", o.augment_pad, "random-crop padding (0 = no augmentation)");
  opt(cmd, "--max-batches", o.max_batches_per_epoch, "cap on steps per client, epoch (0 = none)");
  opt(cmd, "--grad-noise", o.grad_noise, "defense: server adds s*U[0,1) to returned gradients");
  opt(cmd, "--l1", o.client_l1, "defense: L1 penalty on client-side weights");
  opt(cmd, "--l2", o.client_l2, "defense: L2 penalty on client-side weights");
  cli::add_seed_option(cmd, o.seed);
  opt(cmd, "--train-samples", r.data.train_samples, "first N training images (0 = all)");
  opt(cmd, "--test-samples", r.data.test_samples, "first N test images (0 = all)");
  cli::add_data_option(cmd, r.data.dir);
}

void add_attacker_flags(CLI::App* cmd, AttackerOptions& a) {
  opt(cmd, "--surrogate-epochs", a.surrogate_epochs, "surrogate training epochs (paper: 200)");
  opt(cmd, "--attacker-fraction", a.attacker_fraction, "attacker's labelled share of the data");
  opt(cmd, "--surrogate-lr", a.surrogate_lr, "surrogate SGD learning rate");
  opt(cmd, "--craft-steps", a.craft_steps, "Craft-ME Adam steps per image");
  choice(cmd, "--gm-aux", a.gm_aux, parse_gm_aux, gm_aux_name, "GM-ME: attacker or heldout");
}

/// Defense flags of pretrain, train-defended and `sfl client`.
void add_defense_flags(CLI::App* cmd, DefenseOptions& d) {
  choice(cmd, "--defense", d.kind, parse_defense, defense_name,
         "none, attacker_aware, ressfl, laplace, gaussian, dropout, topk, nopeek or bottleneck");
  opt(cmd, "--lambda", d.lambda, "hinge weight of CE + lambda*max(0, SSIM - tau)");
  opt(cmd, "--tau", d.tau, "SSIM threshold tau in [0, 1)");
  choice(cmd, "--defense-decoder", d.decoder, parse_decoder, decoder_name, "simulated decoder");
  opt(cmd, "--interval", d.interval, "decoder step every N batches");
  cmd->add_flag_callback(
      "--hinge-on-decoder-steps", [&d] { d.hinge_every_batch = false; },
      "SSIM hinge only when the decoder steps (default: every batch)");
  opt(cmd, "--inner-steps", d.inner_steps, "decoder steps each time");
  opt(cmd, "--decoder-pretrain-epochs", d.decoder_pretrain_epochs, "before the first step");
  opt(cmd, "--strength", d.strength, "baseline strength (<= 0: the default, see the docs)");
}

void add_mi_attack_flags(CLI::App* cmd, MiAttackOptions& a) {
  choices(cmd, "--decoders", a.decoders, parse_decoder, decoder_name, "training-based MI decoders");
  opt(cmd, "--attack-epochs", a.epochs, "decoder training epochs (paper: 50)");
  opt(cmd, "--attack-patience", a.patience, "> 0: stop a decoder flat this many epochs");
  opt(cmd, "--targets", a.targets, "fixed held-out target images (paper: 128)");
  opt(cmd, "--aux", a.aux, "attacker's auxiliary images (test split, after the targets)");
  opt(cmd, "--optimization-steps", a.optimization_steps, "optimisation-based MI steps (0 = off)");
  opt(cmd, "--optimization-lr", a.optimization_lr, "optimisation-based MI Adam step");
}

void add_task_flags(CLI::App* cmd, DataOptions& d, std::vector<int64_t>& classes) {
  choice(cmd, "--dataset", d.source, parse_data_source, data_source_name, "fmnist/cifar10/100");
  choice(cmd, "--classes", classes, parse_classes, classes_name, "all, 0-4 or 5,6,7");
  cmd->add_option("--cifar-dir", d.cifar_dir, "CIFAR binary files");
}

void register_train(CLI::App* sfl) {
  auto c = std::make_shared<Command<TrainSflOptions>>();
  c->out = cli::default_output("sfl_run.safetensors");
  auto* cmd = sfl->add_subcommand("train", "in-process SFL training (server + K client threads)");
  add_run_flags(cmd, c->options.run);
  opt(cmd, "-o,--out", c->out, "saved run (client + server states, options)");
  cmd->add_option("--checkpoint", c->options.checkpoint, "server checkpoint after every epoch");
  cmd->add_flag("--central", c->options.central, "also train the uncut model centrally");
  cli::add_svg_option(cmd, c->svg);
  on_run(cmd, c, "sfl train", &c->options.run.sfl.seed, [](const auto& c) {
    cli::check_writable({c.options.checkpoint});
    const TrainSflResult r = train_sfl(c.options);
    std::cout << r.to_string();
    save_run(c.out, r.sfl, r.run.client_state, r.run.server_state);
    if (!c.svg.empty()) tessera::write_file_atomic(c.svg, r.svg());
    return r.to_json();
  });
}

void register_server(CLI::App* sfl) {
  auto c = std::make_shared<Command<ServeOptions>>();
  auto& o = c->options;
  c->out = cli::default_output("sfl_run.safetensors");
  o.checkpoint = cli::default_output("sfl_server.ckpt");
  auto* cmd = sfl->add_subcommand("server", "gRPC SFL server; clients join with `sfl client`");
  add_run_flags(cmd, o.run);
  opt(cmd, "--listen", o.listen, "host:port (not loopback: needs --tls-cert or --insecure)");
  cmd->add_option("--tokens", o.tokens, "'client_id token' lines, a token per client")->required();
  cmd->add_flag("--insecure", o.insecure, "allow plain text on a non-loopback address");
  opt(cmd, "--max-message-mb", o.max_message_mb, "largest message accepted or sent, MiB");
  opt(cmd, "--step-timeout", o.step_timeout_s, "seconds a client may take for its turn");
  opt(cmd, "--join-timeout", o.join_timeout_s, "seconds a client not yet heard from is waited");
  choice(cmd, "--aggregation", o.aggregation, parse_aggregation, aggregation_name, "averaging");
  opt(cmd, "--clip", o.clip_factor, "mean: update norm bound, x the median norm (0 = off)");
  opt(cmd, "--max-activation", o.max_activation, "bound on |smashed data| of a step");
  opt(cmd, "--checkpoint", o.checkpoint, "atomic checkpoint after every epoch ('' = none)");
  cmd->add_flag("--resume", o.resume, "continue from --checkpoint if it exists");
  opt(cmd, "-o,--out", c->out, "saved run at the end");
  cmd->add_option("--tls-cert", o.tls_cert, "PEM certificate chain: serve over TLS only");
  cmd->add_option("--tls-key", o.tls_key, "PEM private key of --tls-cert");
  cmd->add_option("--from", o.from, "expert from `sfl pretrain` (ResSFL step B; same split)");
  on_run(cmd, c, "sfl server", &o.run.sfl.seed, [](const auto& c) {
    cli::check_writable({c.options.checkpoint});
    const ServeResult r = serve(c.options);
    std::cout << r.to_string();
    save_run(c.out, r.sfl, r.run.client_state, r.run.server_state);
    return r.to_json();
  });
}

void register_client(CLI::App* sfl) {
  auto o = std::make_shared<JoinOptions>();
  auto* cmd = sfl->add_subcommand("client", "one SFL client process; the server sends the rest");
  cmd->add_option("--server", o->net.address, "server host:port")->required();
  opt(cmd, "--id", o->net.client_id, "client id (client0 .. client<K-1>)");
  cmd->add_option("--token-file", o->token_file, "its token, or 'client_id token' lines");
  cmd->add_option("--token", o->net.token, "its token (visible in ps; prefer --token-file)");
  cmd->add_flag("--insecure", o->insecure, "allow plain text to a non-loopback server");
  opt(cmd, "--poison", o->poison, "test attacker: z,state scales")->delimiter(',');
  opt(cmd, "--image-size", o->image_size, "input side (must match the server's)");
  opt(cmd, "--timeout", o->timeout_s, "seconds one call may take (turns included)");
  opt(cmd, "--retry", o->retry_s, "seconds to keep retrying an unreachable server");
  opt(cmd, "--max-message-mb", o->max_message_mb, "largest message, MiB");
  cmd->add_flag("--tls", o->net.tls, "connect over TLS (implied by --tls-ca)");
  cmd->add_option("--tls-ca", o->tls_ca, "PEM root certificate(s) (default: system roots)");
  cmd->add_option("--tls-server-name", o->net.tls_server_name, "name the server cert must carry");
  add_defense_flags(cmd, o->defense);
  cli::add_data_option(cmd, o->data.dir);
  cmd->callback([o] {
    const ClientReport r = join(*o);
    std::cout << fmt::format("{}: {} epochs active, {} skipped, {} refused, {} steps\n",
                             o->net.client_id, r.epochs_active, r.epochs_skipped, r.epochs_refused,
                             r.steps);
  });
}

void register_attack(CLI::App* sfl) {
  auto c = std::make_shared<Command<OfflineAttackOptions>>();
  auto& a = c->options;
  a.run = cli::default_output("sfl_run.safetensors");
  auto* cmd = sfl->add_subcommand("attack", "offline model extraction against a saved SFL run");
  opt(cmd, "--run", a.run, "saved run from `sfl train` / `sfl server`");
  choice(cmd, "--attack", a.attack, parse_extraction_attack, extraction_attack_name, "the attack");
  opt(cmd, "--budget", a.budget, "gradient queries (1 = one sample)");
  opt(cmd, "--server-layers", a.server_layers, "server-side layers of the re-split target");
  choice(cmd, "--convention", a.convention, parse_layer_convention, layer_convention_name,
         "weights or units");
  opt(cmd, "--grad-noise", a.grad_noise, "defense: noise on returned gradients");
  add_attacker_flags(cmd, a.attacker);
  cli::add_data_option(cmd, a.data.dir);
  cli::add_seed_option(cmd, a.seed);
  on_run(cmd, c, "sfl attack", &a.seed, [](const auto& c) {
    const OfflineAttackResult r = offline_attack(c.options);
    std::cout << r.table().to_string();
    return r.to_json();
  });
}

void register_bench_me(CLI::App* sfl) {
  auto c = std::make_shared<Command<MeBenchOptions>>();
  auto& b = c->options;
  auto* cmd = sfl->add_subcommand("bench-me", "model-extraction benchmark (research/sfl.md 2)");
  add_run_flags(cmd, b.run);
  add_attacker_flags(cmd, b.attacker);
  opt(cmd, "--layers", b.layers, "server-side layer counts to attack")->delimiter(',');
  opt(cmd, "--budgets", b.budgets, "query budgets")->delimiter(',');
  opt(cmd, "--attacker-fractions", b.fractions, "offline: data shares swept (default: the one)")
      ->delimiter(',');
  choices(cmd, "--attacks", b.attacks, parse_extraction_attack, extraction_attack_name, "attacks");
  choices(cmd, "--defenses", b.defenses, parse_me_defense, std::mem_fn(&MeDefense::name),
          "retrained targets: noise:S, l1:S or l2:S (attacked at --server-layers)");
  choices(cmd, "--online", b.online, parse_extraction_attack, extraction_attack_name,
          "attacks also run online (queries in the last epoch)");
  cmd->add_option("--run", b.target_run, "attack this saved run instead of training a target");
  cli::add_svg_option(cmd, c->svg);
  on_run(cmd, c, "sfl bench-me", &b.run.sfl.seed, [](const auto& c) {
    const MeBenchResult r = bench_me(c.options);
    std::cout << r.to_string();
    if (!c.svg.empty()) tessera::write_file_atomic(c.svg, r.svg());
    return r.to_json();
  });
}

void register_bench_transport(CLI::App* sfl) {
  auto c = std::make_shared<Command<TransportBenchOptions>>();
  auto& t = c->options;
  t.work_dir = cli::default_output("sfl_bench_transport");
  auto* cmd = sfl->add_subcommand("bench-transport", "in-process vs gRPC loopback processes");
  add_run_flags(cmd, t.run);
  opt(cmd, "--port", t.port, "loopback port");
  opt(cmd, "--process-threads", t.process_threads, "LibTorch threads per process (0 = per core)");
  opt(cmd, "--work-dir", t.work_dir, "where the processes write logs and reports");
  on_run(cmd, c, "sfl bench-transport", &t.run.sfl.seed, [](const auto& c) {
    const TransportBenchResult r = bench_transport(c.options);
    std::cout << r.table().to_string() << r.summary();
    return r.to_json();
  });
}

void register_attack_mi(CLI::App* sfl) {
  auto c = std::make_shared<Command<AttackMiOptions>>();
  auto& a = c->options;
  a.run = cli::default_output("sfl_run.safetensors");
  c->out = cli::default_output("sfl_mi.png");
  auto* cmd = sfl->add_subcommand("attack-mi", "model inversion by the curious server (ResSFL)");
  opt(cmd, "--run", a.run, "saved run from `sfl train` / `train-defended` / `pretrain`");
  add_task_flags(cmd, a.data, a.classes);
  add_mi_attack_flags(cmd, a.attack);
  choice(cmd, "--defense", a.defense.kind, parse_defense, defense_name,
         "perturbation of the smashed data at attack time (laplace, gaussian, dropout, topk)");
  opt(cmd, "--strength", a.defense.strength, "its strength (<= 0: default)");
  opt(cmd, "--png", c->out, "grid of 8 originals above each attack's reconstructions");
  cli::add_svg_option(cmd, c->svg);
  cli::add_data_option(cmd, a.data.dir);
  cli::add_seed_option(cmd, a.seed);
  on_run(cmd, c, "sfl attack-mi", &a.seed, [](const auto& c) {
    const AttackMiResult r = attack_mi(c.options);
    std::cout << r.table().to_string() << r.summary();
    tessera::image::write_png(c.out, r.grid());
    std::cout << "wrote " << c.out << "\n";
    if (!c.svg.empty()) tessera::write_file_atomic(c.svg, r.svg());
    return r.to_json();
  });
}

/// `sfl pretrain` (ResSFL step A) and `sfl train-defended` (with --from: step B).
void register_defended(CLI::App* sfl, const std::string& name, DefendedTrainOptions defaults,
                       const std::string& out, const std::string& help) {
  auto c = std::make_shared<Command<DefendedTrainOptions>>();
  c->options = std::move(defaults);
  c->out = cli::default_output(out);
  auto* cmd = sfl->add_subcommand(name, help);
  add_run_flags(cmd, c->options.run);
  add_task_flags(cmd, c->options.run.data, c->options.classes);
  add_defense_flags(cmd, c->options.defense);
  if (name == "train-defended") {
    cmd->add_option("--from", c->options.from, "expert from `sfl pretrain` (ResSFL step B)");
  }
  opt(cmd, "-o,--out", c->out, "the saved run");
  on_run(cmd, c, "sfl " + name, &c->options.run.sfl.seed, [](const auto& c) {
    const DefendedTrainResult r = train_defended(c.options);
    std::cout << r.to_string();
    save_run(c.out, r.sfl, r.run.run.client_state, r.run.run.server_state);
    return r.to_json();
  });
}

void add_mi_bench_flags(CLI::App* cmd, MiBenchOptions& b) {
  add_run_flags(cmd, b.run);
  add_mi_attack_flags(cmd, b.attack);
  choice(cmd, "--dataset", b.tasks, parse_mi_task_pair, mi_task_pair_name, "fmnist or cifar");
  choice(cmd, "--source-classes", b.source_classes, parse_classes, classes_name, "expert classes");
  choice(cmd, "--target-classes", b.target_classes, parse_classes, classes_name, "disjoint");
  cmd->add_option("--cifar10-dir", b.cifar10_dir, "CIFAR-10 binary files (--dataset cifar)");
  cmd->add_option("--cifar100-dir", b.cifar100_dir, "CIFAR-100 binary files (--dataset cifar)");
  opt(cmd, "--expert-epochs", b.expert_epochs, "ResSFL expert pre-training epochs");
  opt(cmd, "--expert-train-samples", b.expert_train_samples, "its images (0 all, -1 as target)");
  cmd->add_option("--expert", b.expert_path, "a saved `sfl pretrain` run instead of step A");
  opt(cmd, "--defense-bottleneck", b.bottleneck, "its channels (0: from --compression)");
  opt(cmd, "--compression", b.compression, "automatic bottleneck: input floats per smashed one");
  opt(cmd, "--lambda", b.lambda, "hinge weight");
  opt(cmd, "--tau", b.tau, "SSIM threshold (< 0: --tau-fraction x the undefended row's SSIM)");
  opt(cmd, "--tau-fraction", b.tau_fraction, "automatic tau's share of the undefended SSIM");
  choice(cmd, "--expert-decoder", b.expert_decoder, parse_decoder, decoder_name, "expert attacker");
  choice(cmd, "--transfer-decoder", b.transfer_decoder, parse_decoder, decoder_name, "light");
  opt(cmd, "--decoder-pretrain-epochs", b.decoder_pretrain_epochs, "attacker-aware rows");
  cmd->add_flag_callback(
      "--hinge-on-decoder-steps", [&b] { b.hinge_every_batch = false; },
      "SSIM hinge only when the decoder steps (default: every batch)");
  opt(cmd, "--transfer-interval", b.transfer_interval, "its update interval, batches");
  opt(cmd, "--transfer-client-lr", b.transfer_client_lr, "client LR of the transfer");
  choices(cmd, "--defenses", b.defenses, parse_mi_defense, mi_defense_name,
          "kind[/transfer][:strength] rows (ressfl/naive, ressfl/freeze)");
  opt(cmd, "--checkpoints", b.checkpoints, "epochs attacked (tracked rows)")->delimiter(',');
  choice(cmd, "--checkpoint-decoder", b.checkpoint_decoder, parse_decoder, decoder_name,
         "the checkpoints' attack");
}

void register_bench_mi(CLI::App* sfl) {
  auto c = std::make_shared<Command<MiBenchOptions>>();
  c->dir = std::filesystem::path(cli::default_output("mi_bench.png")).parent_path();
  auto* cmd = sfl->add_subcommand("bench-mi", "model-inversion benchmark: defenses vs MI attacks");
  add_mi_bench_flags(cmd, c->options);
  opt(cmd, "--png-dir", c->dir, "where mi_bench.png goes");
  cli::add_svg_option(cmd, c->svg);
  on_run(cmd, c, "sfl bench-mi", &c->options.run.sfl.seed, [](const auto& c) {
    const std::string png = (std::filesystem::path(c.dir) / "mi_bench.png").string();
    cli::check_writable({png});
    const MiBenchResult r = bench_mi(c.options);
    std::cout << r.to_string();
    tessera::image::write_png(png, r.grid());
    std::cout << "wrote " << png << " (" << r.grid_caption() << ")\n";
    if (!c.svg.empty()) tessera::write_file_atomic(c.svg, r.svg());
    return r.to_json();
  });
}

}  // namespace

void register_splitfed(CLI::App& app, tessera::cli::Tour& tour) {
  auto* sfl = app.add_subcommand("sfl", "split federated learning, model extraction and inversion");
  sfl->require_subcommand(1);
  register_train(sfl);
  register_server(sfl);
  register_client(sfl);
  register_attack(sfl);
  register_bench_me(sfl);
  register_bench_transport(sfl);
  register_attack_mi(sfl);
  register_defended(sfl, "pretrain", DefendedTrainOptions::expert_pretraining(),
                    "sfl_expert.safetensors",
                    "ResSFL step A: expert pre-training on a source task");
  register_defended(sfl, "train-defended", DefendedTrainOptions(), "sfl_run.safetensors",
                    "in-process SFL with an MI defense; --from EXPERT is ResSFL's transfer");
  register_bench_mi(sfl);
  tour.add("splitfed", [](const auto& c) { return tour_extraction(tour_options(c)); });
  tour.add("splitfed-mi", [](const auto& c) { return tour_inversion(tour_options(c)); });
  tour.add_references(reference_models());
}
