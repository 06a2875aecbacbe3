// A real SFL server or client process for the loopback tests (tiny VGG on synthetic data).
//   sfl_node server <port_file> <result_json> <n_clients> <epochs> <step_timeout_ms> [key=value]
//     port=N checkpoint=PATH resume=1 die_after_steps=N (SIGKILL itself after N accepted steps)
//     join_timeout_ms=N long_poll_ms=N
//   sfl_node client <host:port> <client_id> <token> [die_after_steps] [key=value]
//     timeout_ms=N retry_ms=N poison=Z,STATE (PoisonStrategy scales)
// die_after_steps > 0: the process SIGKILLs itself after that many steps (a crashed client).
#include <csignal>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>

#include "sfl_test_util.h"
#include "tessera/core/fs.h"
#include "tessera/splitfed/runtime.h"

namespace sf = tessera::splitfed;

namespace {

// Kills the process (no goodbye message to the server) at the n-th step.
class DyingStrategy : public sf::ClientStrategy {
 public:
  explicit DyingStrategy(int64_t n) : n_(n) {}
  bool step(sf::StepContext& context, const torch::Tensor& x, const torch::Tensor& y) override {
    const bool ok = ClientStrategy::step(context, x, y);
    if (++steps_ >= n_) std::raise(SIGKILL);
    return ok;
  }

 private:
  int64_t n_;
  int64_t steps_ = 0;
};

/// key=value arguments from argv[first] on; a bare number is returned under "die".
std::map<std::string, std::string> keys(int argc, char** argv, int first) {
  std::map<std::string, std::string> k;
  for (int i = first; i < argc; ++i) {
    const std::string a = argv[i];
    const size_t eq = a.find('=');
    k[eq == std::string::npos ? "die" : a.substr(0, eq)] =
        eq == std::string::npos ? a : a.substr(eq + 1);
  }
  return k;
}

int64_t int_key(const std::map<std::string, std::string>& k, const std::string& key,
                int64_t fallback) {
  const auto it = k.find(key);
  return it == k.end() ? fallback : std::stoll(it->second);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    const tessera::data::Dataset train = tessera::data::make_synthetic(48, 1, 8, 3, 1);
    const tessera::data::Dataset test = tessera::data::make_synthetic(30, 1, 8, 3, 2);
    if (mode == "server" && argc >= 7) {
      const auto k = keys(argc, argv, 7);
      sf::SflOptions options =
          sf::testing_util::tiny_options(train.size(), std::stoi(argv[4]), sf::Ordering::v2);
      options.epochs = std::stoi(argv[5]);
      sf::ServerSettings settings;
      settings.step_timeout_ms = std::stoi(argv[6]);
      settings.join_timeout_ms = int_key(k, "join_timeout_ms", settings.join_timeout_ms);
      settings.long_poll_ms = int_key(k, "long_poll_ms", 1000);
      settings.test_set = &test;
      if (k.count("checkpoint")) settings.checkpoint_path = k.at("checkpoint");
      settings.resume = int_key(k, "resume", 0) != 0;
      const int64_t die_after = int_key(k, "die_after_steps", 0);
      if (die_after > 0) {
        auto steps = std::make_shared<int64_t>(0);
        settings.on_step = [steps, die_after](int64_t, const torch::Tensor&, const torch::Tensor&) {
          if (++*steps >= die_after) std::raise(SIGKILL);  // a server crash mid-epoch
        };
      }
      tessera::net::ServerOptions net_options;
      net_options.address = "127.0.0.1:" + std::to_string(int_key(k, "port", 0));
      net_options.max_message_bytes = 1 << 20;
      for (int64_t i = 0; i < options.n_clients; ++i) {
        net_options.tokens[options.client_id(i)] = "token-" + std::to_string(i);
      }
      const std::string port_file = argv[2];
      const sf::RunResult result = sf::serve_grpc(
          options, settings, net_options, 1000,
          [&](int port) { tessera::write_file_atomic(port_file, std::to_string(port)); });
      nlohmann::json json = result.to_json();
      double server_sum = 0.0;
      for (const auto& [name, t] : result.server_state)
        server_sum += t.to(torch::kFloat64).abs().sum().item<double>();
      json["server_abs_sum"] = server_sum;
      tessera::write_file_atomic(argv[3], json.dump());
      return 0;
    }
    if (mode == "client" && argc >= 5) {
      const auto k = keys(argc, argv, 5);
      tessera::net::ClientOptions net_options;
      net_options.address = argv[2];
      net_options.client_id = argv[3];
      net_options.token = argv[4];
      net_options.timeout_ms = int_key(k, "timeout_ms", 30000);
      std::shared_ptr<sf::ClientStrategy> strategy;
      if (k.count("die")) strategy = std::make_shared<DyingStrategy>(std::stoi(k.at("die")));
      if (k.count("poison")) {
        const std::string& p = k.at("poison");
        strategy = std::make_shared<sf::PoisonStrategy>(std::stod(p.substr(0, p.find(','))),
                                                        std::stod(p.substr(p.find(',') + 1)));
      }
      const sf::ClientReport r =
          sf::run_grpc_client(net_options, train, strategy, 0, int_key(k, "retry_ms", 10000));
      std::cout << argv[3] << ": " << r.epochs_active << " active, " << r.epochs_refused
                << " refused\n";
      return 0;
    }
    std::cerr << "usage: sfl_node server|client ...\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
