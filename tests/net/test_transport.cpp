// The gRPC transport on loopback: authenticated calls succeed; a wrong token, an oversized
// message, a malformed or NaN tensor and a handler error are each refused with a clear error,
// and the server keeps serving the next good call. TLS: a trusted certificate works, an untrusted
// one or a plain-text client is refused.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <string>
#include <thread>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/timer.h"
#include "tessera/net/transport.h"
#include "test_support.h"

namespace tessera::net {
namespace {

class NetTransport : public testing::SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    ServerOptions options;
    options.address = "127.0.0.1:0";
    options.max_message_bytes = 1 << 20;  // 1 MiB
    options.tokens = {{"alice", "secret-a"}, {"bob", "secret-b"}};
    server_ = std::make_unique<Server>(options, [](const std::string& id, const Message& request) {
      TESSERA_CHECK(request.method == "double", "unknown method '{}'", request.method);
      const torch::Tensor& x = request.tensor("x");
      check_tensor(x, TensorSpec{torch::kFloat32, {-1, 4}}, "x");
      Message reply;
      reply.meta["client"] = id;
      reply.add("y", x * 2);
      return reply;
    });
  }
  Client make_client(const std::string& id, const std::string& token, int64_t max_bytes = 1 << 20) {
    ClientOptions options;
    options.address = "127.0.0.1:" + std::to_string(server_->port());
    options.client_id = id;
    options.token = token;
    options.max_message_bytes = max_bytes;
    options.timeout_ms = 5000;
    return Client(options);
  }
  static Message request(const torch::Tensor& x, const std::string& method = "double") {
    Message m;
    m.method = method;
    m.add("x", x);
    return m;
  }
  // A good call must still work after each refusal.
  void expect_serving() {
    Client bob = make_client("bob", "secret-b");
    const Message reply = bob.call(request(torch::ones({1, 4})));
    EXPECT_TRUE(torch::equal(reply.tensor("y"), torch::full({1, 4}, 2.0f)));
    EXPECT_EQ(reply.meta.at("client"), "bob");
  }
  std::unique_ptr<Server> server_;
};

TEST_F(NetTransport, AuthenticatedCallRoundTrips) {
  Client alice = make_client("alice", "secret-a");
  const torch::Tensor x = torch::randn({3, 4});
  const Message reply = alice.call(request(x));
  EXPECT_TRUE(torch::allclose(reply.tensor("y"), x * 2));
  EXPECT_EQ(reply.meta.at("client"), "alice");
}

TEST_F(NetTransport, WrongTokenOrUnknownClientIsRefused) {
  for (const auto& [id, token] : std::vector<std::pair<std::string, std::string>>{
           {"alice", "secret-b"}, {"alice", ""}, {"mallory", "secret-a"}}) {
    Client client = make_client(id, token);
    try {
      client.call(request(torch::ones({1, 4})));
      FAIL() << "accepted " << id << "/" << token;
    } catch (const RpcError& e) {
      EXPECT_TRUE(e.unauthenticated()) << e.what();
      EXPECT_NE(std::string(e.what()).find("token"), std::string::npos) << e.what();
    }
  }
  expect_serving();
}

TEST_F(NetTransport, OversizedMessageIsRefusedByTheServer) {
  // The client allows 8 MiB, the server only 1 MiB: the server must refuse.
  Client big = make_client("alice", "secret-a", 8 << 20);
  EXPECT_THROW(big.call(request(torch::zeros({100000, 4}))), RpcError);
  // And a client refuses to send beyond its own limit.
  Client small = make_client("alice", "secret-a", 1000);
  EXPECT_THROW(small.call(request(torch::zeros({1000, 4}))), RpcError);
  expect_serving();
}

