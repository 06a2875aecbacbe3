// In-process and gRPC runners of the SFL protocol, and saved runs (see runtime.h).
#include "tessera/splitfed/runtime.h"

#include <exception>
#include <set>
#include <sstream>
#include <thread>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/json.h"
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
  net::Server transport(
      net_options, net::ContextHandler([&](const std::string& id, const net::Message& request,
                                           const net::CallContext& call) {
        return server.handle(id, request, CallLimits{call.deadline_us, call.cancelled});
      }));
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

namespace {

/// "client_id token" pairs of a token file, in order; throws on an odd count.
std::vector<std::pair<std::string, std::string>> token_lines(const std::string& path) {
  std::istringstream in(read_file(path));
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  TESSERA_CHECK(words.size() % 2 == 0, "token file {}: expected 'client_id token' lines", path);
  std::vector<std::pair<std::string, std::string>> pairs;
  for (size_t i = 0; i < words.size(); i += 2) pairs.emplace_back(words[i], words[i + 1]);
  return pairs;
}

}  // namespace

std::map<std::string, std::string> client_tokens(const std::string& path,
                                                 const SflOptions& options) {
  TESSERA_CHECK(!path.empty(), "the server needs --tokens FILE ('client_id token' lines)");
  std::map<std::string, std::string> tokens;
  std::set<std::string> secrets;
  for (const auto& [id, secret] : token_lines(path)) {
    TESSERA_CHECK(tokens.emplace(id, secret).second, "token file {}: client id '{}' appears twice",
                  path, id);
    TESSERA_CHECK(secrets.insert(secret).second,
                  "token file {}: '{}' shares its token with another client (one token per "
                  "client id)",
                  path, id);
  }
  for (int64_t i = 0; i < options.n_clients; ++i) {
    TESSERA_CHECK(tokens.count(options.client_id(i)) == 1, "token file {}: no token for '{}'", path,
                  options.client_id(i));
  }
  TESSERA_CHECK(static_cast<int64_t>(tokens.size()) == options.n_clients,
                "token file {}: {} client ids for a run of {} clients", path, tokens.size(),
                options.n_clients);
  return tokens;
}

std::string read_client_token(const std::string& path, const std::string& client_id) {
  std::istringstream in(read_file(path));
  std::vector<std::string> words;
  for (std::string w; in >> w;) words.push_back(w);
  if (words.size() == 1) return words[0];
  for (const auto& [id, secret] : token_lines(path)) {
    if (id == client_id) return secret;
  }
  TESSERA_CHECK(false, "token file {} holds no token for '{}'", path, client_id);
  return "";
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
  nlohmann::json json = parse_json(it->second, path + ": tessera.sfl metadata");
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
