// gRPC server and client of the federated transport (see transport.h).
#include "tessera/net/transport.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <set>

#include "tessera/core/json.h"
#include "tessera/core/log.h"
#include "tessera/core/timer.h"
#include "tessera/net/federated.grpc.pb.h"

namespace tessera::net {
namespace {

const char* status_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    default:
      return "ERROR";
  }
}

nlohmann::json parse_meta(const std::string& text, const std::string& what) {
  if (text.empty()) return nlohmann::json::object();
  nlohmann::json meta = parse_json(text, what + ": metadata");
  TESSERA_CHECK(!meta.is_discarded() && meta.is_object(), "{}: metadata is not a JSON object",
                what);
  return meta;
}

void encode_tensors(const Message& message,
                    google::protobuf::RepeatedPtrField<proto::Tensor>* out) {
  for (const auto& [name, tensor] : message.tensors) {
    proto::Tensor* t = out->Add();
    t->set_name(name);
    t->set_dtype(dtype_name(tensor.scalar_type()));
    for (const int64_t d : tensor.sizes()) t->add_shape(d);
    t->set_data(tensor_bytes(tensor));
  }
}

void decode_tensors(const google::protobuf::RepeatedPtrField<proto::Tensor>& in,
                    const std::string& what, Message& message) {
  for (const proto::Tensor& t : in) {
    TESSERA_CHECK(!message.contains(t.name()), "{}: tensor '{}' appears twice", what, t.name());
    const std::vector<int64_t> shape(t.shape().begin(), t.shape().end());
    message.tensors.emplace_back(t.name(), tensor_from_bytes(t.dtype(), shape, t.data(),
                                                             what + " tensor '" + t.name() + "'"));
  }
}

/// Log lines for refusals, at most `per_s` a second; the rest are counted and the count goes out
/// with the next line (or when the server shuts down), so a flood of bad calls is visible without
/// flooding the log.
class RefusalLog {
 public:
  explicit RefusalLog(int64_t per_s) : per_s_(per_s) {}
  RefusalLog(const RefusalLog&) = delete;
  RefusalLog& operator=(const RefusalLog&) = delete;
  // A count no later line carried out is written when the server goes.
  ~RefusalLog() {
    if (suppressed_ > 0) log::warn("net server: {} more refusals not logged", suppressed_);
  }
  void add(const std::string& line) {
    std::lock_guard<std::mutex> lock(mutex_);
    const int64_t second = now_us() / 1000000;
    if (second != second_) {
      second_ = second;
      written_ = 0;
    }
    if (written_ >= per_s_) {
      ++suppressed_;
      return;
    }
    ++written_;
    if (suppressed_ > 0) {
      log::warn("net server: refused {} (and {} more refusals not logged)", line, suppressed_);
      suppressed_ = 0;
    } else {
      log::warn("net server: refused {}", line);
    }
  }

 private:
  std::mutex mutex_;
  int64_t per_s_;
  int64_t second_ = -1;
  int64_t written_ = 0;
  int64_t suppressed_ = 0;
};

/// Token buckets of failed authentications per peer host.
class AuthLimiter {
 public:
  AuthLimiter(double per_s, int64_t burst) : per_s_(per_s), burst_(static_cast<double>(burst)) {}
  /// False when `host` has no failures left to spend right now.
  bool allowed(const std::string& host) {
    std::lock_guard<std::mutex> lock(mutex_);
    return refill_locked(host).tokens >= 1.0;
  }
  void failed(const std::string& host) {
    std::lock_guard<std::mutex> lock(mutex_);
    Bucket& b = refill_locked(host);
    b.tokens = std::max(0.0, b.tokens - 1.0);
  }

 private:
  struct Bucket {
    double tokens = 0.0;
    int64_t t_us = 0;
  };
  Bucket& refill_locked(const std::string& host) {
    const int64_t t = now_us();
    auto [it, fresh] = buckets_.try_emplace(host, Bucket{burst_, t});
    Bucket& b = it->second;
    if (!fresh) {
      b.tokens = std::min(burst_, b.tokens + per_s_ * static_cast<double>(t - b.t_us) * 1e-6);
      b.t_us = t;
    }
    return b;
  }
  std::mutex mutex_;
  double per_s_;
  double burst_;
  std::map<std::string, Bucket> buckets_;
};

/// "ipv4:127.0.0.1:5555" -> "ipv4:127.0.0.1": connections of one host share a bucket.
std::string peer_host(const std::string& peer) { return peer.substr(0, peer.rfind(':')); }

class Service final : public proto::Federated::Service {
 public:
  Service(const ServerOptions& options, ContextHandler handler)
      : tokens_(options.tokens),
        one_call_per_client_(options.one_call_per_client),
        handler_(std::move(handler)),
        log_(options.refusal_logs_per_s),
        limiter_(options.auth_failures_per_s, options.auth_failure_burst) {}

