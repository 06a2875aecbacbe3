// The client side of the SFL protocol and the links that carry its messages: LocalLink (calls
// SplitServer::handle in this process) and GrpcLink (net::Client over the network). The client
// code is the same for both. What a client does in one step is a ClientStrategy, so attackers
// (online model extraction) and defenses (attacker-aware training, issue 4) plug in here.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <random>
#include <string>

#include "tessera/data/dataset.h"
#include "tessera/net/message.h"
#include "tessera/net/transport.h"
#include "tessera/splitfed/protocol.h"
#include "tessera/splitfed/split.h"

namespace tessera::splitfed {

/// Carries one client's messages to the server. call() returns the reply or throws.
class ServerLink {
 public:
  virtual ~ServerLink() = default;
  virtual net::Message call(const net::Message& request) = 0;
};

/// In-process: the same SplitServer::handle() the gRPC service calls, without serialization.
class LocalLink : public ServerLink {
 public:
  LocalLink(SplitServer& server, std::string client_id)
      : server_(server), client_id_(std::move(client_id)) {}
  net::Message call(const net::Message& request) override;

 private:
  SplitServer& server_;
  std::string client_id_;
};

/// Over gRPC. Transient failures (deadline, server unavailable) are retried with back-off
/// for up to `retry_ms`, so a client survives a server restart.
class GrpcLink : public ServerLink {
 public:
  GrpcLink(const net::ClientOptions& options, int64_t retry_ms = 60000);
  net::Message call(const net::Message& request) override;

 private:
  net::Client client_;
  int64_t retry_ms_;
};

/// What a strategy may use in one step.
struct StepContext {
  ClientSide& model;
  torch::optim::Optimizer& optimizer;
  const SflOptions& options;
  int64_t epoch = 0;
  int64_t batch = 0;
  /// Sends (z, y) as this client's step and returns dL/dz [same shape as z]; an undefined
  /// tensor means the server dropped this client from the epoch.
  std::function<torch::Tensor(const torch::Tensor& z, const torch::Tensor& y)> exchange;
};

/// One client step. The default is the honest SFL step of research/sfl.md 1.1.
class ClientStrategy {
 public:
  virtual ~ClientStrategy() = default;
  /// Called after the client loaded the averaged state, before the epoch's first step.
  virtual void begin_epoch(int64_t epoch, ClientSide& model) {}
  /// x: [B, C, H, W] float32 (augmented), y: [B] int64. Returns false if dropped.
  virtual bool step(StepContext& context, const torch::Tensor& x, const torch::Tensor& y);
  /// The state this client submits for averaging (default: its model's state).
  virtual State end_epoch(int64_t epoch, ClientSide& model) { return get_state(*model); }
};

/// A poisoning client (issue 22; for the robustness tests and measurements): honest steps, except
/// that its smashed data is multiplied by `activation_scale` in the first step of every epoch and
/// the state it submits by `state_scale` (floating tensors). 1 and 1: honest.
class PoisonStrategy : public ClientStrategy {
 public:
  PoisonStrategy(double activation_scale, double state_scale)
      : activation_scale_(activation_scale), state_scale_(state_scale) {}
  bool step(StepContext& context, const torch::Tensor& x, const torch::Tensor& y) override;
  State end_epoch(int64_t epoch, ClientSide& model) override;

 private:
  double activation_scale_;
  double state_scale_;
};

/// l1 |w|_1 + l2 |w|^2 over the client's conv/linear weights (options.client_l1/l2); undefined
/// when both are 0. Shared by the honest step and the defense strategies.
torch::Tensor client_weight_penalty(ClientSide& model, const SflOptions& options);

/// The honest step plus the paper's client-weight penalties: loss_c = <z, g> + l1 |w|_1 + l2 |w|^2.
void honest_step(StepContext& context, const torch::Tensor& x, const torch::Tensor& y,
                 bool& dropped);

struct ClientReport {
  int64_t index = -1;
  int64_t epochs_active = 0;
  int64_t epochs_skipped = 0;  ///< not sampled, or dropped
  int64_t epochs_refused = 0;  ///< a step or the state was refused: the epoch was skipped
  int64_t steps = 0;
};

/// One SFL client: joins, then for each epoch loads the averaged client state, runs its steps on
/// its private shard (seeded per client and epoch) and submits its state.
class SplitClient {
 public:
  /// `train_set` is the full training set (its first n_train samples are partitioned); the
  /// client keeps only its own shard, chosen by the server-announced partition and its index.
  /// `strategy` may be null (honest). `show_progress`: a progress bar per epoch (a client process;
  /// in process the server's bar shows every client's steps).
  SplitClient(std::unique_ptr<ServerLink> link, const data::Dataset& train_set,
              std::shared_ptr<ClientStrategy> strategy = nullptr, bool show_progress = false);
  /// Runs until the server reports the run finished. `stop_after_steps` > 0 stops (as if the
  /// process died) after that many steps (for dropout tests). A refused step or state skips the
  /// rest of that epoch; "epoch restarted" (the server resumed from its checkpoint) redoes it.
  ClientReport run(int64_t stop_after_steps = 0);

 private:
  enum class EpochEnd { submitted, dropped, restarted, stopped };
  EpochEnd run_epoch(const SflOptions& options, const data::Dataset& shard, ClientSide& model,
                     const net::Message& plan, int64_t stop_after_steps, ClientReport& report);

  std::unique_ptr<ServerLink> link_;
  const data::Dataset& train_set_;
  std::shared_ptr<ClientStrategy> strategy_;
  bool show_progress_;
};

/// The shard of client `index` under the options' partition (same on every machine).
std::vector<int64_t> client_shard(const SflOptions& options, const torch::Tensor& labels,
                                  int64_t index);

}  // namespace tessera::splitfed
