// Real processes on loopback: one gRPC server and three clients give the same model as the
// in-process run with the same seed; a client killed mid-run is dropped and the run goes on;
// bad clients (wrong token, oversized message, wrong shape, NaN) are refused while the server
// keeps serving the honest ones.
#include <gtest/gtest.h>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <limits>
#include <thread>

#include "sfl_test_util.h"
#include "tessera/core/fs.h"
#include "tessera/net/transport.h"
#include "tessera/splitfed/runtime.h"
#include "test_support.h"

extern char** environ;

namespace tessera::splitfed {
namespace {

pid_t spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, SFL_NODE_PATH, nullptr, nullptr, argv.data(), environ);
  EXPECT_EQ(rc, 0) << "posix_spawn " << SFL_NODE_PATH;
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + WTERMSIG(status);
}

std::string wait_for_file(const std::string& path, int64_t timeout_ms) {
  const auto start = std::chrono::steady_clock::now();
  while (!file_exists(path)) {
    if (std::chrono::steady_clock::now() - start > std::chrono::milliseconds(timeout_ms)) return "";
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return read_file(path);
}

struct LiveServer {
  pid_t pid = 0;
  std::string address;
  std::string result_path;
};

LiveServer start_server(const testing::TempDir& dir, int n_clients, int epochs, int timeout_ms) {
  LiveServer s;
  s.result_path = dir.file("result.json");
  s.pid = spawn({"sfl_node", "server", dir.file("port"), s.result_path, std::to_string(n_clients),
                 std::to_string(epochs), std::to_string(timeout_ms)});
  const std::string port = wait_for_file(dir.file("port"), 30000);
  EXPECT_FALSE(port.empty()) << "server did not start";
  s.address = "127.0.0.1:" + port;
  return s;
}

nlohmann::json finish(const LiveServer& s) {
  EXPECT_EQ(wait_exit(s.pid), 0);
  return nlohmann::json::parse(read_file(s.result_path));
}

TEST(SflLoopback, GrpcProcessesMatchTheInProcessRun) {
  testing::TempDir dir;
  // The in-process run with the same seed and data as sfl_node.
  const data::Dataset train = data::make_synthetic(48, 1, 8, 3, 1);
  const data::Dataset test = data::make_synthetic(30, 1, 8, 3, 2);
  SflOptions options = testing_util::tiny_options(train.size(), 3, Ordering::v2);
  options.epochs = 2;
  const RunResult local = run_in_process(options, train, &test);
  double local_sum = 0.0;
  for (const auto& [name, t] : local.server_state) {
    local_sum += t.to(torch::kFloat64).abs().sum().item<double>();
  }

  const LiveServer server = start_server(dir, 3, 2, 20000);
  std::vector<pid_t> clients;
  for (int i = 0; i < 3; ++i) {
    clients.push_back(spawn({"sfl_node", "client", server.address, "client" + std::to_string(i),
                             "token-" + std::to_string(i)}));
  }
  for (const pid_t pid : clients) EXPECT_EQ(wait_exit(pid), 0);
  const nlohmann::json result = finish(server);
  EXPECT_NEAR(result.at("final_test_accuracy").get<double>(), local.final_test_accuracy, 1e-9);
  EXPECT_NEAR(result.at("server_abs_sum").get<double>(), local_sum, 1e-3 * local_sum)
      << "same weights as in-process";
  EXPECT_EQ(result.at("history").size(), 2u);
}

TEST(SflLoopback, AKilledClientProcessIsDroppedAndTheRunGoesOn) {
  testing::TempDir dir;
  const LiveServer server = start_server(dir, 3, 2, 1000);
  std::vector<pid_t> clients;
  for (int i = 0; i < 2; ++i) {
    clients.push_back(spawn({"sfl_node", "client", server.address, "client" + std::to_string(i),
                             "token-" + std::to_string(i)}));
  }
  const pid_t dying = spawn({"sfl_node", "client", server.address, "client2", "token-2", "1"});
  EXPECT_EQ(wait_exit(dying), 128 + SIGKILL);
  for (const pid_t pid : clients) EXPECT_EQ(wait_exit(pid), 0);
  const nlohmann::json result = finish(server);
  ASSERT_EQ(result.at("history").size(), 2u);
  EXPECT_EQ(result.at("history")[0].at("n_dropped").get<int>(), 1);
  EXPECT_GT(result.at("history")[1].at("n_steps").get<int>(), 0);
}

TEST(SflLoopback, BadClientsAreRefusedAndHonestOnesFinish) {
  testing::TempDir dir;
  const LiveServer server = start_server(dir, 2, 1, 20000);
  auto client = [&](const std::string& token, int64_t max_bytes = 1 << 20) {
    net::ClientOptions o;
    o.address = server.address;
    o.client_id = "client0";
    o.token = token;
    o.max_message_bytes = max_bytes;
    o.timeout_ms = 5000;
    return std::make_unique<net::Client>(o);
  };
  auto step = [](const torch::Tensor& z) {
    net::Message m;
    m.method = "step";
    m.meta = {{"epoch", 0}, {"batch", 0}, {"session", 0}};  // refused before the session matters
    m.add("z", z);
    m.add("y", torch::zeros({z.size(0)}, torch::kInt64));
    return m;
  };
  auto refused_with = [&](net::Client& c, const net::Message& m, const std::string& fragment) {
    try {
      c.call(m);
      ADD_FAILURE() << "accepted; expected a refusal mentioning " << fragment;
    } catch (const net::RpcError& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
  };
  refused_with(*client("wrong"), step(torch::zeros({2, 8, 2, 2})), "token");
  refused_with(*client("token-0", 8 << 20), step(torch::zeros({40000, 8, 2, 2})),
               "RESOURCE_EXHAUSTED");
  refused_with(*client("token-0"), step(torch::zeros({2, 8, 3, 2})), "shape");
  torch::Tensor nan = torch::zeros({2, 8, 2, 2});
  nan[1][0][0][0] = std::numeric_limits<float>::quiet_NaN();
  refused_with(*client("token-0"), step(nan), "NaN");
  // The honest clients still run the whole job.
  std::vector<pid_t> clients;
  for (int i = 0; i < 2; ++i) {
    clients.push_back(spawn({"sfl_node", "client", server.address, "client" + std::to_string(i),
                             "token-" + std::to_string(i)}));
  }
  for (const pid_t pid : clients) EXPECT_EQ(wait_exit(pid), 0);
  const nlohmann::json result = finish(server);
  ASSERT_EQ(result.at("history").size(), 1u);
  EXPECT_EQ(result.at("history")[0].at("n_dropped").get<int>(), 0);
  EXPECT_EQ(result.at("history")[0].at("n_steps").get<int>(), 2 * 3);
}

}  // namespace
}  // namespace tessera::splitfed