  grpc::Status Call(grpc::ServerContext* context, const proto::Request* request,
                    proto::Response* response) override {
    const std::string& id = request->client_id();
    const std::string host = peer_host(context->peer());
    if (!limiter_.allowed(host)) {
      return refuse(grpc::StatusCode::UNAVAILABLE, id, host,
                    "too many failed authentications from this host; retry later");
    }
    const auto it = tokens_.find(id);
    if (it == tokens_.end() || !secrets_equal(it->second, request->token())) {
      limiter_.failed(host);
      return refuse(grpc::StatusCode::UNAUTHENTICATED, id, host,
                    fmt::format("client '{}' refused: unknown client id or wrong token", id));
    }
    std::unique_lock<std::mutex> lock(in_flight_mutex_);
    if (one_call_per_client_ && !in_flight_.insert(id).second) {
      lock.unlock();
      return refuse(grpc::StatusCode::UNAVAILABLE, id, host,
                    fmt::format("client '{}' already has a call in flight", id));
    }
    lock.unlock();
    grpc::Status status = handle(*context, *request, *response);
    if (one_call_per_client_) {
      lock.lock();
      in_flight_.erase(id);
    }
    if (!status.ok()) refuse(status.error_code(), id, host, status.error_message());
    return status;
  }

 private:
  grpc::Status refuse(grpc::StatusCode code, const std::string& id, const std::string& host,
                      const std::string& why) {
    // The id is what the caller claims: logged bounded, never trusted.
    log_.add(fmt::format("'{}' from {} ({}): {}", id.substr(0, 64), host, status_name(code),
                         why.substr(0, 300)));
    return grpc::Status(code, why);
  }

  grpc::Status handle(grpc::ServerContext& context, const proto::Request& request,
                      proto::Response& response) {
    try {
      const std::string what = fmt::format("client '{}' {}", request.client_id(), request.method());
      Message message;
      message.method = request.method();
      message.meta = parse_meta(request.meta_json(), what);
      decode_tensors(request.tensors(), what, message);
      CallContext call;
      const auto deadline = context.deadline();
      if (deadline != std::chrono::system_clock::time_point::max()) {
        call.deadline_us = now_us() + std::chrono::duration_cast<std::chrono::microseconds>(
                                          deadline - std::chrono::system_clock::now())
                                          .count();
      }
      call.cancelled = [&context] { return context.IsCancelled(); };
      const Message reply = handler_(request.client_id(), message, call);
      response.set_meta_json(reply.meta.dump());
      encode_tensors(reply, response.mutable_tensors());
      return grpc::Status::OK;
    } catch (const Error& e) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, e.what());
    } catch (const c10::Error& e) {
      const std::string text = e.what();
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, text.substr(0, text.find('\n')));
    } catch (const std::exception& e) {
      return grpc::Status(grpc::StatusCode::INTERNAL, e.what());
    }
  }

  std::map<std::string, std::string> tokens_;
  bool one_call_per_client_;
  ContextHandler handler_;
  RefusalLog log_;
  AuthLimiter limiter_;
  std::mutex in_flight_mutex_;
  std::set<std::string> in_flight_;
};

}  // namespace

bool is_loopback_address(const std::string& address) {
  const size_t colon = address.rfind(':');
  std::string host = colon == std::string::npos ? address : address.substr(0, colon);
  if (host.rfind("ipv4:", 0) == 0) host = host.substr(5);
  if (host.rfind("ipv6:", 0) == 0) host = host.substr(5);
  return host == "localhost" || host == "[::1]" || host.rfind("127.", 0) == 0;
}

void check_plaintext_allowed(const std::string& address, bool tls, bool insecure,
                             const std::string& what) {
  TESSERA_CHECK(tls || insecure || is_loopback_address(address),
                "{}: '{}' is not a loopback address and TLS is off, so tokens would travel in "
                "clear text; use TLS or pass --insecure",
                what, address);
}

bool RpcError::transient() const {
  return code_ == static_cast<int>(grpc::StatusCode::DEADLINE_EXCEEDED) ||
         code_ == static_cast<int>(grpc::StatusCode::UNAVAILABLE);
}

bool RpcError::unauthenticated() const {
  return code_ == static_cast<int>(grpc::StatusCode::UNAUTHENTICATED);
}

struct Server::Impl {
  std::unique_ptr<Service> service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  bool stopped = false;
};

Server::Server(const ServerOptions& options, Handler handler)
    : Server(options, ContextHandler([handler = std::move(handler)](
                                         const std::string& id, const Message& request,
                                         const CallContext&) { return handler(id, request); })) {}

