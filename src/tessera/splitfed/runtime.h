// Running an SFL training: in-process (the default: a SplitServer and K client threads talking
// through LocalLinks) or over gRPC (a server process and client processes). Both run the same
// SplitServer::handle() and SplitClient code, so the same seed gives the same model.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "tessera/data/dataset.h"
#include "tessera/net/transport.h"
#include "tessera/splitfed/client.h"
#include "tessera/splitfed/protocol.h"

namespace tessera::splitfed {

struct RunResult {
  std::vector<EpochRecord> history;
  double final_test_accuracy = -1.0;
  double seconds = 0.0;
  State client_state;  ///< averaged client side after the last epoch
  State server_state;
  std::vector<ClientReport> clients;  ///< in-process only
  nlohmann::json to_json() const;     ///< history and summary (no tensors)
};

/// In-process SFL: the server on this thread's objects, one thread per client.
/// `strategies` maps a client index to a non-honest strategy (attacker, defense).
RunResult run_in_process(const SflOptions& options, const data::Dataset& train_set,
                         const data::Dataset* test_set, ServerSettings settings = {},
                         const std::map<int64_t, std::shared_ptr<ClientStrategy>>& strategies = {});

/// gRPC server: serves `options` until every epoch is done, then waits until every client has
/// been told the run is over, at most `linger_ms` (a client that died is not waited for longer).
/// `on_listening(port)` runs once the port is bound.
RunResult serve_grpc(const SflOptions& options, ServerSettings settings,
                     const net::ServerOptions& net_options, int64_t linger_ms = 2000,
                     const std::function<void(int port)>& on_listening = {});

/// The server's per-client secrets from `path`, a file of "client_id token" lines: every client
/// id of the run exactly once, no other id, and no two clients with the same token (a shared
/// token would let one client act as another). Throws tessera::Error naming the problem.
std::map<std::string, std::string> client_tokens(const std::string& path,
                                                 const SflOptions& options);

/// A client's secret from `path`: a file holding either the token alone or "client_id token"
/// lines (the server's file: the line of `client_id` is used). Throws tessera::Error if absent.
std::string read_client_token(const std::string& path, const std::string& client_id);

/// gRPC client process: joins `net_options.address` as `net_options.client_id`.
ClientReport run_grpc_client(const net::ClientOptions& net_options, const data::Dataset& train_set,
                             std::shared_ptr<ClientStrategy> strategy = nullptr,
                             int64_t stop_after_steps = 0, int64_t retry_ms = 60000);

/// Builds the full model f_s(f_c(.)) pieces from saved states (for attacks after training).
std::pair<ClientSide, ServerSide> restore_split(const SflOptions& options, const State& client,
                                                const State& server);

/// Saves / loads a trained SFL model (client and server states plus options) as safetensors
/// with metadata "tessera.sfl" = options JSON. Atomic write.
void save_run(const std::string& path, const SflOptions& options, const State& client,
              const State& server);
struct SavedRun {
  SflOptions options;
  State client;
  State server;
};
SavedRun load_run(const std::string& path);

}  // namespace tessera::splitfed
