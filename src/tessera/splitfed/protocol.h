// The SFL protocol (research/sfl.md 1.1-1.2): run options shared by server and clients, and the
// server's side of the protocol. Every transport delivers the same net::Message to
// SplitServer::handle(), so in-process runs and gRPC runs execute the same code and give the same
// numbers for the same seed.
//
// Messages (client -> server; all carry the client id given by the transport):
//   join         meta {n_samples}              -> meta {options (SflOptions JSON), index}
//   begin_epoch  meta {epoch}                  -> waits until that epoch (or a later one) starts;
//                                                 meta {epoch, active, finished, n_batches, lr,
//                                                 session}, tensors: the averaged client state
//   step         meta {epoch, batch, session}, z, y
//                                              -> waits until it is this client's turn;
//                                                 tensors: grad (dL/dz), or meta {dropped: true}
//   end_epoch    meta {epoch, session}, client state
//                                              -> meta {accepted} (averaging when all are in)
// Waiting calls long-poll: after ServerSettings::long_poll_ms (or near the caller's deadline)
// they answer meta {pending: true} and the client sends the same message again, so no call
// outlives its deadline. A step or end_epoch whose session is not the server's (the server was
// restarted from its checkpoint) is answered meta {restarted: true}: the client asks for the
// epoch again and redoes it from its first batch.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "tessera/data/dataset.h"
#include "tessera/models/model.h"
#include "tessera/net/message.h"
#include "tessera/splitfed/split.h"
#include "tessera/train/train.h"

namespace tessera::splitfed {

/// LibTorch's default generator is process-wide: in an in-process run the server and K client
/// threads share it, over gRPC each process has its own. So that the server's random numbers
/// (dropout in the server-side layers, gradient noise) are the same in both, the server reseeds
/// it at every step from (seed, epoch, turn) while holding this lock, and whoever else draws
/// from it during a run (client model construction) holds the lock too. Client-side dropout
/// (only when the client keeps a dropout layer) is not covered.
std::mutex& torch_rng_mutex();

/// How the active clients of an epoch share the one server model (research/sfl.md 1.2, the
/// authors' naming).
///  - v2: clients take turns on the server model, which steps after every client step.
///  - v1: per global batch every active client sends its batch, the server gradients are summed
///        over clients and the server steps once.
enum class Ordering { v1, v2 };
/// "v1" or "v2"; throws tessera::Error listing the valid names.
Ordering parse_ordering(const std::string& name);
std::string ordering_name(Ordering ordering);

/// How the training samples are dealt to the clients: iid (a seeded shuffle cut into near-equal
/// shards) or label_shards (non-IID, McMahan et al.).
enum class Partition { iid, label_shards };
/// "iid" or "label_shards"; throws tessera::Error listing the valid names.
Partition parse_partition(const std::string& name);
std::string partition_name(Partition partition);

/// Everything both sides must agree on. Sent to every client in the join reply.
struct SflOptions {
  models::ModelConfig model;
  SplitOptions split;
  int64_t n_clients = 3;
  Ordering ordering = Ordering::v2;
  double sample_ratio = 1.0;  ///< fraction of clients active per epoch (sampled, seeded)
  Partition partition = Partition::iid;
  int64_t shards_per_client = 2;  ///< label_shards only
  int64_t epochs = 10;
  int64_t batch_size = 64;  ///< per client and step
  double lr = 0.05;         ///< server learning rate (SGD, momentum)
  double client_lr = -1.0;  ///< < 0: same as lr
  double momentum = 0.9;
  double weight_decay = 5e-4;
  std::string schedule = "cosine";  ///< train::TrainOptions schedules
  std::vector<int64_t> milestones;
  double gamma = 0.2;
  int64_t augment_pad = 2;
  bool augment_flip = true;
  int64_t n_train = 0;                ///< samples in the training set being partitioned
  int64_t max_batches_per_epoch = 0;  ///< 0 = a full pass over the smallest shard
  /// Defense (research/sfl.md 2.3): the server adds grad_noise * U[0, 1) to every returned
  /// gradient. RECONSTRUCTED: applied to all clients, since the server cannot tell the attacker.
  double grad_noise = 0.0;
  /// Defense: L1 / L2 penalties on client-side weights (added to the client's loss).
  double client_l1 = 0.0;
  double client_l2 = 0.0;
  uint64_t seed = 0;