Server::Server(const ServerOptions& options, ContextHandler handler)
    : impl_(std::make_unique<Impl>()) {
  TESSERA_CHECK(!options.tokens.empty(), "server {}: no client tokens configured", options.address);
  TESSERA_CHECK(
      options.max_message_bytes > 0 && options.max_message_bytes <= (int64_t{2} << 30) - 1,
      "server: max message bytes {} outside (0, 2 GiB)", options.max_message_bytes);
  for (const auto& [id, token] : options.tokens) {
    TESSERA_CHECK(!token.empty(), "server: client '{}' has an empty token", id);
  }
  TESSERA_CHECK(options.tls_cert_chain.empty() == options.tls_private_key.empty(),
                "server: TLS needs both a certificate chain and a private key");
  check_plaintext_allowed(options.address, !options.tls_cert_chain.empty(), options.insecure,
                          "server");
  TESSERA_CHECK(options.auth_failures_per_s > 0 && options.auth_failure_burst >= 1 &&
                    options.refusal_logs_per_s >= 1,
                "server: auth failure rate {}/s, burst {} and refusal log rate {}/s must be "
                "positive",
                options.auth_failures_per_s, options.auth_failure_burst,
                options.refusal_logs_per_s);
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_cert_chain.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({options.tls_private_key, options.tls_cert_chain});
    credentials = grpc::SslServerCredentials(ssl);
  }
  impl_->service = std::make_unique<Service>(options, std::move(handler));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options.address, credentials, &impl_->port);
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(options.max_message_bytes));
  builder.RegisterService(impl_->service.get());
  impl_->server = builder.BuildAndStart();
  TESSERA_CHECK(impl_->server != nullptr && impl_->port > 0,
                "server: could not listen on '{}' (address in use or malformed?)", options.address);
}

Server::~Server() { shutdown(500); }

int Server::port() const { return impl_->port; }

void Server::shutdown(int64_t deadline_ms) {
  if (impl_->stopped || !impl_->server) return;
  impl_->stopped = true;
  impl_->server->Shutdown(std::chrono::system_clock::now() +
                          std::chrono::milliseconds(deadline_ms));
  impl_->server->Wait();
}

struct Client::Impl {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<proto::Federated::Stub> grpc_client;
};

Client::Client(ClientOptions options)
    : options_(std::move(options)), impl_(std::make_unique<Impl>()) {
  TESSERA_CHECK(!options_.address.empty(), "client: no server address");
  TESSERA_CHECK(options_.timeout_ms > 0, "client: timeout {} ms must be positive",
                options_.timeout_ms);
  TESSERA_CHECK(
      options_.max_message_bytes > 0 && options_.max_message_bytes <= (int64_t{2} << 30) - 1,
      "client: max message bytes {} outside (0, 2 GiB)", options_.max_message_bytes);
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(static_cast<int>(options_.max_message_bytes));
  args.SetMaxSendMessageSize(static_cast<int>(options_.max_message_bytes));
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (options_.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options_.tls_root_certs;
    credentials = grpc::SslCredentials(ssl);
    if (!options_.tls_server_name.empty()) {
      args.SetSslTargetNameOverride(options_.tls_server_name);
    }
  }
  impl_->channel = grpc::CreateCustomChannel(options_.address, credentials, args);
  impl_->grpc_client = proto::Federated::NewStub(impl_->channel);
}

Client::~Client() = default;

Message Client::call(const Message& request, int64_t timeout_ms) {
  proto::Request wire;
  wire.set_client_id(options_.client_id);
  wire.set_token(options_.token);
  wire.set_method(request.method);
  wire.set_meta_json(request.meta.dump());
  encode_tensors(request, wire.mutable_tensors());
  const auto size = static_cast<int64_t>(wire.ByteSizeLong());
  if (size > options_.max_message_bytes) {
    throw RpcError(static_cast<int>(grpc::StatusCode::RESOURCE_EXHAUSTED),
                   fmt::format("{}: message of {} bytes exceeds this client's limit of {}",
                               request.method, size, options_.max_message_bytes));
  }
  grpc::ClientContext context;
  context.set_deadline(
      std::chrono::system_clock::now() +
      std::chrono::milliseconds(timeout_ms > 0 ? timeout_ms : options_.timeout_ms));
  proto::Response response;
  const grpc::Status status = impl_->grpc_client->Call(&context, wire, &response);
  if (!status.ok()) {
    throw RpcError(static_cast<int>(status.error_code()),
                   fmt::format("server {} refused {} ({}): {}", options_.address, request.method,
                               status_name(status.error_code()), status.error_message()));
  }
  const std::string what = fmt::format("reply to {}", request.method);
  Message reply;
  reply.method = request.method;
  reply.meta = parse_meta(response.meta_json(), what);
  decode_tensors(response.tensors(), what, reply);
  return reply;
}

}  // namespace tessera::net
