// gRPC transport of the federated runtimes: a server that authenticates every call by a per-client
// token, enforces a maximum message size and turns handler errors into clear refusals; and a
// client with per-call deadlines. Optional TLS on both sides. The generic Call(method, meta,
// tensors) keeps the wire format independent of the system that uses it (splitfed, metagater).
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "tessera/core/error.h"
#include "tessera/net/message.h"

namespace tessera::net {

/// Default limit on one serialized message, both ways (64 MiB).
constexpr int64_t kDefaultMaxMessageBytes = int64_t{64} << 20;

/// An RPC that failed: refused by the server (bad token, bad tensor, handler error), too large,
/// timed out or unreachable. `code` is the gRPC status code.
class RpcError : public Error {
 public:
  RpcError(int code, const std::string& message) : Error(message), code_(code) {}
  int code() const { return code_; }
  /// Deadline exceeded or server unavailable: the call may succeed later.
  bool transient() const;
  /// The server refused the token.
  bool unauthenticated() const;

 private:
  int code_;
};

struct ServerOptions {
  std::string address = "0.0.0.0:50051";  ///< host:port; port 0 picks a free port
  int64_t max_message_bytes = kDefaultMaxMessageBytes;
  /// client_id -> secret token. A call whose (client_id, token) is not in the map is refused
  /// with UNAUTHENTICATED before any handler runs. Must not be empty.
  std::map<std::string, std::string> tokens;
  /// TLS: the server's certificate chain and private key, PEM text. Both empty = an insecure
  /// channel (tokens then travel in clear text); both set = TLS only.
  std::string tls_cert_chain;
  std::string tls_private_key;
};

/// Runs for every authenticated call. Throwing tessera::Error refuses the call (the client sees
/// the message); the server keeps serving.
using Handler = std::function<Message(const std::string& client_id, const Message& request)>;

/// A running gRPC server. Calls are served on gRPC's thread pool, so the handler must be
/// thread-safe; it may block (e.g. waiting for a client's turn).
class Server {
 public:
  Server(const ServerOptions& options, Handler handler);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  /// The port actually bound (useful with port 0).
  int port() const;
  /// Stops accepting calls and waits up to `deadline_ms` for calls in flight.
  void shutdown(int64_t deadline_ms = 2000);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct ClientOptions {
  std::string address;  ///< host:port of the server
  std::string client_id;
  std::string token;
  int64_t max_message_bytes = kDefaultMaxMessageBytes;
  int64_t timeout_ms = 60000;  ///< deadline of one call
  /// TLS: connect over TLS, verifying the server's certificate against `tls_root_certs` (PEM
  /// text; empty = the system's roots). Off = an insecure channel.
  bool tls = false;
  std::string tls_root_certs;
  /// Host name the server certificate must name, when it differs from the address's host.
  std::string tls_server_name;
};

class Client {
 public:
  explicit Client(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  /// Sends request and returns the reply. timeout_ms <= 0 uses options.timeout_ms.
  /// Throws RpcError on refusal, deadline or transport failure.
  Message call(const Message& request, int64_t timeout_ms = 0);
  const ClientOptions& options() const { return options_; }

 private:
  struct Impl;
  ClientOptions options_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::net