  nlohmann::json to_json() const;
  static SflOptions from_json(const nlohmann::json& json);
  /// Throws tessera::Error naming the first bad field.
  void validate() const;
  /// TrainOptions carrying this run's schedule (for train::learning_rate).
  train::TrainOptions schedule_options() const;
  double effective_client_lr() const { return client_lr < 0 ? lr : client_lr; }
  /// "client0", "client1", ...
  std::string client_id(int64_t index) const;
};

/// One finished epoch as the server saw it.
struct EpochRecord {
  int64_t epoch = 0;  ///< 0-based
  double lr = 0.0;
  double train_loss = 0.0;      ///< mean server-side CE over the epoch's steps
  double train_accuracy = 0.0;  ///< on the steps' batches (augmented)
  double test_accuracy = -1.0;  ///< -1 when the server has no test set
  double test_loss = -1.0;
  int64_t n_active = 0;
  int64_t n_dropped = 0;
  int64_t n_steps = 0;
  double seconds = 0.0;
  nlohmann::json to_json() const;
  static EpochRecord from_json(const nlohmann::json& json);
};

/// How the end-of-epoch client states are combined (robust aggregation against a poisoning
/// client). mean: FedAvg of the updates, each clipped (ServerSettings::clip_factor); median:
/// coordinate-wise median of the states; trimmed_mean: per coordinate, the mean after dropping
/// the k largest and k smallest values (k from ServerSettings::trim_fraction).
enum class Aggregation { mean, median, trimmed_mean };
/// "mean", "median" or "trimmed_mean"; throws tessera::Error listing the valid names.
Aggregation parse_aggregation(const std::string& name);
std::string aggregation_name(Aggregation aggregation);

/// Combines client states (same names, shapes, dtypes) with `global` the state they started
/// from. Floating tensors follow `aggregation`; integer ones (BN batch counters) are averaged.
/// mean + clip_factor > 0: each update (state - global) whose L2 norm over all floating tensors
/// exceeds clip_factor x the median norm of the updates is scaled down to that bound.
State aggregate_states(const State& global, const std::vector<State>& states,
                       Aggregation aggregation, double clip_factor, double trim_fraction);

/// L2 norm over the floating tensors of a - b, in float64 (a 1e30 update must not overflow).
double update_norm(const State& a, const State& b);

/// Called with every accepted step's smashed data (curious-server attacks observe here).
using SmashedObserver =
    std::function<void(int64_t client, const torch::Tensor& z, const torch::Tensor& y)>;

/// Server-only settings (not sent to clients).
struct ServerSettings {
  /// A client whose turn it is and who has not sent its step within this time is dropped for
  /// the rest of the epoch; the run goes on without it (it may rejoin at the next epoch).
  int64_t step_timeout_ms = 30000;
  /// A client the server has not heard from since it started is waited for this long (counted
  /// from the server's start) before its turns are skipped; once heard from, its step timeout
  /// counts from then, so a client that joins late is not dropped before it joins.
  int64_t join_timeout_ms = 300000;
  /// Longest a call waits on the server before it is answered {pending: true} (long poll).
  int64_t long_poll_ms = 5000;
  /// Bounds of a step and of an end-of-epoch state: smashed data with |z| > max_abs_activation
  /// is refused and its sender dropped from the epoch; a server step whose result (loss,
  /// returned gradient, server weights, BN statistics) is non-finite or has a value beyond
  /// max_abs_weight, or a negative BN variance, is rolled back (weights, optimizer, BN
  /// statistics) and its sender dropped; a client state with a value beyond max_abs_weight is
  /// refused and its sender dropped.
  double max_abs_activation = 1e4;
  double max_abs_weight = 1e4;
  Aggregation aggregation = Aggregation::mean;
  double clip_factor = 2.0;     ///< mean only: update norm bound, x the median norm (0 = off)
  double trim_fraction = 0.2;   ///< trimmed_mean: k = max(1, floor(f n)), at most (n - 1) / 2
  int64_t max_batch = 1024;     ///< largest batch accepted in one step
  std::string checkpoint_path;  ///< written atomically after every epoch ("" = none)
  bool resume = false;          ///< load checkpoint_path if it exists
  const data::Dataset* test_set = nullptr;  ///< evaluated after every epoch when given
  /// Initial client-side / server-side states (empty: the seeded fresh model). ResSFL's
  /// resistance transfer starts from a pre-trained expert (research/sfl.md 3.4 B). A resumed
  /// checkpoint overrides them.
  State initial_client_state;
  State initial_server_state;
  /// Called after every epoch's averaging, under the server's lock, with the epoch (0-based) and
  /// the averaged client-side state (attack-strength checkpoints, research/sfl.md 3.4 Fig. 5).
  std::function<void(int64_t epoch, const State& client_state)> on_epoch_end;
  /// Added to the observers (SplitServer::add_observer): called after every accepted step.
  SmashedObserver on_step;
};

/// What a transport knows of the call being handled (net::CallContext, without gRPC).
struct CallLimits {
  int64_t deadline_us = 0;          ///< the caller's deadline on the now_us() clock; 0 = none
  std::function<bool()> cancelled;  ///< true once the caller has gone; empty = never
};

/// The server: one server-side model, the averaged client-side state, the epoch/turn machine.
/// Thread-safe: each client's calls may arrive on its own thread.
class SplitServer {
 public:
  SplitServer(SflOptions options, ServerSettings settings);
  ~SplitServer();

