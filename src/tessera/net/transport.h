// gRPC transport of the federated runtimes: a server that authenticates every call by a per-client
// token, enforces a maximum message size, rate-limits and logs refusals, serves one call per client
// at a time and turns handler errors into clear refusals; and a client with per-call deadlines.
// Optional TLS on both sides; plain text only on loopback unless asked for. The generic
// Call(method, meta, tensors) keeps the wire format independent of the system that uses it.
#pragma once

#include <cstdint>
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

/// True when the host of `address` ("host:port") is a loopback name: 127.x.y.z, [::1], localhost.
bool is_loopback_address(const std::string& address);

/// Throws tessera::Error unless `address` is loopback, `tls` is on or `insecure` is set: tokens
/// must not travel in clear text over a network by accident. `what` names the side and flag.
void check_plaintext_allowed(const std::string& address, bool tls, bool insecure,
                             const std::string& what);

struct ServerOptions {
  std::string address = "127.0.0.1:50051";  ///< host:port; port 0 picks a free port
  int64_t max_message_bytes = kDefaultMaxMessageBytes;
  /// client_id -> secret token. A call whose (client_id, token) is not in the map is refused
  /// with UNAUTHENTICATED before any handler runs. Must not be empty.
  std::map<std::string, std::string> tokens;
  /// TLS: the server's certificate chain and private key, PEM text. Both empty = an insecure
  /// channel (tokens then travel in clear text); both set = TLS only.
  std::string tls_cert_chain;
  std::string tls_private_key;
  /// Serve plain text on a non-loopback address (tokens then travel in clear). Off: refused.
  bool insecure = false;
  /// Failed authentications per second allowed from one peer host (a token bucket holding
  /// `auth_failure_burst`); beyond it every call from that host is refused with UNAVAILABLE
  /// before its token is looked at, so guessing runs at this rate at most.
  double auth_failures_per_s = 5.0;
  int64_t auth_failure_burst = 20;
  /// Refusals written to the log per second at most; the others are counted and the count is
  /// logged with the next line.
  int64_t refusal_logs_per_s = 5;
  /// A second call from a client id while one of its calls is being handled is refused with
  /// UNAVAILABLE (transient: the client retries), so a client holds at most one server thread.
  bool one_call_per_client = true;
};

/// What the server knows of the call being handled.
struct CallContext {
  /// The caller's deadline on the tessera::now_us() clock; 0 = none.
  int64_t deadline_us = 0;
  /// True once the caller has gone (deadline passed, cancelled, disconnected). A handler that
  /// blocks polls it and returns, so an abandoned call does not keep a thread.
  std::function<bool()> cancelled = [] { return false; };
};

/// Runs for every authenticated call. Throwing tessera::Error refuses the call (the client sees
/// the message); the server keeps serving.
using Handler = std::function<Message(const std::string& client_id, const Message& request)>;
/// The same with the call's deadline and cancellation (for handlers that block).
using ContextHandler = std::function<Message(const std::string& client_id, const Message& request,
                                             const CallContext& call)>;

/// A running gRPC server. Calls are served on gRPC's thread pool, so the handler must be
/// thread-safe; it may block (e.g. waiting for a client's turn).
class Server {
 public:
  Server(const ServerOptions& options, Handler handler);
  Server(const ServerOptions& options, ContextHandler handler);
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
