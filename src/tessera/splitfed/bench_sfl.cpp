// Training, serving and joining an SFL run as the commands do (see bench_sfl.h).
#include "tessera/splitfed/bench_sfl.h"

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/log.h"
#include "tessera/core/svg.h"

namespace tessera::splitfed {

nlohmann::json TrainSflOptions::to_json() const {
  return {{"run", run.to_json()}, {"checkpoint", checkpoint}, {"central", central}};
}

TrainSflResult train_sfl(const TrainSflOptions& options) {
  const SflData d = load_sfl_data(options.run.data, options.run.sfl.model.image_size);
  TrainSflResult result;
  result.sfl = options.run.resolve(d.train.size());
  ServerSettings settings;
  settings.checkpoint_path = options.checkpoint;
  settings.resume = !options.checkpoint.empty();
  result.run = run_in_process(result.sfl, d.train, &d.test, settings);
  if (options.central) {
    result.central = train_central(result.sfl, options.run.data.source, d.train, d.test);
  }
  return result;
}

namespace {

/// Central's per-epoch test accuracies when it was trained in this run (else empty); only when
/// they line up with the SFL run's epochs.
std::vector<double> central_curve(const TrainSflResult& r) {
  std::vector<double> curve;
  if (!r.central || r.central->history.size() != r.run.history.size()) return curve;
  for (const auto& e : r.central->history) curve.push_back(e.test_accuracy);
  return curve;
}

}  // namespace

int64_t TrainSflResult::epoch_within(double points) const {
  const std::vector<double> curve = central_curve(*this);
  if (curve.empty()) return -1;
  int64_t first = -1;
  for (size_t e = 0; e < curve.size(); ++e) {
    const bool within = 100 * (curve[e] - run.history[e].test_accuracy) <= points;
    if (!within) first = -1;
    if (within && first < 0) first = static_cast<int64_t>(e) + 1;
  }
  return first;
}

std::string TrainSflResult::summary() const {
  std::string text = fmt::format(
      "SFL ({} clients, {}, cut {}): test accuracy {:.2f}% in {:.1f} s\n", sfl.n_clients,
      ordering_name(sfl.ordering), sfl.split.cut, 100 * run.final_test_accuracy, run.seconds);
  if (central) {
    text += fmt::format("central (same model, epochs, batch, schedule): {:.2f}% in {:.1f} s{}\n",
                        100 * central->test.accuracy, central->seconds,
                        central->cached ? " (from the model cache)" : "");
    if (!central_curve(*this).empty()) {
      const int64_t e = epoch_within(1.0);
      text += e > 0 ? fmt::format("SFL within 1 point of central from epoch {} of {}\n", e,
                                  run.history.size())
                    : fmt::format("SFL not within 1 point of central at the end of {} epochs\n",
                                  run.history.size());
    }
  }
  return text;
}

Table TrainSflResult::convergence_table() const {
  Table table({"epoch", "SFL test acc %", "central test acc %", "gap (pts)"});
  const std::vector<double> curve = central_curve(*this);
  for (size_t e = 0; e < curve.size(); ++e) {
    const double sfl_accuracy = run.history[e].test_accuracy;
    table.add_row({std::to_string(e + 1), percent(sfl_accuracy), percent(curve[e]),
                   fmt::format("{:.2f}", 100 * (curve[e] - sfl_accuracy))});
  }
  return table;
}

std::string TrainSflResult::to_string() const {
  std::string text = history_table(run.history).to_string();
  if (!central_curve(*this).empty()) text += convergence_table().to_string();
  return text + summary();
}

nlohmann::json TrainSflResult::to_json() const {
  nlohmann::json j = {{"sfl", run.to_json()}, {"options", sfl.to_json()}};
  if (central) {
    j["central_accuracy"] = central->test.accuracy;
    j["central_cached"] = central->cached;
    if (!central_curve(*this).empty()) {
      j["convergence"] = convergence_table().to_json();
      j["epoch_within_1_point"] = epoch_within(1.0);
    }
  }
  return j;
}

std::string TrainSflResult::svg() const {
  SvgPlot plot(fmt::format("SFL ({} clients) against central training", sfl.n_clients), "epoch",
               "test accuracy %");
  SvgSeries sfl_series{fmt::format("SFL, {} clients", sfl.n_clients), {}};
  for (const auto& e : run.history) {
    sfl_series.points.emplace_back(static_cast<double>(e.epoch + 1), 100 * e.test_accuracy);
  }
  plot.add_series(sfl_series);
  if (central) {
    SvgSeries c{"central", {}};
    const std::vector<double> curve = central_curve(*this);
    for (size_t e = 0; e < curve.size(); ++e) {
      c.points.emplace_back(static_cast<double>(e + 1), 100 * curve[e]);
    }
    if (curve.empty()) {  // cached: only its final accuracy
      c.name += " (cached: final accuracy)";
      c.points = {{1.0, 100 * central->test.accuracy},
                  {static_cast<double>(run.history.size()), 100 * central->test.accuracy}};
    }
    plot.add_series(c);
  }
  return plot.render();
}

void ServeOptions::validate() const {
  run.validate();
  TESSERA_CHECK(step_timeout_s > 0, "--step-timeout {} must be positive", step_timeout_s);
  TESSERA_CHECK(join_timeout_s > 0, "--join-timeout {} must be positive", join_timeout_s);
  TESSERA_CHECK(max_message_mb >= 1 && max_message_mb < 2048,
                "--max-message-mb {} must be in [1, 2047]", max_message_mb);
  TESSERA_CHECK(tls_cert.empty() == tls_key.empty(), "--tls-cert and --tls-key go together");
}

nlohmann::json ServeOptions::to_json() const {
  return {{"run", run.to_json()},
          {"listen", listen},
          {"max_message_mb", max_message_mb},
          {"step_timeout_s", step_timeout_s},
          {"join_timeout_s", join_timeout_s},
          {"aggregation", aggregation_name(aggregation)},
          {"clip_factor", clip_factor},
          {"max_activation", max_activation},
          {"max_weight", max_weight},
          {"insecure", insecure},
          {"checkpoint", checkpoint},
          {"resume", resume},
          {"tls", !tls_cert.empty()},
          {"from", from}};
}

ServeResult serve(const ServeOptions& options) {
  options.validate();
  const SflData d = load_sfl_data(options.run.data, options.run.sfl.model.image_size);
  ServeResult result;
  result.sfl = options.run.resolve(d.train.size());
  const SflOptions& o = result.sfl;
  net::ServerOptions net;
  net.address = options.listen;
  net.max_message_bytes = options.max_message_mb << 20;
  net.tokens = client_tokens(options.tokens, o);
  net.insecure = options.insecure;
  if (!options.tls_cert.empty()) {
    net.tls_cert_chain = read_file(options.tls_cert);
    net.tls_private_key = read_file(options.tls_key);
  }
  ServerSettings settings;
  settings.step_timeout_ms = static_cast<int64_t>(options.step_timeout_s * 1000);
  settings.join_timeout_ms = static_cast<int64_t>(options.join_timeout_s * 1000);
  settings.aggregation = options.aggregation;
  settings.clip_factor = options.clip_factor;
  settings.max_abs_activation = options.max_activation;
  settings.max_abs_weight = options.max_weight;
  settings.checkpoint_path = options.checkpoint;
  settings.resume = options.resume;
  settings.test_set = &d.test;
  if (!options.from.empty()) {
    const SavedRun expert = load_run(options.from);
    std::tie(settings.initial_client_state, settings.initial_server_state) =
        transfer_states(o, expert.options, expert.client, expert.server);
  }
  result.run = serve_grpc(o, settings, net, 2000, [&](int port) {
    log::info("sfl server listening on port {} for {} clients", port, o.n_clients);
  });
  return result;
}

std::string ServeResult::summary() const {
  return fmt::format("SFL over gRPC: test accuracy {:.2f}% in {:.1f} s\n",
                     100 * run.final_test_accuracy, run.seconds);
}

std::string ServeResult::to_string() const {
  return history_table(run.history).to_string() + summary();
}

nlohmann::json ServeResult::to_json() const {
  return {{"sfl", run.to_json()}, {"options", sfl.to_json()}};
}

JoinOptions::JoinOptions() { net.client_id = "client0"; }

void JoinOptions::validate() const {
  TESSERA_CHECK(!net.address.empty(), "a client needs --server");
  TESSERA_CHECK(poison.size() == 2 && std::isfinite(poison[0]) && std::isfinite(poison[1]),
                "--poison takes two finite scales (smashed data, state)");
  TESSERA_CHECK(timeout_s > 0 && retry_s >= 0, "--timeout {} must be > 0 and --retry {} >= 0",
                timeout_s, retry_s);
  TESSERA_CHECK(max_message_mb >= 1 && max_message_mb < 2048,
                "--max-message-mb {} must be in [1, 2047]", max_message_mb);
  defense.validate();
}

ClientReport join(const JoinOptions& options) {
  options.validate();
  const data::Dataset train = load_split(options.data, "train", options.image_size);
  net::ClientOptions o = options.net;
  if (o.token.empty() && !options.token_file.empty()) {
    o.token = read_client_token(options.token_file, o.client_id);
  }
  if (o.token.empty() && std::getenv("TESSERA_SFL_TOKEN") != nullptr) {
    o.token = std::getenv("TESSERA_SFL_TOKEN");
  }
  TESSERA_CHECK(!o.token.empty(), "a client needs --token-file FILE, TESSERA_SFL_TOKEN or --token");
  o.timeout_ms = static_cast<int64_t>(options.timeout_s * 1000);
  o.max_message_bytes = options.max_message_mb << 20;
  o.tls = o.tls || !options.tls_ca.empty();
  if (!options.tls_ca.empty()) o.tls_root_certs = read_file(options.tls_ca);
  net::check_plaintext_allowed(o.address, o.tls, options.insecure, "client --server");
  std::shared_ptr<ClientStrategy> strategy;
  if (options.defense.needs_strategy()) {
    strategy = std::make_shared<DefenseStrategy>(options.defense);
  }
  if (options.poison != std::vector<double>{1.0, 1.0}) {
    TESSERA_CHECK(!strategy, "--poison and --defense do not go together");
    strategy = std::make_shared<PoisonStrategy>(options.poison[0], options.poison[1]);
  }
  return run_grpc_client(o, train, strategy, 0, static_cast<int64_t>(options.retry_s * 1000));
}

}  // namespace tessera::splitfed
