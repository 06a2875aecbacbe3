// Experiment drivers shared by the CLI, the benchmark and the tour: re-splitting a trained SFL
// model at another cut, offline and online model extraction, and a central baseline.
#pragma once

#include <cstdint>
#include <string>

#include "tessera/data/dataset.h"
#include "tessera/models/model.h"
#include "tessera/splitfed/extraction.h"
#include "tessera/splitfed/runtime.h"

namespace tessera::splitfed {

/// The uncut model f_s o f_c of a trained run (no bottleneck), in eval mode.
models::Model full_model(const SflOptions& options, const State& client, const State& server);

/// The trained model cut again so that the server keeps `server_layers` layers (the offline
/// attack's "resplit", research/sfl.md 1.4); {attacker's client side, target server side}.
std::pair<ClientSide, ServerSide> resplit(models::Model& full, int64_t server_layers,
                                          const std::string& convention);

/// Offline ME (research/sfl.md 2.2): the target's server side frozen, the attacker's client side
/// known. `grad_noise` is the server's gradient-noise defense.
ExtractionResult extract_offline(models::Model& full, int64_t server_layers,
                                 const std::string& convention, const ExtractionOptions& options,
                                 const data::Dataset* attacker_data, const data::Dataset& test,
                                 double grad_noise);

struct OnlineExtraction {
  RunResult run;            ///< the SFL training the attacker took part in
  ExtractionResult attack;  ///< surrogate measured against the final model
};

/// Online ME: SFL training from scratch with the last client as the attacker; its queries start
/// at `start_epoch` and are normal SFL steps (the server trains on them). RECONSTRUCTED: the
/// surrogate keeps, frozen, the averaged client side the attacker held when its queries began
/// (the one its collected data and gradients belong to); fidelity is against the final model.
OnlineExtraction extract_online(const SflOptions& options, const data::Dataset& train,
                                const data::Dataset& test, const ExtractionOptions& attack,
                                const data::Dataset* attacker_data, int64_t start_epoch);

/// Central training of the uncut model with the run's epochs, batch size and schedule.
train::EvalResult train_central(const SflOptions& options, const data::Dataset& train,
                                const data::Dataset& test);

}  // namespace tessera::splitfed
