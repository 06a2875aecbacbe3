// Node server and platform links over net::Server / net::Client.
#include "tessera/metagater/grpc.h"

#include <condition_variable>
#include <mutex>

#include "tessera/core/error.h"
#include "tessera/core/log.h"

namespace tessera::metagater {

void serve_node(const net::ServerOptions& options, std::shared_ptr<const TaskSource> source,
                const std::function<void(int port)>& on_listening) {
  const NodeService service(std::move(source));
  std::mutex mutex;
  std::condition_variable stopped;
  bool stop = false;
  // The platform is this server's one client and may ask it for several nodes' rounds at once
  // (the mutex below runs them in turn), so its concurrent calls are not refused as busy.
  net::ServerOptions server_options = options;
  server_options.one_call_per_client = false;
  net::Server server(server_options, [&](const std::string&, const net::Message& request) {
    if (request.method == "shutdown") {
      std::lock_guard<std::mutex> lock(mutex);
      stop = true;
      stopped.notify_all();
      return control_message("shutdown");
    }
    std::lock_guard<std::mutex> lock(mutex);  // one round at a time per node
    return service.handle(request);
  });
  if (on_listening) on_listening(server.port());
  std::unique_lock<std::mutex> lock(mutex);
  stopped.wait(lock, [&] { return stop; });
  lock.unlock();
  server.shutdown();
}

std::vector<NodeLink> grpc_links(const std::vector<std::string>& addresses,
                                 const std::string& token, int64_t timeout_ms) {
  TESSERA_CHECK(!addresses.empty(), "no node addresses");
  TESSERA_CHECK(timeout_ms > 0, "node timeout must be > 0 ms (got {})", timeout_ms);
  std::vector<NodeLink> links;
  for (const auto& address : addresses) {
    net::ClientOptions o;
    o.address = address;
    o.client_id = kPlatformId;
    o.token = token;
    o.timeout_ms = timeout_ms;
    auto client = std::make_shared<net::Client>(o);
    links.emplace_back([client](const net::Message& request) { return client->call(request); });
  }
  return links;
}

void shutdown_nodes(const std::vector<NodeLink>& links) {
  for (const auto& link : links) {
    try {
      link(control_message("shutdown"));
    } catch (const std::exception& e) {
      log::warn("shutdown: {}", e.what());
    }
  }
}

}  // namespace tessera::metagater
