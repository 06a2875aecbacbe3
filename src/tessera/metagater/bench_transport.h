// `metagater bench-transport`: the same federated training in process and as one platform plus
// one node process per training node over gRPC on loopback; accuracy after adaptation on the same
// held-out tasks and wall time side by side. A node can be left unstarted to show that it is
// dropped from every round on both sides.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/table.h"
#include "tessera/metagater/bench.h"

namespace tessera::metagater {

struct TransportBenchOptions {
  MetagaterBenchOptions bench;  ///< the run: net, tasks, nodes, rounds, data, seed
  std::string method = "metagater";
  int port = 50631;  ///< node i listens on 127.0.0.1:(port + i)
  /// LibTorch threads of each node process; the in-process run uses the caller's.
  int process_threads = 1;
  int64_t timeout_ms = 120000;  ///< deadline of one local_update call
  int64_t dead_node = -1;       ///< >= 0: this node is never started (every call to it fails)
  std::string work_dir = "tessera-out/metagater-transport";  ///< the node processes' logs
  std::string executable = "/proc/self/exe";  ///< the tessera binary (`metagater node`)
  std::string token = "tessera-metagater";

  void validate() const;
  nlohmann::json to_json() const;
};

struct TransportBenchResult {
  int64_t nodes = 0;
  double in_process_accuracy = 0.0, in_process_ci95 = 0.0;
  double grpc_accuracy = 0.0, grpc_ci95 = 0.0;
  double in_process_seconds = 0.0;  ///< the federated rounds
  double grpc_seconds = 0.0;        ///< the federated rounds (nodes already listening)
  double grpc_total_seconds = 0.0;  ///< from spawning the nodes until they have exited
  double max_param_difference = 0.0;
  int64_t in_process_dropped = 0, grpc_dropped = 0;

  Table table() const;
  std::string summary() const;  ///< accuracy difference, wall ratio, drops
  nlohmann::json to_json() const;
};

/// The argv of node process `node`.
std::vector<std::string> node_command(const TransportBenchOptions& options, int64_t node);

/// Runs the in-process side, then the node processes; throws tessera::Error when a node process
/// does not come up or exits with an error.
TransportBenchResult bench_transport(const TransportBenchOptions& options);

}  // namespace tessera::metagater
