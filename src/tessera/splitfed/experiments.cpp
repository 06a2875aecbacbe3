// Experiment drivers (see experiments.h).
#include "tessera/splitfed/experiments.h"

#include <thread>

#include "tessera/core/error.h"
#include "tessera/core/seed.h"
#include "tessera/models/registry.h"

namespace tessera::splitfed {

models::Model full_model(const SflOptions& options, const State& client, const State& server) {
  TESSERA_CHECK(options.split.bottleneck_channels == 0,
                "a run with a bottleneck has no uncut model to re-split");
  models::Model model = models::create(options.model);
  State all = client;
  all.insert(all.end(), server.begin(), server.end());
  // ClientSide / ServerSide register the units under their own names, so the states are
  // exactly the uncut model's parameters and buffers.
  State ordered;
  for (const auto& item : model->named_parameters()) {
    bool found = false;
    for (const auto& [name, t] : all) {
      if (name == item.key()) {
        ordered.emplace_back(name, t);
        found = true;
      }
    }
    TESSERA_CHECK(found, "saved run lacks parameter '{}'", item.key());
  }
  for (const auto& item : model->named_buffers()) {
    for (const auto& [name, t] : all) {
      if (name == item.key()) ordered.emplace_back(name, t);
    }
  }
  load_state(*model, ordered);
  model->eval();
  return model;
}

std::pair<ClientSide, ServerSide> resplit(models::Model& full, int64_t server_layers,
                                          const std::string& convention) {
  const int64_t cut = cut_for_server_layers(full, server_layers, convention);
  SplitOptions split;
  split.cut = cut;
  ClientSide client(models::clone(full), split);
  ServerSide server(models::clone(full), split);
  client->eval();
  server->eval();
  return {client, server};
}

ExtractionResult extract_offline(models::Model& full, int64_t server_layers,
                                 const std::string& convention, const ExtractionOptions& options,
                                 const data::Dataset* attacker_data, const data::Dataset& test,
                                 double grad_noise) {
  auto [client, server] = resplit(full, server_layers, convention);
  const torch::Tensor target_predictions = predict(client, server, test);
  SplitOptions split;
  split.cut = cut_for_server_layers(full, server_layers, convention);
  seed_everything(options.seed);
  ModelExtraction attack(options, client, full->config(), split, attacker_data);
  OfflineOracle oracle(server, options.budget, grad_noise);
  attack.collect(oracle);
  return attack.fit(test, target_predictions);
}

OnlineExtraction extract_online(const SflOptions& options, const data::Dataset& train,
                                const data::Dataset& test, const ExtractionOptions& attack_options,
                                const data::Dataset* attacker_data, int64_t start_epoch) {
  TESSERA_CHECK(start_epoch >= 0 && start_epoch < options.epochs,
                "online attack start epoch {} outside [0, {})", start_epoch, options.epochs);
  auto oracle = std::make_shared<OnlineOracle>(attack_options.budget);
  std::unique_ptr<ModelExtraction> attack;
  std::thread attack_thread;
  std::exception_ptr attack_error;
  auto strategy =
      std::make_shared<OnlineAttackerStrategy>(oracle, start_epoch, [&](const State& state) {
        auto sides = make_split(options.model, options.split);
        load_state(*sides.first, state);
        attack = std::make_unique<ModelExtraction>(attack_options, sides.first, options.model,
                                                   options.split, attacker_data);
        attack_thread = std::thread([&] {
          try {
            attack->collect(*oracle);
          } catch (...) {
            attack_error = std::current_exception();
          }
          oracle->attack_done();
        });
      });
  OnlineExtraction result;
  try {
    result.run = run_in_process(options, train, &test, {}, {{options.n_clients - 1, strategy}});
  } catch (...) {
    oracle->close();
    if (attack_thread.joinable()) attack_thread.join();
    throw;
  }
  oracle->close();
  if (attack_thread.joinable()) attack_thread.join();
  if (attack_error) std::rethrow_exception(attack_error);
  TESSERA_CHECK(attack != nullptr, "the online attack never started (start epoch {})", start_epoch);
  // Fidelity is measured against the final trained model.
  auto [client, server] = restore_split(options, result.run.client_state, result.run.server_state);
  const torch::Tensor target_predictions = predict(client, server, test);
  result.attack = attack->fit(test, target_predictions);
  return result;
}

train::EvalResult train_central(const SflOptions& options, const data::Dataset& train,
                                const data::Dataset& test) {
  seed_everything(options.seed);
  models::Model model = models::create(options.model);
  train::TrainOptions t = options.schedule_options();
  t.progress_label = "central";
  train::fit(model, train, &test, t);
  return train::evaluate(model, test);
}

}  // namespace tessera::splitfed
