// `sfl bench-transport`: the same SFL run in process and as one server plus K client processes
// over gRPC on loopback (research/sfl.md 4), accuracy and wall time side by side.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/core/table.h"
#include "tessera/splitfed/bench_common.h"

namespace tessera::splitfed {

struct TransportBenchOptions {
  SflRunOptions run;
  int port = 50517;  ///< loopback port of the gRPC server
  /// LibTorch threads of each gRPC process (0 = one per core). K + 1 processes that each start
  /// one thread per core oversubscribe a small machine; the in-process run uses the caller's.
  int process_threads = 1;
  std::string work_dir = "sfl_bench_transport";  ///< the processes' logs, reports and checkpoint
  /// The tessera binary whose `sfl server` and `sfl client` form the gRPC side.
  std::string executable = "/proc/self/exe";

  void validate() const;
  nlohmann::json to_json() const;
};

struct TransportBenchResult {
  int64_t n_clients = 0;
  int process_threads = 1;
  int64_t torch_threads = 1;  ///< of the in-process run
  double in_process_accuracy = 0.0;
  double in_process_seconds = 0.0;           ///< data loading and training
  double in_process_training_seconds = 0.0;  ///< training only
  double grpc_accuracy = 0.0;
  double grpc_seconds = 0.0;         ///< from spawning the processes until the last one exits
  double grpc_server_seconds = 0.0;  ///< the server's run from start to exit

  /// transport, processes, torch threads, test acc %, training s, wall s, wall ratio.
  Table table() const;
  /// "accuracy difference ... points; wall ratio ..." with what each time covers.
  std::string summary() const;
  nlohmann::json to_json() const;
};

/// The argv of the gRPC server process for the run `sfl` (its cut resolved).
std::vector<std::string> transport_server_command(const TransportBenchOptions& options,
                                                  const SflOptions& sfl);
/// The argv of client process `client`.
std::vector<std::string> transport_client_command(const TransportBenchOptions& options,
                                                  const SflOptions& sfl, int64_t client);

/// Runs the in-process side, then the processes (logs in work_dir); throws tessera::Error when a
/// process fails.
TransportBenchResult bench_transport(const TransportBenchOptions& options);

}  // namespace tessera::splitfed
