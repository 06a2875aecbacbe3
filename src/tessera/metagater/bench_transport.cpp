// The transport benchmark: an in-process federated run, then the same run with one node process
// per training node on loopback (see bench_transport.h).
#include "tessera/metagater/bench_transport.h"

#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <thread>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/seed.h"
#include "tessera/core/timer.h"
#include "tessera/metagater/grpc.h"
#include "tessera/net/process.h"

namespace tessera::metagater {

namespace {

std::string node_address(const TransportBenchOptions& o, int64_t node) {
  return fmt::format("127.0.0.1:{}", o.port + static_cast<int>(node));
}

// Pings each link until it answers (at most `seconds`): a node that is not listening yet would
// otherwise be dropped from the first round. The dead node is not waited for.
void wait_until_listening(const std::vector<NodeLink>& links, int64_t dead_node, double seconds) {
  for (size_t i = 0; i < links.size(); ++i) {
    if (static_cast<int64_t>(i) == dead_node) continue;
    const Timer timer;
    for (;;) {
      try {
        links[i](control_message("ping"));
        break;
      } catch (const std::exception& e) {
        TESSERA_CHECK(timer.elapsed_s() < seconds, "node {} did not come up: {}", i, e.what());
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
      }
    }
  }
}

}  // namespace

void TransportBenchOptions::validate() const {
  bench.validate();
  parse_method(method);
  TESSERA_CHECK(port >= 1 && port + bench.train_nodes <= 65535, "--port {} out of range", port);
  TESSERA_CHECK(process_threads >= 1, "--process-threads must be >= 1 (got {})", process_threads);
  TESSERA_CHECK(timeout_ms > 0, "--timeout-ms must be > 0 (got {})", timeout_ms);
  TESSERA_CHECK(dead_node < bench.train_nodes, "--dead-node {} is not a node (0..{})", dead_node,
                bench.train_nodes - 1);
  TESSERA_CHECK(!work_dir.empty(), "--work-dir must not be empty");
}

nlohmann::json TransportBenchOptions::to_json() const {
  return {{"bench", bench.to_json()},
          {"method", method},
          {"port", port},
          {"process_threads", process_threads},
          {"timeout_ms", timeout_ms},
          {"dead_node", dead_node},
          {"work_dir", work_dir}};
}

std::vector<std::string> node_command(const TransportBenchOptions& o, int64_t node) {
  std::vector<std::string> argv = {"tessera",
                                   "--threads",
                                   std::to_string(o.process_threads),
                                   "metagater",
                                   "node",
                                   "--listen",
                                   node_address(o, node),
                                   "--token",
                                   o.token,
                                   "--data",
                                   o.bench.data_dir,
                                   "--seed",
                                   std::to_string(o.bench.seed)};
  if (o.bench.synthetic) {
    for (const auto& a : {std::string("--synthetic"), std::string("--synthetic-images"),
                          std::to_string(o.bench.synthetic_images), std::string("--image-size"),
                          std::to_string(o.bench.net.image_size)})
      argv.push_back(a);
  }
  return argv;
}

Table TransportBenchResult::table() const {
  Table t({"transport", "nodes", "accuracy %", "95% CI", "rounds wall s", "dropped node-rounds"});
  t.add_row({"in-process", std::to_string(nodes), percent(in_process_accuracy),
             "+-" + percent(in_process_ci95), fmt::format("{:.1f}", in_process_seconds),
             std::to_string(in_process_dropped)});
  t.add_row({"gRPC (processes)", std::to_string(nodes), percent(grpc_accuracy),
             "+-" + percent(grpc_ci95), fmt::format("{:.1f}", grpc_seconds),
             std::to_string(grpc_dropped)});
  return t;
}

std::string TransportBenchResult::summary() const {
  return fmt::format(
      "accuracy difference {:.2f} points; largest parameter difference {:.2e}; wall ratio "
      "gRPC / in-process {:.2f} (rounds only; {:.1f} s with process start and data loading)\n",
      100.0 * (grpc_accuracy - in_process_accuracy), max_param_difference,
      grpc_seconds / std::max(in_process_seconds, 1e-9), grpc_total_seconds);
}

nlohmann::json TransportBenchResult::to_json() const {
  return {{"nodes", nodes},
          {"in_process_accuracy", in_process_accuracy},
          {"in_process_ci95", in_process_ci95},
          {"grpc_accuracy", grpc_accuracy},
          {"grpc_ci95", grpc_ci95},
          {"in_process_seconds", in_process_seconds},
          {"grpc_seconds", grpc_seconds},
          {"grpc_total_seconds", grpc_total_seconds},
          {"wall_ratio", grpc_seconds / std::max(in_process_seconds, 1e-9)},
          {"max_param_difference", max_param_difference},
          {"in_process_dropped", in_process_dropped},
          {"grpc_dropped", grpc_dropped}};
}

TransportBenchResult bench_transport(const TransportBenchOptions& o) {
  o.validate();
  const Method method = parse_method(o.method);
  const JobTemplate job = method_job(method, o.bench);
  const FedOptions fed = method_fed(method, o.bench);
  const auto nodes = train_nodes(o.bench);
  seed_everything(o.bench.seed);
  const Params initial = GatedNet(job.net)->params().clone();
  TransportBenchResult r;
  r.nodes = static_cast<int64_t>(nodes.size());

  auto links =
      in_process_links(std::make_shared<TaskSource>(bench_data(o.bench, "train")), nodes.size());
  if (o.dead_node >= 0) {
    links[static_cast<size_t>(o.dead_node)] = [](const net::Message&) -> net::Message {
      throw Error("node not started");
    };
  }
  log::info("metagater: {} rounds in process", fed.rounds);
  const FedRunResult local = run_federated(job, nodes, links, initial, fed);

  std::filesystem::create_directories(o.work_dir);
  const Timer total;
  std::vector<pid_t> pids;
  for (int64_t i = 0; i < r.nodes; ++i) {
    if (i == o.dead_node) continue;
    pids.push_back(net::spawn_process(o.executable, node_command(o, i),
                                      fmt::format("{}/node{}.log", o.work_dir, i)));
  }
  std::vector<std::string> addresses;
  for (int64_t i = 0; i < r.nodes; ++i) addresses.push_back(node_address(o, i));
  const auto remote = grpc_links(addresses, o.token, o.timeout_ms);
  FedRunResult over_grpc;
  try {
    wait_until_listening(grpc_links(addresses, o.token, 1000), o.dead_node, 120.0);
    FedOptions parallel = fed;
    parallel.parallel = true;
    log::info("metagater: {} rounds over gRPC ({} node processes)", fed.rounds, pids.size());
    over_grpc = run_federated(job, nodes, remote, initial, parallel);
  } catch (...) {
    for (pid_t pid : pids) net::stop_process(pid);
    throw;
  }
  shutdown_nodes(remote);
  for (size_t k = 0; k < pids.size(); ++k) {
    const int rc = net::wait_process(pids[k]);
    TESSERA_CHECK(rc == 0, "a node process exited with {} (logs in {})", rc, o.work_dir);
  }
  r.grpc_total_seconds = total.elapsed_s();

  const TaskSource test_source(bench_data(o.bench, "test"));
  const auto tasks = make_test_tasks(o.bench, test_source);
  const GatedNet net(job.net);
  const AdaptOptions adapt = method_test_adapt(method, o.bench);
  const MethodEval a = evaluate_method(*net, local.params, tasks, adapt, o.bench.loss, 0.0);
  const MethodEval b = evaluate_method(*net, over_grpc.params, tasks, adapt, o.bench.loss, 0.0);
  r.in_process_accuracy = a.accuracy;
  r.in_process_ci95 = a.ci95;
  r.grpc_accuracy = b.accuracy;
  r.grpc_ci95 = b.ci95;
  r.in_process_seconds = local.seconds;
  r.grpc_seconds = over_grpc.seconds;
  r.in_process_dropped = local.dropped;
  r.grpc_dropped = over_grpc.dropped;
  const auto x = local.params.all(), y = over_grpc.params.all();
  for (size_t i = 0; i < x.size(); ++i)
    r.max_param_difference =
        std::max(r.max_param_difference, (x[i] - y[i]).abs().max().item<double>());
  return r;
}

}  // namespace tessera::metagater