  /// The one entry point of both transports. Validates every tensor (dtype, shape, size,
  /// finite, label range) and throws tessera::Error to refuse a bad message.
  /// A call that waits returns {pending: true} by `call`'s deadline (less a margin) or when the
  /// caller has gone, and by long_poll_ms at the latest.
  net::Message handle(const std::string& client_id, const net::Message& request,
                      const CallLimits& call = {});

  /// Wakes every blocked call; later calls are refused. For shutdown.
  void stop();
  bool finished() const;
  /// Blocks until all epochs are done (or stop()). Returns false on timeout.
  bool wait_finished(int64_t timeout_ms) const;
  /// Blocks until every client has been told that the run is over (a begin_epoch reply with
  /// finished = true), or stop(), or timeout. Returns false on timeout. Lets a gRPC server exit
  /// as soon as its clients know, instead of lingering a fixed time.
  bool wait_all_told_finished(int64_t timeout_ms) const;

  const SflOptions& options() const { return options_; }
  std::vector<EpochRecord> history() const;
  /// Epochs completed so far (resumed ones included).
  int64_t epochs_done() const;
  /// The current full model pieces (copies), for attacks and evaluation after training.
  State client_state() const;
  State server_state() const;
  ServerSide& server_model() { return server_; }
  void add_observer(SmashedObserver observer);
  /// Indices of the clients active in `epoch` (seeded; all when sample_ratio = 1).
  std::vector<int64_t> active_clients(int64_t epoch) const;

 private:
  struct Epoch;
  struct Snapshot;
  enum class Wait { ready, stopped, expired };
  net::Message on_join(int64_t client, const net::Message& request);
  net::Message on_begin_epoch(int64_t client, const net::Message& request, const CallLimits& call);
  net::Message on_step(int64_t client, const net::Message& request, const CallLimits& call);
  net::Message on_end_epoch(int64_t client, const net::Message& request);
  void seen_locked(int64_t client);
  int64_t turn_deadline_us_locked(int64_t client) const;
  std::string server_step_locked(int64_t turn, const torch::Tensor& z, const torch::Tensor& y,
                                 torch::Tensor& grad);
  Snapshot snapshot_locked() const;
  void restore_locked(Snapshot& snapshot);
  std::string check_server_locked() const;
  int64_t client_index(const std::string& client_id) const;
  void start_epoch_locked(int64_t epoch);
  void advance_turn_locked();
  void check_stall_locked();
  void drop_locked(int64_t client, const std::string& why);
  void maybe_finish_epoch_locked();
  void finish_epoch_locked();
  void save_checkpoint_locked() const;
  void load_checkpoint();
  Wait wait_locked(std::unique_lock<std::mutex>& lock, const std::function<bool()>& ready,
                   const CallLimits& call);

  SflOptions options_;
  ServerSettings settings_;
  mutable std::mutex mutex_;
  mutable std::condition_variable changed_;
  ServerSide server_{nullptr};
  ClientSide eval_client_{nullptr};
  std::unique_ptr<torch::optim::Optimizer> optimizer_;
  State global_client_state_;
  std::vector<int64_t> smashed_shape_;
  std::unique_ptr<Epoch> epoch_;
  int64_t epochs_done_ = 0;
  std::vector<EpochRecord> history_;
  std::vector<SmashedObserver> observers_;
  bool stopped_ = false;
  int64_t t_last_progress_us_ = 0;
  std::vector<bool> told_finished_;  ///< per client: got a finished begin_epoch reply
  /// Liveness: when each client was first heard from by this server process (-1: not yet),
  /// and whether it missed its turn and is skipped until it calls again.
  int64_t t_start_us_ = 0;
  std::vector<int64_t> first_seen_us_;
  std::vector<bool> absent_;
  /// Differs in every server process: a step of another session predates a restart.
  int64_t session_ = 0;
};

}  // namespace tessera::splitfed
