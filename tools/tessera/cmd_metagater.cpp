// `tessera metagater ...`: bench (MetaGater and its baselines trained by federated rounds, then
// adapted in one step on held-out tasks: accuracy, active channels, MACs, latency),
// bench-transport (in process against node processes over gRPC) and node (one node's gRPC
// server). The work is in tessera/metagater/; this file binds flags, prints and writes reports.
#include <iostream>
#include <memory>

#include "cli.h"
#include "tessera/core/fs.h"
#include "tessera/core/log.h"
#include "tessera/core/report.h"
#include "tessera/metagater/bench.h"
#include "tessera/metagater/bench_transport.h"
#include "tessera/metagater/grpc.h"

namespace {

namespace cli = tessera::cli;
namespace mg = tessera::metagater;

void add_net_flags(CLI::App* cmd, mg::GatedNetOptions& n) {
  cmd->add_option("--width", n.width, "channels of every conv layer")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--layers", n.layers, "conv blocks (conv-BN-ReLU-maxpool)")
      ->capture_default_str()
      ->check(CLI::Range(1, 8));
  cmd->add_option("--gate-hidden", n.gate_hidden, "hidden units of each gate MLP")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  cmd->add_option("--gate-bias-init", n.gate_bias_init,
                  "initial gate logit bias (channels start on; RECONSTRUCTED)")
      ->capture_default_str();
}

void add_task_flags(CLI::App* cmd, mg::TaskOptions& t) {
  cmd->add_option("--ways", t.ways, "N classes per task")->capture_default_str();
  cmd->add_option("--shots", t.shots, "K support images per class")->capture_default_str();
  cmd->add_option("--queries", t.queries, "query images per class")->capture_default_str();
}

void add_loss_flags(CLI::App* cmd, mg::LossOptions& l) {
  cmd->add_option("--sparsity-weight", l.sparsity_weight,
                  "lambda of the sparsity regularizer (RECONSTRUCTED)")
      ->capture_default_str();
  cmd->add_option("--target-rate", l.target_rate, "target fraction of active channels per layer")
      ->capture_default_str();
}

void add_adapt_flags(CLI::App* cmd, mg::AdaptOptions& a) {
  cmd->add_option("--inner-lr", a.backbone_lr, "alpha: inner (stage 1, backbone) learning rate")
      ->capture_default_str();
  cmd->add_option("--gate-inner-lr", a.gate_lr, "beta: inner (stage 2, gates) learning rate")
      ->capture_default_str();
  cmd->add_option("--adapt-steps", a.steps, "adaptation steps (1: one-step adaptation)")
      ->capture_default_str();
  cmd->add_option("--two-stage", a.two_stage,
                  "backbone first, then gates (true/false; false: one joint step)")
      ->capture_default_str();
}

void add_fed_flags(CLI::App* cmd, mg::FedOptions& f) {
  cmd->add_option("--rounds", f.rounds, "federated rounds")->capture_default_str();
  cmd->add_option("--nodes-per-round", f.nodes_per_round, "nodes drawn each round")
      ->capture_default_str();
  cmd->add_option("--local-steps", f.local.steps, "local (meta-)steps per node and round")
      ->capture_default_str();
  cmd->add_option("--tasks-per-step", f.local.tasks_per_step, "tasks per local step")
      ->capture_default_str();
  cmd->add_option("--meta-optimizer", f.local.optimizer, "local optimizer: sgd or adam")
      ->capture_default_str()
      ->check(CLI::IsMember({"sgd", "adam"}));
  cmd->add_option("--meta-lr", f.local.lr, "outer (meta) learning rate")->capture_default_str();
  cmd->add_flag("!--first-order", f.local.second_order,
                "first-order meta-gradient (FOMAML) instead of second order");
}

void add_bench_flags(CLI::App* cmd, mg::MetagaterBenchOptions& o) {
  cmd->add_option("--methods", o.methods,
                  "metagater, per-fedavg, fedavg-ft, fedavg-ft-narrow, gated-fedavg")
      ->capture_default_str()
      ->delimiter(',')
      ->check(CLI::IsMember(
          {"metagater", "per-fedavg", "fedavg-ft", "fedavg-ft-narrow", "gated-fedavg"}));
  add_net_flags(cmd, o.net);
  add_task_flags(cmd, o.task);
  add_loss_flags(cmd, o.loss);
  add_adapt_flags(cmd, o.adapt);
  add_fed_flags(cmd, o.fed);
  cmd->add_option("--finetune-steps", o.finetune_steps, "FedAvg + fine-tuning: steps at a node")
      ->capture_default_str();
  cmd->add_option("--train-nodes", o.train_nodes, "meta-training nodes")->capture_default_str();
  cmd->add_option("--classes-per-node", o.classes_per_node, "classes each node holds (of 10)")
      ->capture_default_str();
  cmd->add_option("--test-nodes", o.test_nodes, "held-out nodes")->capture_default_str();
  cmd->add_option("--train-rotations", o.train_rotations, "quarter turns of training nodes")
      ->capture_default_str()
      ->delimiter(',');
  cmd->add_option("--test-rotations", o.test_rotations, "quarter turns of held-out nodes")
      ->capture_default_str()
      ->delimiter(',');
  cmd->add_option("--test-tasks", o.test_tasks, "held-out tasks evaluated")->capture_default_str();
  cmd->add_option("--latency-images", o.latency_images, "batch-1 forwards timed per method")
      ->capture_default_str();
  cmd->add_option("--latency-reps", o.latency_reps, "timed calls per image (the fastest counts)")
      ->capture_default_str();
  cmd->add_option("--thresholds", o.thresholds, "MetaGater gate thresholds swept")
      ->capture_default_str()
      ->delimiter(',');
  cmd->add_flag("--synthetic", o.synthetic, "synthetic images instead of Fashion-MNIST");
  cmd->add_flag("!--no-cache", o.cache, "train every method again (do not use the model cache)");
  cli::add_data_option(cmd, o.data_dir);
  cli::add_seed_option(cmd, o.seed);
}

struct BenchCommand {
  mg::MetagaterBenchOptions options;
  std::string json, svg;
};

void register_bench(CLI::App* group) {
  auto c = std::make_shared<BenchCommand>();
  auto* cmd = group->add_subcommand(
      "bench",
      "MetaGater and its baselines on held-out few-shot tasks: accuracy after one-step "
      "adaptation, active channels, MACs, latency");
  add_bench_flags(cmd, c->options);
  cli::add_json_option(cmd, c->json);
  cli::add_svg_option(cmd, c->svg)
      ->description(
          "write accuracy and latency against active "
          "channels (threshold sweep) as an SVG");
  cmd->callback([c] {
    cli::check_writable({c->json, c->svg});
    c->options.validate();
    tessera::Report report("metagater bench", c->options.to_json(), c->options.seed);
    const auto result = mg::run_metagater_bench(c->options);
    std::cout << result.to_string();
    if (!c->svg.empty()) tessera::write_file_atomic(c->svg, result.svg());
    report.results() = result.to_json();
    report.write(c->json);
  });
}

struct TransportCommand {
  mg::TransportBenchOptions options;
  std::string json;
};

void register_bench_transport(CLI::App* group) {
  auto c = std::make_shared<TransportCommand>();
  c->options.bench.methods = {"metagater"};
  auto* cmd =
      group->add_subcommand("bench-transport",
                            "the same federated run in process and as node processes over gRPC: "
                            "accuracy after adaptation and wall time side by side");
  add_bench_flags(cmd, c->options.bench);
  auto& o = c->options;
  cmd->add_option("--method", o.method, "the method trained")->capture_default_str();
  cmd->add_option("--port", o.port, "node i listens on 127.0.0.1:(port + i)")
      ->capture_default_str();
  cmd->add_option("--process-threads", o.process_threads, "LibTorch threads per node process")
      ->capture_default_str();
  cmd->add_option("--timeout-ms", o.timeout_ms, "deadline of one node call (then it is dropped)")
      ->capture_default_str();
  cmd->add_option("--dead-node", o.dead_node, "never start this node (-1: all start)")
      ->capture_default_str();
  cmd->add_option("--work-dir", o.work_dir, "the node processes' logs")->capture_default_str();
  cli::add_json_option(cmd, c->json);
  cmd->callback([c] {
    cli::check_writable({c->json});
    c->options.validate();
    tessera::Report report("metagater bench-transport", c->options.to_json(),
                           c->options.bench.seed);
    const auto result = mg::bench_transport(c->options);
    std::cout << result.table().to_string() << result.summary();
    report.results() = result.to_json();
    report.write(c->json);
  });
}

struct NodeCommand {
  mg::MetagaterBenchOptions data;  ///< only the data fields
  std::string listen = "127.0.0.1:50631", token;
};

void register_node(CLI::App* group) {
  auto c = std::make_shared<NodeCommand>();
  auto* cmd = group->add_subcommand(
      "node", "serve one federated node over gRPC until the platform sends shutdown");
  cmd->add_option("--listen", c->listen, "host:port to serve on")->capture_default_str();
  cmd->add_option("--token", c->token, "the platform's secret token")->required();
  cmd->add_flag("--synthetic", c->data.synthetic, "synthetic images instead of Fashion-MNIST");
  cmd->add_option("--synthetic-images", c->data.synthetic_images, "synthetic images per split")
      ->capture_default_str();
  cmd->add_option("--image-size", c->data.net.image_size, "synthetic image size")
      ->capture_default_str();
  cli::add_data_option(cmd, c->data.data_dir);
  cli::add_seed_option(cmd, c->data.seed);
  cmd->callback([c] {
    auto source = std::make_shared<mg::TaskSource>(mg::bench_data(c->data, "train"));
    tessera::net::ServerOptions server;
    server.address = c->listen;
    server.tokens = {{mg::kPlatformId, c->token}};
    mg::serve_node(server, source, [&](int port) {
      tessera::log::info("metagater node listening on port {}", port);
    });
  });
}

}  // namespace

void register_metagater(CLI::App& app, tessera::cli::Tour& tour) {
  auto* group = app.add_subcommand(
      "metagater", "MetaGater: federated meta-learning of a backbone and its channel gates");
  group->require_subcommand(1);
  register_bench(group);
  register_bench_transport(group);
  register_node(group);
  tour.add("metagater", &mg::tour);
  tour.add_references(mg::reference_models());
}