TEST_F(NetTransport, WrongShapeNanAndUnknownMethodAreRefusedWithTheReason) {
  Client alice = make_client("alice", "secret-a");
  auto expect_refused = [&](const Message& m, const std::string& fragment) {
    try {
      alice.call(m);
      FAIL() << "accepted, expected refusal mentioning " << fragment;
    } catch (const RpcError& e) {
      EXPECT_FALSE(e.transient());
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  expect_refused(request(torch::ones({2, 5})), "shape");
  torch::Tensor nan = torch::ones({2, 4});
  nan[0][1] = std::numeric_limits<float>::quiet_NaN();
  expect_refused(request(nan), "NaN");
  expect_refused(request(torch::ones({2, 4}), "rm -rf"), "unknown method");
  expect_serving();
}

TEST_F(NetTransport, UnreachableServerTimesOutAsTransient) {
  ClientOptions options;
  options.address = "127.0.0.1:1";  // nothing listens on port 1
  options.client_id = "alice";
  options.token = "secret-a";
  options.timeout_ms = 300;
  Client client(options);
  try {
    client.call(request(torch::ones({1, 4})));
    FAIL() << "call to a dead address succeeded";
  } catch (const RpcError& e) {
    EXPECT_TRUE(e.transient()) << e.what();
  }
}

// TLS on loopback with self-signed certificates made by the openssl command line tool.
class NetTls : public testing::SeededTest {
 protected:
  void SetUp() override {
    SeededTest::SetUp();
    if (std::system("openssl version > /dev/null 2>&1") != 0) GTEST_SKIP() << "no openssl tool";
    for (const std::string name : {"server", "stranger"}) {
      const std::string command = fmt::format(
          "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN={0} -addext "
          "subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout {1}/{0}.key -out {1}/{0}.pem "
          "> /dev/null 2>&1",
          name, dir_.path());
      ASSERT_EQ(std::system(command.c_str()), 0) << command;
    }
    ServerOptions options;
    options.address = "127.0.0.1:0";
    options.tokens = {{"alice", "secret-a"}};
    options.tls_cert_chain = read_file(dir_.file("server.pem"));
    options.tls_private_key = read_file(dir_.file("server.key"));
    server_ = std::make_unique<Server>(options, [](const std::string&, const Message& request) {
      Message reply;
      reply.add("y", request.tensor("x") * 2);
      return reply;
    });
  }
  ClientOptions client_options(bool tls, const std::string& roots) {
    ClientOptions options;
    options.address = "127.0.0.1:" + std::to_string(server_->port());
    options.client_id = "alice";
    options.token = "secret-a";
    options.timeout_ms = 3000;
    options.tls = tls;
    options.tls_root_certs = roots;
    return options;
  }
  static Message request() {
    Message m;
    m.method = "double";
    m.add("x", torch::full({2, 3}, 1.5f));
    return m;
  }
  testing::TempDir dir_;
  std::unique_ptr<Server> server_;
};

TEST_F(NetTls, CallOverTlsRoundTripsWhenTheServerCertificateIsTrusted) {
  Client client(client_options(true, read_file(dir_.file("server.pem"))));
  const Message reply = client.call(request());
  EXPECT_TRUE(torch::equal(reply.tensor("y"), torch::full({2, 3}, 3.0f)));
}

TEST_F(NetTls, UntrustedCertificateAndPlainTextClientAreRefused) {
  // A certificate signed by someone else: the handshake fails, the token is never sent.
  Client stranger(client_options(true, read_file(dir_.file("stranger.pem"))));
  EXPECT_THROW(stranger.call(request()), RpcError);
  // A client without TLS cannot talk to a TLS-only server.
  Client plain(client_options(false, ""));
  EXPECT_THROW(plain.call(request()), RpcError);
  // The trusted client still gets through afterwards.
  Client trusted(client_options(true, read_file(dir_.file("server.pem"))));
  EXPECT_NO_THROW(trusted.call(request()));
}

TEST(NetServer, RefusesCertificateWithoutKey) {
  ServerOptions options;
  options.address = "127.0.0.1:0";
  options.tokens = {{"alice", "secret-a"}};
  options.tls_cert_chain = "-----BEGIN CERTIFICATE-----";
  EXPECT_THROW(Server(options, [](const std::string&, const Message& m) { return m; }), Error);
}

TEST(NetServer, RefusesEmptyTokenTable) {
  ServerOptions options;
  options.address = "127.0.0.1:0";
  EXPECT_THROW(Server(options, [](const std::string&, const Message& m) { return m; }), Error);
}

TEST(NetServer, PlainTextOnlyOnLoopbackUnlessInsecure) {
  EXPECT_TRUE(is_loopback_address("127.0.0.1:50051"));
  EXPECT_TRUE(is_loopback_address("localhost:1"));
  EXPECT_TRUE(is_loopback_address("[::1]:1"));
  EXPECT_FALSE(is_loopback_address("0.0.0.0:50051"));
  EXPECT_FALSE(is_loopback_address("10.1.2.3:50051"));
  EXPECT_EQ(ServerOptions().address, "127.0.0.1:50051");
  ServerOptions options;
  options.address = "0.0.0.0:0";
  options.tokens = {{"alice", "secret-a"}};
  const Handler echo = [](const std::string&, const Message& m) { return m; };
  const std::string why = testing::error_of([&] { Server server(options, echo); });
  EXPECT_NE(why.find("--insecure"), std::string::npos) << why;
  options.insecure = true;
  EXPECT_NO_THROW(Server(options, echo));
  EXPECT_THROW(check_plaintext_allowed("192.168.0.2:1", false, false, "client"), Error);
  EXPECT_NO_THROW(check_plaintext_allowed("192.168.0.2:1", true, false, "client"));
}

TEST_F(NetTransport, GuessingIsRateLimitedPerHost) {
  // Burst 20, 5 per second: of 60 quick guesses most are refused before their token is read.
  int wrong = 0, limited = 0;
  Client guesser = make_client("alice", "guess");
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 60; ++i) {
    try {
      guesser.call(request(torch::ones({1, 4})));
    } catch (const RpcError& e) {
      (e.unauthenticated() ? wrong : limited) += 1;
      if (!e.unauthenticated()) EXPECT_TRUE(e.transient()) << e.what();
    }
  }
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LE(wrong, 21 + 5 * s);
  EXPECT_EQ(wrong + limited, 60);
}

TEST(NetServer, OneCallPerClientAndTheHandlerSeesTheCallersDeadline) {
  ServerOptions options;
  options.address = "127.0.0.1:0";
  options.tokens = {{"alice", "secret-a"}, {"bob", "secret-b"}};
  std::atomic<int64_t> deadline_left_ms{-1};
  std::atomic<bool> saw_cancel{false};
  Server server(options, ContextHandler(
                             [&](const std::string& id, const Message& m, const CallContext& call) {
                               if (m.method == "block") {
                                 deadline_left_ms = (call.deadline_us - now_us()) / 1000;
                                 // Blocks until the caller gives up (at most 10 s).
                                 for (int i = 0; i < 1000 && !call.cancelled(); ++i) {
                                   std::this_thread::sleep_for(std::chrono::milliseconds(10));
                                 }
                                 saw_cancel = call.cancelled();
                               }
                               return m;
                             }));
  auto make = [&](const std::string& id, const std::string& token, int64_t timeout_ms) {
    ClientOptions o;
    o.address = "127.0.0.1:" + std::to_string(server.port());
    o.client_id = id;
    o.token = token;
    o.timeout_ms = timeout_ms;
    return std::make_unique<Client>(o);
  };
  Message block;
  block.method = "block";
  std::thread caller([&] { EXPECT_THROW(make("alice", "secret-a", 1500)->call(block), RpcError); });
  while (deadline_left_ms < 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  EXPECT_GT(deadline_left_ms.load(), 500);
  EXPECT_LE(deadline_left_ms.load(), 1600);  // the caller's 1.5 s, give or take clock skew
  // A second call from alice while the first is handled: refused as busy (transient).
  Message quick;
  quick.method = "quick";
  try {
    make("alice", "secret-a", 5000)->call(quick);
    ADD_FAILURE() << "a second call in flight was accepted";
  } catch (const RpcError& e) {
    EXPECT_TRUE(e.transient()) << e.what();
    EXPECT_NE(std::string(e.what()).find("in flight"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(make("bob", "secret-b", 5000)->call(quick));  // others are served
  caller.join();
  for (int i = 0; i < 500 && !saw_cancel; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(saw_cancel) << "the handler learnt that its caller had gone";
  EXPECT_NO_THROW(make("alice", "secret-a", 5000)->call(quick));  // alice is free again
}

}  // namespace
}  // namespace tessera::net
