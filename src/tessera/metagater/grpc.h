// MetaGater over the federated gRPC transport (net/transport.h): a node process serves
// NodeService::handle until the platform says "shutdown"; the platform reaches its nodes through
// gRPC clients with a per-call deadline, so a node that fails or is too slow is dropped from the
// round (run_federated) instead of being waited for.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tessera/metagater/federated.h"
#include "tessera/net/transport.h"

namespace tessera::metagater {

/// The client id the platform authenticates as.
constexpr const char* kPlatformId = "platform";

/// Serves one node on `options.address` until a "shutdown" call; `on_listening(port)` runs
/// once the port is bound.
void serve_node(const net::ServerOptions& options, std::shared_ptr<const TaskSource> source,
                const std::function<void(int port)>& on_listening = {});

/// One gRPC link per address ("host:port"), authenticating as kPlatformId with `token`; each
/// call has a deadline of timeout_ms.
std::vector<NodeLink> grpc_links(const std::vector<std::string>& addresses,
                                 const std::string& token, int64_t timeout_ms);

/// Asks every node to stop (unreachable nodes are skipped).
void shutdown_nodes(const std::vector<NodeLink>& links);

}  // namespace tessera::metagater
