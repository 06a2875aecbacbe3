// gRPC server and client of the federated transport (see transport.h).
#include "tessera/net/transport.h"

#include <grpcpp/grpcpp.h>

#include <chrono>

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
  nlohmann::json meta = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
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

class Service final : public proto::Federated::Service {
 public:
  Service(std::map<std::string, std::string> tokens, Handler handler)
      : tokens_(std::move(tokens)), handler_(std::move(handler)) {}

  grpc::Status Call(grpc::ServerContext* /*context*/, const proto::Request* request,
                    proto::Response* response) override {
    const auto it = tokens_.find(request->client_id());
    if (it == tokens_.end() || !secrets_equal(it->second, request->token())) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          fmt::format("client '{}' refused: unknown client id or wrong token",
                                      request->client_id()));
    }
    try {
      const std::string what =
          fmt::format("client '{}' {}", request->client_id(), request->method());
      Message message;
      message.method = request->method();
      message.meta = parse_meta(request->meta_json(), what);
      decode_tensors(request->tensors(), what, message);
      const Message reply = handler_(request->client_id(), message);
      response->set_meta_json(reply.meta.dump());
      encode_tensors(reply, response->mutable_tensors());
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

 private:
  std::map<std::string, std::string> tokens_;
  Handler handler_;
};

}  // namespace

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

Server::Server(const ServerOptions& options, Handler handler) : impl_(std::make_unique<Impl>()) {
  TESSERA_CHECK(!options.tokens.empty(), "server {}: no client tokens configured", options.address);
  TESSERA_CHECK(
      options.max_message_bytes > 0 && options.max_message_bytes <= (int64_t{2} << 30) - 1,
      "server: max message bytes {} outside (0, 2 GiB)", options.max_message_bytes);
  for (const auto& [id, token] : options.tokens) {
    TESSERA_CHECK(!token.empty(), "server: client '{}' has an empty token", id);
  }
  TESSERA_CHECK(options.tls_cert_chain.empty() == options.tls_private_key.empty(),
                "server: TLS needs both a certificate chain and a private key");
  std::shared_ptr<grpc::ServerCredentials> credentials = grpc::InsecureServerCredentials();
  if (!options.tls_cert_chain.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({options.tls_private_key, options.tls_cert_chain});
    credentials = grpc::SslServerCredentials(ssl);
  }
  impl_->service = std::make_unique<Service>(options.tokens, std::move(handler));
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
