// In-process and gRPC runners of the SFL protocol, and saved runs (see runtime.h).
#include "tessera/splitfed/runtime.h"

#include <exception>
#include <sstream>
#include <thread>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/safetensors.h"
#include "tessera/core/timer.h"

namespace tessera::splitfed {

nlohmann::json RunResult::to_json() const {
  nlohmann::json h = nlohmann::json::array();
  for (const auto& r : history) h.push_back(r.to_json());
  return {{"history", h}, {"final_test_accuracy", final_test_accuracy}, {"seconds", seconds}};
}

RunResult run_in_process(const SflOptions& options, const data::Dataset& train_set,
                         const data::Dataset* test_set, ServerSettings settings,
                         const std::map<int64_t, std::shared_ptr<ClientStrategy>>& strategies) {
  TESSERA_CHECK(train_set.size() == options.n_train,
                "options.n_train {} differs from the training set's {} samples", options.n_train,
                train_set.size());
  Timer timer;
  settings.test_set = test_set;
  SplitServer server(options, settings);
  std::vector<ClientReport> reports(options.n_clients);
  std::vector<std::exception_ptr> errors(options.n_clients);
  std::vector<std::thread> threads;
  for (int64_t i = 0; i < options.n_clients; ++i) {
    threads.emplace_back([&, i] {
      try {
        const auto it = strategies.find(i);
        SplitClient client(std::make_unique<LocalLink>(server, options.client_id(i)), train_set,
                           it == strategies.end() ? nullptr : it->second);
        reports[i] = client.run();
      } catch (...) {
        errors[i] = std::current_exception();
        server.stop();  // wake the others; the first error is rethrown below
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
  RunResult result;
  result.history = server.history();
  result.final_test_accuracy = result.history.empty() ? -1.0 : result.history.back().test_accuracy;
  result.client_state = server.client_state();
  result.server_state = server.server_state();
  result.clients = std::move(reports);
  result.seconds = timer.elapsed_s();
  return result;
}

RunResult serve_grpc(const SflOptions& options, ServerSettings settings,
                     const net::ServerOptions& net_options, int64_t linger_ms,
                     const std::function<void(int port)>& on_listening) {
  Timer timer;
  SplitServer server(options, settings);
  net::Server transport(net_options, [&](const std::string& id, const net::Message& request) {
    return server.handle(id, request);
  });
  if (on_listening) on_listening(transport.port());
  while (!server.wait_finished(1000)) {
  }
  server.wait_all_told_finished(linger_ms);
  server.stop();
  transport.shutdown(1000);
  RunResult result;
  result.history = server.history();
  result.final_test_accuracy = result.history.empty() ? -1.0 : result.history.back().test_accuracy;
  result.client_state = server.client_state();
  result.server_state = server.server_state();
  result.seconds = timer.elapsed_s();
  return result;
}

std::map<std::string, std::string> client_tokens(const std::string& path, const std::string& token,
                                                 const SflOptions& options) {
  std::map<std::string, std::string> tokens;
  if (!path.empty()) {
    std::istringstream in(read_file(path));
    std::string id, secret;
    while (in >> id >> secret) tokens[id] = secret;
    TESSERA_CHECK(!tokens.empty(), "token file {} holds no 'client_id token' lines", path);
  } else {
    TESSERA_CHECK(!token.empty(), "the server needs --tokens FILE or --token SECRET");
    for (int64_t i = 0; i < options.n_clients; ++i) tokens[options.client_id(i)] = token;
  }
  return tokens;
}

ClientReport run_grpc_client(const net::ClientOptions& net_options, const data::Dataset& train_set,
                             std::shared_ptr<ClientStrategy> strategy, int64_t stop_after_steps,
                             int64_t retry_ms) {
  SplitClient client(std::make_unique<GrpcLink>(net_options, retry_ms), train_set,
                     std::move(strategy), /*show_progress=*/true);
  return client.run(stop_after_steps);
}

std::pair<ClientSide, ServerSide> restore_split(const SflOptions& options, const State& client,
                                                const State& server) {
  auto sides = make_split(options.model, options.split);
  load_state(*sides.first, client);
  load_state(*sides.second, server);
  return sides;
}

void save_run(const std::string& path, const SflOptions& options, const State& client,
              const State& server) {
  safetensors::File file;
  for (const auto& [name, t] : client) file.tensors.emplace_back("client." + name, t);
  for (const auto& [name, t] : server) file.tensors.emplace_back("server." + name, t);
  file.metadata["tessera.sfl"] = options.to_json().dump();
  safetensors::save(path, file);
}

SavedRun load_run(const std::string& path) {
  const safetensors::File file = safetensors::load(path);
  const auto it = file.metadata.find("tessera.sfl");
  TESSERA_CHECK(it != file.metadata.end(), "{} is not a saved SFL run (no tessera.sfl metadata)",
                path);
  nlohmann::json json = nlohmann::json::parse(it->second, nullptr, false);
  TESSERA_CHECK(!json.is_discarded(), "{}: tessera.sfl metadata is not JSON", path);
  SavedRun run;
  run.options = SflOptions::from_json(json);
  for (const auto& [name, t] : file.tensors) {
    if (name.rfind("client.", 0) == 0) {
      run.client.emplace_back(name.substr(7), t);
    } else if (name.rfind("server.", 0) == 0) {
      run.server.emplace_back(name.substr(7), t);
    } else {
      TESSERA_CHECK(false, "{}: unexpected tensor '{}'", path, name);
    }
  }
  // load_state checks that every tensor matches the architecture.
  restore_split(run.options, run.client, run.server);
  return run;
}

}  // namespace tessera::splitfed
