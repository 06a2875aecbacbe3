// The server side of the SFL protocol: epochs, turns (V1/V2), dropouts and liveness, bounded
// all-or-nothing steps, robust averaging, long polls, evaluation and atomic checkpoints (see
// protocol.h).
#include "tessera/splitfed/protocol.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <sstream>
#include <type_traits>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/json.h"
#include "tessera/core/log.h"
#include "tessera/core/progress.h"
#include "tessera/core/random.h"
#include "tessera/core/seed.h"
#include "tessera/core/timer.h"

namespace tessera::splitfed {
namespace {

int64_t meta_int(const net::Message& m, const char* key) {
  TESSERA_CHECK(m.meta.contains(key) && m.meta.at(key).is_number_integer(),
                "{}: metadata field '{}' missing or not an integer", m.method, key);
  return m.meta.at(key).get<int64_t>();
}

template <typename T>
void read_field(const nlohmann::json& json, const char* key, T& value) {
  if (!json.contains(key)) return;
  // Counts must be JSON integers: get<int64_t>() would truncate n_clients 1.9 to 1.
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    value =
        static_cast<T>(json_integer(json.at(key), std::string("SFL options '") + key + "'",
                                    std::is_signed_v<T> ? std::numeric_limits<int64_t>::min() : 0,
                                    std::numeric_limits<int64_t>::max()));
  } else {
    value = json.at(key).get<T>();
  }
}

/// A deep copy of one parameter's optimizer state (the SFL server's optimizer is SGD), so that a
/// rolled-back step leaves the momentum exactly as it was.
std::unique_ptr<torch::optim::OptimizerParamState> copy_state(
    const torch::optim::OptimizerParamState& state) {
  const auto* sgd = dynamic_cast<const torch::optim::SGDParamState*>(&state);
  TESSERA_CHECK(sgd != nullptr, "SFL server: only an SGD optimizer state can be rolled back");
  auto copy = std::make_unique<torch::optim::SGDParamState>(*sgd);
  if (sgd->momentum_buffer().defined()) copy->momentum_buffer(sgd->momentum_buffer().clone());
  return copy;
}

/// "" when every floating tensor is finite, within `bound` and (BN running variances) >= 0;
/// otherwise why not, naming the tensor.
std::string check_bounded(const std::string& name, const torch::Tensor& t, double bound) {
  if (!t.defined() || !t.is_floating_point() || t.numel() == 0) return "";
  if (!torch::isfinite(t).all().item<bool>()) return fmt::format("'{}' is not finite", name);
  const double max_abs = t.abs().max().item<double>();
  if (max_abs > bound)
    return fmt::format("'{}' reaches {:.3g} (bound {:.3g})", name, max_abs, bound);
  const bool variance = name.size() >= 11 && name.compare(name.size() - 11, 11, "running_var") == 0;
  if (variance && t.min().item<double>() < 0) return fmt::format("'{}' is negative", name);
  return "";
}

}  // namespace

double update_norm(const State& a, const State& b) {
  double sum = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!a[i].second.is_floating_point()) continue;
    sum += (a[i].second.to(torch::kFloat64) - b[i].second.to(torch::kFloat64))
               .pow(2)
               .sum()
               .item<double>();
  }
  return std::sqrt(sum);
}

Aggregation parse_aggregation(const std::string& name) {
  if (name == "mean") return Aggregation::mean;
  if (name == "median") return Aggregation::median;
  if (name == "trimmed_mean") return Aggregation::trimmed_mean;
  TESSERA_CHECK(false, "unknown aggregation '{}' (mean, median, trimmed_mean)", name);
  return Aggregation::mean;
}

std::string aggregation_name(Aggregation aggregation) {
  switch (aggregation) {
    case Aggregation::median:
      return "median";
    case Aggregation::trimmed_mean:
      return "trimmed_mean";
    default:
      return "mean";
  }
}

State aggregate_states(const State& global, const std::vector<State>& states,
                       Aggregation aggregation, double clip_factor, double trim_fraction) {
  TESSERA_CHECK(!states.empty(), "cannot aggregate zero client states");
  const auto n = static_cast<int64_t>(states.size());
  if (aggregation == Aggregation::mean) {
    // Clipping against the median update norm: one client cannot move the average further than
    // clip_factor times a typical client (robust to any finite scale of its state).
    std::vector<double> norms;
    for (const State& s : states) norms.push_back(update_norm(s, global));
    std::vector<double> sorted = norms;
    std::sort(sorted.begin(), sorted.end());
    const double median_norm =
        n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    std::vector<State> clipped;
    for (int64_t k = 0; k < n; ++k) {
      const double bound = clip_factor * median_norm;
      const double scale = clip_factor > 0 && norms[k] > bound ? bound / norms[k] : 1.0;
      State c;
      for (size_t i = 0; i < global.size(); ++i) {
        const torch::Tensor& t = states[k][i].second;
        if (scale >= 1.0 || !t.is_floating_point()) {
          c.emplace_back(global[i].first, t);
        } else {
          const torch::Tensor g = global[i].second.to(torch::kFloat64);
          c.emplace_back(global[i].first,
                         (g + scale * (t.to(torch::kFloat64) - g)).to(t.scalar_type()));
        }
      }
      clipped.push_back(std::move(c));
    }
    return average_states(clipped);
  }
  const State mean = average_states(states);  // checks names and shapes; integer tensors
  const int64_t k =
      aggregation == Aggregation::median
          ? 0
          : std::min<int64_t>((n - 1) / 2,
                              std::max<int64_t>(1, static_cast<int64_t>(trim_fraction * n)));
  State result;
  for (size_t i = 0; i < global.size(); ++i) {
    if (!global[i].second.is_floating_point()) {
      result.push_back(mean[i]);
      continue;
    }
    std::vector<torch::Tensor> values;
    for (const State& s : states) values.push_back(s[i].second.to(torch::kFloat64));
    const torch::Tensor sorted = std::get<0>(torch::stack(values).sort(0));
    torch::Tensor combined;
    if (aggregation == Aggregation::median) {
      combined = n % 2 == 1 ? sorted[n / 2] : 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]);
    } else {
      combined = sorted.slice(0, k, n - k).mean(0);
    }
    result.emplace_back(global[i].first, combined.to(global[i].second.scalar_type()));
  }
  return result;
}

std::mutex& torch_rng_mutex() {
  static std::mutex mutex;
  return mutex;
}

// ---------------------------------------------------------------------------------------------
// SflOptions

Ordering parse_ordering(const std::string& name) {
  if (name == "v1") return Ordering::v1;
  if (name == "v2") return Ordering::v2;
  TESSERA_CHECK(false, "unknown SFL ordering '{}' (v1, v2)", name);
  return Ordering::v2;
}

std::string ordering_name(Ordering ordering) { return ordering == Ordering::v1 ? "v1" : "v2"; }

Partition parse_partition(const std::string& name) {
  if (name == "iid") return Partition::iid;
  if (name == "label_shards") return Partition::label_shards;
  TESSERA_CHECK(false, "unknown partition '{}' (iid, label_shards)", name);
  return Partition::iid;
}

std::string partition_name(Partition partition) {
  return partition == Partition::label_shards ? "label_shards" : "iid";
}

nlohmann::json SflOptions::to_json() const {
  return {{"model", model.to_json()},
          {"split", split.to_json()},
          {"n_clients", n_clients},
          {"ordering", ordering_name(ordering)},
          {"sample_ratio", sample_ratio},
          {"partition", partition_name(partition)},
          {"shards_per_client", shards_per_client},
          {"epochs", epochs},
          {"batch_size", batch_size},
          {"lr", lr},
          {"client_lr", client_lr},
          {"momentum", momentum},
          {"weight_decay", weight_decay},
          {"schedule", schedule},
          {"milestones", milestones},
          {"gamma", gamma},
          {"augment_pad", augment_pad},
          {"augment_flip", augment_flip},
          {"n_train", n_train},
          {"max_batches_per_epoch", max_batches_per_epoch},
          {"grad_noise", grad_noise},
          {"client_l1", client_l1},
          {"client_l2", client_l2},
          {"seed", seed}};
}

SflOptions SflOptions::from_json(const nlohmann::json& json) {
  TESSERA_CHECK(json.is_object(), "SFL options must be a JSON object");
  // A misspelt option would otherwise silently keep its default.
  const nlohmann::json known = SflOptions{}.to_json();
  for (const auto& [key, value] : json.items()) {
    TESSERA_CHECK(known.contains(key), "SFL options: unknown key '{}'", key);
  }
  SflOptions o;
  try {
    TESSERA_CHECK(json.contains("model"), "SFL options lack 'model'");
    o.model = models::ModelConfig::from_json(json.at("model"));
    if (json.contains("split")) o.split = SplitOptions::from_json(json.at("split"));
    read_field(json, "n_clients", o.n_clients);
    if (json.contains("ordering"))
      o.ordering = parse_ordering(json.at("ordering").get<std::string>());
    read_field(json, "sample_ratio", o.sample_ratio);
    if (json.contains("partition")) {
      o.partition = parse_partition(json.at("partition").get<std::string>());
    }
    read_field(json, "shards_per_client", o.shards_per_client);
    read_field(json, "epochs", o.epochs);
    read_field(json, "batch_size", o.batch_size);
    read_field(json, "lr", o.lr);
    read_field(json, "client_lr", o.client_lr);
    read_field(json, "momentum", o.momentum);
    read_field(json, "weight_decay", o.weight_decay);
    read_field(json, "schedule", o.schedule);
    read_field(json, "milestones", o.milestones);
    read_field(json, "gamma", o.gamma);
    read_field(json, "augment_pad", o.augment_pad);
    read_field(json, "augment_flip", o.augment_flip);
    read_field(json, "n_train", o.n_train);
    read_field(json, "max_batches_per_epoch", o.max_batches_per_epoch);
    read_field(json, "grad_noise", o.grad_noise);
    read_field(json, "client_l1", o.client_l1);
    read_field(json, "client_l2", o.client_l2);
    read_field(json, "seed", o.seed);
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "SFL options: {}", e.what());
  }
  o.validate();
  return o;
}

void SflOptions::validate() const {
  TESSERA_CHECK(n_clients >= 1 && n_clients <= 1000, "n_clients {} must be in [1, 1000]",
                n_clients);
  TESSERA_CHECK(sample_ratio > 0.0 && sample_ratio <= 1.0, "sample_ratio {} must be in (0, 1]",
                sample_ratio);
  TESSERA_CHECK(shards_per_client >= 1, "shards_per_client {} must be >= 1", shards_per_client);
  TESSERA_CHECK(epochs >= 1, "epochs {} must be >= 1", epochs);
  TESSERA_CHECK(batch_size >= 1, "batch_size {} must be >= 1", batch_size);
  TESSERA_CHECK(lr > 0.0 && std::isfinite(lr), "lr {} must be positive", lr);
  TESSERA_CHECK(std::isfinite(client_lr), "client_lr {} must be finite", client_lr);
  TESSERA_CHECK(momentum >= 0.0 && momentum < 1.0, "momentum {} must be in [0, 1)", momentum);
  TESSERA_CHECK(weight_decay >= 0.0, "weight_decay {} must be >= 0", weight_decay);
  TESSERA_CHECK(n_train >= n_clients, "n_train {} must be at least n_clients {}", n_train,
                n_clients);
  TESSERA_CHECK(max_batches_per_epoch >= 0, "max_batches_per_epoch {} must be >= 0",
                max_batches_per_epoch);
  TESSERA_CHECK(grad_noise >= 0.0 && std::isfinite(grad_noise), "grad_noise {} must be >= 0",
                grad_noise);
  TESSERA_CHECK(client_l1 >= 0.0 && client_l2 >= 0.0, "client L1 {} / L2 {} must be >= 0",
                client_l1, client_l2);
  schedule_options().validate();
}

train::TrainOptions SflOptions::schedule_options() const {
  train::TrainOptions t;
  t.epochs = epochs;
  t.batch_size = batch_size;
  t.lr = lr;
  t.momentum = momentum;
  t.weight_decay = weight_decay;
  t.schedule = schedule;
  t.milestones = milestones;
  t.gamma = gamma;
  t.augment_pad = augment_pad;
  t.augment_flip = augment_flip;
  t.seed = seed;
  return t;
}

std::string SflOptions::client_id(int64_t index) const { return fmt::format("client{}", index); }

nlohmann::json EpochRecord::to_json() const {
  return {{"epoch", epoch},
          {"lr", lr},
          {"train_loss", train_loss},
          {"train_accuracy", train_accuracy},
          {"test_accuracy", test_accuracy},
          {"test_loss", test_loss},
          {"n_active", n_active},
          {"n_dropped", n_dropped},
          {"n_steps", n_steps},
          {"seconds", seconds}};
}

EpochRecord EpochRecord::from_json(const nlohmann::json& json) {
  EpochRecord r;
  read_field(json, "epoch", r.epoch);
  read_field(json, "lr", r.lr);
  read_field(json, "train_loss", r.train_loss);
  read_field(json, "train_accuracy", r.train_accuracy);
  read_field(json, "test_accuracy", r.test_accuracy);
  read_field(json, "test_loss", r.test_loss);
  read_field(json, "n_active", r.n_active);
  read_field(json, "n_dropped", r.n_dropped);
  read_field(json, "n_steps", r.n_steps);
  read_field(json, "seconds", r.seconds);
  return r;
}

// ---------------------------------------------------------------------------------------------
// SplitServer

struct SplitServer::Snapshot {
  std::vector<torch::Tensor> params, grads, buffers;
  std::vector<std::pair<std::string, std::unique_ptr<torch::optim::OptimizerParamState>>> optimizer;
};

struct SplitServer::Epoch {
  int64_t index = 0;
  std::vector<int64_t> active;    ///< client indices in turn order
  std::vector<int64_t> position;  ///< client index -> position in `active`, or -1
  int64_t n_batches = 0;
  double lr = 0.0;
  int64_t turn = 0;             ///< batch * active.size() + position of the next step
  std::vector<bool> dropped;    ///< per position
  std::vector<bool> submitted;  ///< per position
  std::vector<State> states;    ///< per position
  double loss_sum = 0.0;
  int64_t correct = 0;
  int64_t seen = 0;
  int64_t n_steps = 0;
  bool v1_pending = false;  ///< V1: gradients accumulated since the last server step
  Timer timer;
  /// The epoch's accepted steps (a bar on a terminal, a log line every 30 s elsewhere).
  std::unique_ptr<ProgressBar> progress;

  int64_t n() const { return static_cast<int64_t>(active.size()); }
  int64_t total_turns() const { return n_batches * n(); }
};

SplitServer::SplitServer(SflOptions options, ServerSettings settings)
    : options_(std::move(options)), settings_(std::move(settings)) {
  options_.validate();
  TESSERA_CHECK(settings_.step_timeout_ms > 0, "step timeout {} ms must be positive",
                settings_.step_timeout_ms);
  TESSERA_CHECK(settings_.max_batch >= options_.batch_size,
                "max batch {} is smaller than the batch size {}", settings_.max_batch,
                options_.batch_size);
  TESSERA_CHECK(settings_.join_timeout_ms > 0 && settings_.long_poll_ms > 0,
                "join timeout {} ms and long poll {} ms must be positive",
                settings_.join_timeout_ms, settings_.long_poll_ms);
  TESSERA_CHECK(settings_.max_abs_activation > 0 && settings_.max_abs_weight > 0,
                "activation bound {} and weight bound {} must be positive",
                settings_.max_abs_activation, settings_.max_abs_weight);
  TESSERA_CHECK(settings_.clip_factor >= 0 && std::isfinite(settings_.clip_factor),
                "clip factor {} must be >= 0", settings_.clip_factor);
  TESSERA_CHECK(settings_.trim_fraction >= 0 && settings_.trim_fraction < 0.5,
                "trim fraction {} must be in [0, 0.5)", settings_.trim_fraction);
  t_start_us_ = now_us();
  first_seen_us_.assign(options_.n_clients, -1);
  absent_.assign(options_.n_clients, false);
  session_ = std::chrono::duration_cast<std::chrono::microseconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  // All initial weights come from the server's seeded generator, so every transport starts
  // from the same model (clients load the averaged state before their first step).
  seed_everything(options_.seed);
  auto [client, server] = make_split(options_.model, options_.split);
  eval_client_ = client;
  server_ = server;
  smashed_shape_ = eval_client_->smashed_shape();
  if (!settings_.initial_client_state.empty())
    load_state(*eval_client_, settings_.initial_client_state);
  if (!settings_.initial_server_state.empty()) load_state(*server_, settings_.initial_server_state);
  global_client_state_ = get_state(*eval_client_);
  train::TrainOptions t = options_.schedule_options();
  optimizer_ = train::make_optimizer(server_->parameters(), t);
  told_finished_.assign(options_.n_clients, false);
  if (settings_.on_step) observers_.push_back(settings_.on_step);
  if (settings_.resume && !settings_.checkpoint_path.empty() &&
      file_exists(settings_.checkpoint_path)) {
    load_checkpoint();
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (epochs_done_ < options_.epochs) start_epoch_locked(epochs_done_);
}

SplitServer::~SplitServer() { stop(); }

void SplitServer::stop() {
  std::lock_guard<std::mutex> lock(mutex_);
  stopped_ = true;
  changed_.notify_all();
}

bool SplitServer::finished() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return epochs_done_ >= options_.epochs;
}

bool SplitServer::wait_finished(int64_t timeout_ms) const {
  std::unique_lock<std::mutex> lock(mutex_);
  return changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
    return stopped_ || epochs_done_ >= options_.epochs;
  }) && epochs_done_ >= options_.epochs;
}

bool SplitServer::wait_all_told_finished(int64_t timeout_ms) const {
  std::unique_lock<std::mutex> lock(mutex_);
  return changed_.wait_for(lock, std::chrono::milliseconds(timeout_ms), [&] {
    return stopped_ || std::all_of(told_finished_.begin(), told_finished_.end(),
                                   [](bool told) { return told; });
  }) && !stopped_;
}

std::vector<EpochRecord> SplitServer::history() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return history_;
}

int64_t SplitServer::epochs_done() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return epochs_done_;
}

State SplitServer::client_state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  State copy;
  for (const auto& [name, t] : global_client_state_) copy.emplace_back(name, t.clone());
  return copy;
}

State SplitServer::server_state() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return get_state(*server_);
}

void SplitServer::add_observer(SmashedObserver observer) {
  std::lock_guard<std::mutex> lock(mutex_);
  observers_.push_back(std::move(observer));
}

std::vector<int64_t> SplitServer::active_clients(int64_t epoch) const {
  std::vector<int64_t> all(options_.n_clients);
  for (int64_t i = 0; i < options_.n_clients; ++i) all[i] = i;
  const auto n_active = std::max<int64_t>(
      1, static_cast<int64_t>(std::llround(options_.sample_ratio * options_.n_clients)));
  if (n_active >= options_.n_clients) return all;
  std::mt19937_64 rng = make_rng(options_.seed, 1000 + static_cast<uint64_t>(epoch));
  random::shuffle(all, rng);
  all.resize(n_active);
  std::sort(all.begin(), all.end());
  return all;
}

int64_t SplitServer::client_index(const std::string& client_id) const {
  for (int64_t i = 0; i < options_.n_clients; ++i) {
    if (options_.client_id(i) == client_id) return i;
  }
  TESSERA_CHECK(false, "unknown client id '{}' (expected client0..client{})", client_id,
                options_.n_clients - 1);
  return -1;
}

net::Message SplitServer::handle(const std::string& client_id, const net::Message& request,
                                 const CallLimits& call) {
  const int64_t client = client_index(client_id);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    seen_locked(client);
  }
  if (request.method == "join") return on_join(client, request);
  if (request.method == "begin_epoch") return on_begin_epoch(client, request, call);
  if (request.method == "step") return on_step(client, request, call);
  if (request.method == "end_epoch") return on_end_epoch(client, request);
  TESSERA_CHECK(false, "unknown SFL method '{}' from {}", request.method, client_id);
  return {};
}

net::Message SplitServer::on_join(int64_t client, const net::Message& /*request*/) {
  net::Message reply;
  reply.method = "join";
  reply.meta["options"] = options_.to_json();
  reply.meta["index"] = client;
  return reply;
}

void SplitServer::seen_locked(int64_t client) {
  if (first_seen_us_[client] < 0) first_seen_us_[client] = now_us();
  if (absent_[client]) {
    absent_[client] = false;
    log::info("sfl server: {} is back; it takes part from the next epoch it is active in",
              options_.client_id(client));
  }
}

int64_t SplitServer::turn_deadline_us_locked(int64_t client) const {
  const int64_t step_us = settings_.step_timeout_ms * 1000;
  if (first_seen_us_[client] < 0) {
    return std::max(t_start_us_ + settings_.join_timeout_ms * 1000, t_last_progress_us_ + step_us);
  }
  return std::max(t_last_progress_us_, first_seen_us_[client]) + step_us;
}

SplitServer::Wait SplitServer::wait_locked(std::unique_lock<std::mutex>& lock,
                                           const std::function<bool()>& ready,
                                           const CallLimits& call) {
  int64_t until = now_us() + settings_.long_poll_ms * 1000;
  if (call.deadline_us > 0) {
    // Answer before the caller gives up, leaving a quarter of its time (at most 1 s) for the
    // reply to travel.
    const int64_t left = call.deadline_us - now_us();
    until = std::min(until, call.deadline_us - std::min<int64_t>(1000000, left / 4));
  }
  while (!ready()) {
    if (stopped_) return Wait::stopped;
    if (now_us() >= until || (call.cancelled && call.cancelled())) return Wait::expired;
    const int64_t slice_ms = std::max<int64_t>(
        1, std::min<int64_t>({200, settings_.step_timeout_ms, (until - now_us()) / 1000}));
    changed_.wait_for(lock, std::chrono::milliseconds(slice_ms));
    if (stopped_) return Wait::stopped;
    check_stall_locked();
  }
  return Wait::ready;
}

void SplitServer::start_epoch_locked(int64_t epoch) {
  auto e = std::make_unique<Epoch>();
  e->index = epoch;
  e->active = active_clients(epoch);
  e->position.assign(options_.n_clients, -1);
  for (int64_t p = 0; p < e->n(); ++p) e->position[e->active[p]] = p;
  // Shards are near-equal (partition_iid); the smallest has floor(n_train / K) samples.
  const int64_t shard = options_.n_train / options_.n_clients;
  e->n_batches = (shard + options_.batch_size - 1) / options_.batch_size;
  if (options_.max_batches_per_epoch > 0) {
    e->n_batches = std::min(e->n_batches, options_.max_batches_per_epoch);
  }
  e->lr = train::learning_rate(options_.schedule_options(), epoch);
  e->dropped.assign(e->n(), false);
  e->submitted.assign(e->n(), false);
  e->states.resize(e->n());
  train::set_learning_rate(*optimizer_, e->lr);
  optimizer_->zero_grad();
  // Clients that missed a turn and have not called since are skipped, not waited for again
  // (unless every active client is absent: then the epoch waits as usual).
  const auto present =
      std::count_if(e->active.begin(), e->active.end(), [&](int64_t c) { return !absent_[c]; });
  for (int64_t p = 0; p < e->n() && present > 0; ++p) {
    if (!absent_[e->active[p]]) continue;
    e->dropped[p] = true;
    log::warn("sfl server: skipping {} in epoch {}: absent since it missed a turn",
              options_.client_id(e->active[p]), epoch);
  }
  while (e->turn < e->total_turns() && e->dropped[e->turn % e->n()]) ++e->turn;
  e->progress = std::make_unique<ProgressBar>(
      fmt::format("sfl epoch {}/{}", epoch + 1, options_.epochs), e->total_turns());
  epoch_ = std::move(e);
  t_last_progress_us_ = now_us();
  changed_.notify_all();
}

void SplitServer::advance_turn_locked() {
  Epoch& e = *epoch_;
  auto step_if_batch_done = [&] {
    // V1: the server steps once per global batch, on gradients summed over its clients.
    if (options_.ordering == Ordering::v1 && e.turn % e.n() == 0 && e.v1_pending) {
      // Each summed gradient was checked in its step; the update is still all-or-nothing.
      Snapshot before = snapshot_locked();
      optimizer_->step();
      const std::string why = check_server_locked();
      if (!why.empty()) {
        restore_locked(before);
        log::warn("sfl server: V1 update of epoch {} rolled back: {}", e.index, why);
      }
      optimizer_->zero_grad();
      e.v1_pending = false;
    }
  };
  ++e.turn;
  step_if_batch_done();
  while (e.turn < e.total_turns() && e.dropped[e.turn % e.n()]) {
    ++e.turn;
    step_if_batch_done();
  }
  t_last_progress_us_ = now_us();
  changed_.notify_all();
}

void SplitServer::drop_locked(int64_t client, const std::string& why) {
  Epoch& e = *epoch_;
  const int64_t pos = e.position[client];
  if (pos < 0 || e.dropped[pos]) return;
  log::warn("sfl server: dropping {} from epoch {}: {}", options_.client_id(client), e.index, why);
  e.dropped[pos] = true;
  e.submitted[pos] = false;
  e.states[pos].clear();
  // If it was this client's turn, move on; the turn machine skips dropped positions.
  if (e.turn < e.total_turns() && e.turn % e.n() == pos) {
    --e.turn;  // advance_turn_locked() re-increments and runs the V1 batch boundary logic
    advance_turn_locked();
  }
  maybe_finish_epoch_locked();
  changed_.notify_all();
}

void SplitServer::check_stall_locked() {
  if (!epoch_ || stopped_) return;
  const int64_t index = epoch_->index;
  bool dropped = false;
  if (epoch_->turn < epoch_->total_turns()) {
    const int64_t client = epoch_->active[epoch_->turn % epoch_->n()];
    if (now_us() < turn_deadline_us_locked(client)) return;
    absent_[client] = true;  // skipped in later epochs until it calls again
    drop_locked(client, "no step within the step timeout");
    dropped = true;
  } else {
    for (int64_t p = 0; p < options_.n_clients; ++p) {
      // Dropping the last missing client finishes the epoch: stop looking at it then.
      if (!epoch_ || epoch_->index != index) break;
      if (p < epoch_->n() && !epoch_->dropped[p] && !epoch_->submitted[p] &&
          now_us() >= turn_deadline_us_locked(epoch_->active[p])) {
        absent_[epoch_->active[p]] = true;
        drop_locked(epoch_->active[p], "no end-of-epoch state within the step timeout");
        dropped = true;
      }
    }
  }
  if (dropped) t_last_progress_us_ = now_us();
}

void SplitServer::maybe_finish_epoch_locked() {
  if (!epoch_) return;
  Epoch& e = *epoch_;
  if (e.turn < e.total_turns()) return;
  for (int64_t p = 0; p < e.n(); ++p) {
    if (!e.dropped[p] && !e.submitted[p]) return;
  }
  finish_epoch_locked();
}

void SplitServer::finish_epoch_locked() {
  Epoch& e = *epoch_;
  e.progress->finish();
  std::vector<State> states;
  int64_t n_dropped = 0;
  for (int64_t p = 0; p < e.n(); ++p) {
    if (e.dropped[p]) {
      ++n_dropped;
    } else {
      states.push_back(std::move(e.states[p]));
    }
  }
  // Unweighted FedAvg of the client sides (research/sfl.md 1.1), robust (protocol.h); unchanged
  // if everyone dropped, or if the result failed its bounds (it cannot when the inputs passed).
  if (!states.empty()) {
    State combined = aggregate_states(global_client_state_, states, settings_.aggregation,
                                      settings_.clip_factor, settings_.trim_fraction);
    std::string why;
    for (const auto& [name, t] : combined) {
      if (why.empty()) why = check_bounded(name, t, settings_.max_abs_weight);
    }
    if (why.empty()) {
      global_client_state_ = std::move(combined);
    } else {
      log::warn("sfl server: epoch {} average refused ({}); the client state is unchanged", e.index,
                why);
    }
  }
  load_state(*eval_client_, global_client_state_);

  EpochRecord record;
  record.epoch = e.index;
  record.lr = e.lr;
  record.n_active = e.n();
  record.n_dropped = n_dropped;
  record.n_steps = e.n_steps;
  record.train_loss = e.n_steps > 0 ? e.loss_sum / static_cast<double>(e.n_steps) : 0.0;
  record.train_accuracy =
      e.seen > 0 ? static_cast<double>(e.correct) / static_cast<double>(e.seen) : 0.0;
  if (settings_.test_set != nullptr) {
    eval_client_->eval();
    server_->eval();
    torch::NoGradGuard no_grad;
    const train::EvalResult r = train::evaluate(
        [&](const torch::Tensor& x) { return server_->forward(eval_client_->forward(x)); },
        *settings_.test_set);
    server_->train();
    eval_client_->train();
    record.test_accuracy = r.accuracy;
    record.test_loss = r.loss;
  }
  record.seconds = e.timer.elapsed_s();
  history_.push_back(record);
  epochs_done_ = e.index + 1;
  log::info(
      "sfl epoch {}/{}: loss {:.4f} train acc {:.4f} test acc {:.4f} ({} active, {} dropped, "
      "{:.1f} s)",
      epochs_done_, options_.epochs, record.train_loss, record.train_accuracy, record.test_accuracy,
      record.n_active, record.n_dropped, record.seconds);
  epoch_.reset();
  if (settings_.on_epoch_end) settings_.on_epoch_end(record.epoch, global_client_state_);
  if (!settings_.checkpoint_path.empty()) save_checkpoint_locked();
  if (epochs_done_ < options_.epochs) start_epoch_locked(epochs_done_);
  changed_.notify_all();
}

net::Message SplitServer::on_begin_epoch(int64_t client, const net::Message& request,
                                         const CallLimits& call) {
  const int64_t wanted = meta_int(request, "epoch");
  TESSERA_CHECK(wanted >= 0, "begin_epoch: epoch {} must be >= 0", wanted);
  std::unique_lock<std::mutex> lock(mutex_);
  net::Message reply;
  reply.method = "begin_epoch";
  const Wait waited = wait_locked(
      lock, [&] { return epochs_done_ >= options_.epochs || (epoch_ && epoch_->index >= wanted); },
      call);
  if (waited == Wait::expired) {
    reply.meta = {{"pending", true}};
    return reply;
  }
  if (stopped_ || epochs_done_ >= options_.epochs || !epoch_) {
    reply.meta = {{"finished", true}, {"epoch", epochs_done_}, {"active", false}};
    told_finished_[client] = true;
    changed_.notify_all();
    return reply;
  }
  {
    const int64_t pos = epoch_->position[client];
    // A client that already had a turn in this epoch and asks again restarted mid-epoch: it sits
    // the rest of this epoch out and rejoins cleanly at the next one.
    if (pos >= 0 && !epoch_->dropped[pos] && epoch_->turn > pos) {
      drop_locked(client, "rejoined mid-epoch");
    }
  }
  if (!epoch_) {  // dropping it finished the run
    reply.meta = {{"finished", true}, {"epoch", epochs_done_}, {"active", false}};
    told_finished_[client] = true;
    changed_.notify_all();
    return reply;
  }
  const Epoch& e = *epoch_;  // possibly the next epoch, if the drop completed this one
  const int64_t pos = e.position[client];
  const bool active = pos >= 0 && !e.dropped[pos];
  reply.meta = {{"finished", false},
                {"epoch", e.index},
                {"active", active},
                {"n_batches", e.n_batches},
                {"lr", e.lr * options_.effective_client_lr() / options_.lr},
                {"session", session_}};
  for (const auto& [name, t] : global_client_state_) reply.add(name, t);
  return reply;
}

net::Message SplitServer::on_step(int64_t client, const net::Message& request,
                                  const CallLimits& call) {
  const int64_t epoch = meta_int(request, "epoch");
  const int64_t batch = meta_int(request, "batch");
  const int64_t session = meta_int(request, "session");
  // Validate before waiting, so a bad message is refused at once and never enters the model.
  const torch::Tensor& z = request.tensor("z");
  const torch::Tensor& y = request.tensor("y");
  std::vector<int64_t> z_shape = {-1};
  z_shape.insert(z_shape.end(), smashed_shape_.begin(), smashed_shape_.end());
  net::check_tensor(z, net::TensorSpec{torch::kFloat32, z_shape}, "step: smashed data z");
  net::check_tensor(y, net::TensorSpec{torch::kInt64, {z.size(0)}}, "step: labels y");
  TESSERA_CHECK(z.size(0) >= 1 && z.size(0) <= settings_.max_batch,
                "step: batch of {} outside [1, {}]", z.size(0), settings_.max_batch);
  const int64_t n_classes = server_->num_classes();
  TESSERA_CHECK(y.min().item<int64_t>() >= 0 && y.max().item<int64_t>() < n_classes,
                "step: labels outside [0, {})", n_classes);
  const double z_max = z.abs().max().item<double>();

  net::Message reply;
  reply.method = "step";
  std::unique_lock<std::mutex> lock(mutex_);
  if (session != session_) {
    reply.meta["restarted"] = true;  // the server restarted: redo the epoch from its start
    return reply;
  }
  if (!epoch_ || epoch_->index != epoch) {
    // A step for an epoch that is over: the client was dropped from it.
    TESSERA_CHECK(!epoch_ || epoch < epoch_->index || epochs_done_ >= options_.epochs,
                  "step: epoch {} has not started (current {})", epoch,
                  epoch_ ? epoch_->index : epochs_done_);
    reply.meta["dropped"] = true;
    return reply;
  }
  Epoch* e = epoch_.get();
  const int64_t pos = e->position[client];
  TESSERA_CHECK(pos >= 0, "step: {} is not active in epoch {}", options_.client_id(client), epoch);
  TESSERA_CHECK(batch >= 0 && batch < e->n_batches, "step: batch {} outside [0, {})", batch,
                e->n_batches);
  const int64_t my_turn = batch * e->n() + pos;
  if (e->dropped[pos]) {
    reply.meta["dropped"] = true;
    return reply;
  }
  if (z_max > settings_.max_abs_activation) {
    const std::string why = fmt::format("smashed data reaches {:.3g} (bound {:.3g})", z_max,
                                        settings_.max_abs_activation);
    drop_locked(client, why);
    TESSERA_CHECK(false, "step: {}; {} is dropped from epoch {}", why, options_.client_id(client),
                  epoch);
  }
  TESSERA_CHECK(my_turn >= e->turn, "step: batch {} of {} was already taken", batch,
                options_.client_id(client));
  const auto same_epoch = [&] { return epoch_ && epoch_->index == epoch; };
  const Wait waited = wait_locked(
      lock, [&] { return !same_epoch() || epoch_->dropped[pos] || epoch_->turn == my_turn; }, call);
  if (waited == Wait::expired && same_epoch() && !epoch_->dropped[pos]) {
    reply.meta["pending"] = true;  // the client sends the same step again
    return reply;
  }
  if (waited != Wait::ready || !same_epoch() || epoch_->dropped[pos]) {
    reply.meta["dropped"] = true;
    return reply;
  }
  e = epoch_.get();
  torch::Tensor grad;
  const std::string why = server_step_locked(my_turn, z, y, grad);
  if (!why.empty()) {
    drop_locked(client, "step rolled back: " + why);
    TESSERA_CHECK(false, "step rolled back ({}); {} is dropped from epoch {}", why,
                  options_.client_id(client), epoch);
  }
  for (const auto& observer : observers_) observer(client, z, y);
  advance_turn_locked();
  reply.add("grad", grad);
  return reply;
}

std::string SplitServer::server_step_locked(int64_t turn, const torch::Tensor& z,
                                            const torch::Tensor& y, torch::Tensor& grad) {
  Epoch& e = *epoch_;
  Snapshot before = snapshot_locked();
  // Server part of the split step (research/sfl.md 1.1 step 2). Its random numbers come from a
  // generator state fixed by (seed, epoch, turn), the same in process and over gRPC.
  std::lock_guard<std::mutex> rng_lock(torch_rng_mutex());
  torch::manual_seed(options_.seed * 1000003 + static_cast<uint64_t>(e.index) * 7919 +
                     static_cast<uint64_t>(turn) + 1);
  server_->train();
  if (options_.ordering == Ordering::v2) optimizer_->zero_grad();
  torch::Tensor z_in = z.clone().requires_grad_(true);
  const torch::Tensor logits = server_->forward(z_in);
  const torch::Tensor loss = torch::nn::functional::cross_entropy(logits, y);
  loss.backward();
  grad = z_in.grad().detach().clone();
  // All or nothing: the loss, the returned gradient and every server gradient must be finite
  // before the update, and the weights and BN statistics within bounds after it.
  constexpr double kAny = std::numeric_limits<double>::max();  // finite is enough here
  std::string why = check_bounded("loss", loss.detach(), kAny);
  if (why.empty()) why = check_bounded("dL/dz", grad, kAny);
  for (const auto& item : server_->named_parameters()) {
    if (why.empty()) why = check_bounded(item.key() + ".grad", item.value().grad(), kAny);
  }
  if (why.empty() && options_.ordering == Ordering::v2) optimizer_->step();
  if (why.empty()) why = check_server_locked();
  if (!why.empty()) {
    restore_locked(before);
    return why;
  }
  if (options_.grad_noise > 0.0) grad += options_.grad_noise * torch::rand_like(grad);
  e.loss_sum += loss.item<double>();
  e.correct += logits.argmax(1).eq(y).sum().item<int64_t>();
  e.seen += y.size(0);
  ++e.n_steps;
  e.progress->update();
  e.progress->set_postfix(fmt::format("loss {:.3f}", e.loss_sum / static_cast<double>(e.n_steps)));
  e.v1_pending = true;
  return "";
}

SplitServer::Snapshot SplitServer::snapshot_locked() const {
  Snapshot s;
  for (const auto& p : server_->parameters()) {
    s.params.push_back(p.detach().clone());
    s.grads.push_back(p.grad().defined() ? p.grad().detach().clone() : torch::Tensor());
  }
  for (const auto& b : server_->buffers()) s.buffers.push_back(b.detach().clone());
  for (const auto& [key, state] : optimizer_->state())
    s.optimizer.emplace_back(key, copy_state(*state));
  return s;
}

void SplitServer::restore_locked(Snapshot& s) {
  torch::NoGradGuard no_grad;
  const auto params = server_->parameters();
  for (size_t i = 0; i < params.size(); ++i) {
    params[i].copy_(s.params[i]);
    params[i].mutable_grad() = s.grads[i];
  }
  const auto buffers = server_->buffers();
  for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(s.buffers[i]);
  optimizer_->state().clear();
  for (auto& [key, state] : s.optimizer) optimizer_->state()[key] = std::move(state);
}

std::string SplitServer::check_server_locked() const {
  for (const auto& item : server_->named_parameters()) {
    std::string why = check_bounded(item.key(), item.value(), settings_.max_abs_weight);
    if (!why.empty()) return why;
  }
  for (const auto& item : server_->named_buffers()) {
    std::string why = check_bounded(item.key(), item.value(), settings_.max_abs_weight);
    if (!why.empty()) return why;
  }
  return "";
}

net::Message SplitServer::on_end_epoch(int64_t client, const net::Message& request) {
  const int64_t epoch = meta_int(request, "epoch");
  const int64_t session = meta_int(request, "session");
  // Same names, shapes and dtypes as the global state, finite values.
  TESSERA_CHECK(request.tensors.size() == global_client_state_.size(),
                "end_epoch: {} state tensors, expected {}", request.tensors.size(),
                global_client_state_.size());
  for (size_t i = 0; i < global_client_state_.size(); ++i) {
    const auto& [name, expected] = global_client_state_[i];
    TESSERA_CHECK(request.tensors[i].first == name,
                  "end_epoch: state tensor {} is '{}', expected '{}'", i, request.tensors[i].first,
                  name);
    net::check_tensor(request.tensors[i].second,
                      net::TensorSpec{expected.scalar_type(), expected.sizes().vec()},
                      "end_epoch: client state '" + name + "'");
  }
  std::string out_of_bounds;
  for (const auto& [name, t] : request.tensors) {
    if (out_of_bounds.empty()) out_of_bounds = check_bounded(name, t, settings_.max_abs_weight);
  }
  net::Message reply;
  reply.method = "end_epoch";
  std::lock_guard<std::mutex> lock(mutex_);
  if (session != session_) {
    reply.meta["restarted"] = true;
    return reply;
  }
  if (!epoch_ || epoch_->index != epoch) {
    reply.meta["accepted"] = false;
    return reply;
  }
  Epoch& e = *epoch_;
  const int64_t pos = e.position[client];
  if (pos < 0 || e.dropped[pos]) {
    reply.meta["accepted"] = false;
    return reply;
  }
  TESSERA_CHECK(e.turn > (e.n_batches - 1) * e.n() + pos,
                "end_epoch: {} has steps left in epoch {}", options_.client_id(client), epoch);
  if (!out_of_bounds.empty()) {
    drop_locked(client, "client state out of bounds: " + out_of_bounds);
    TESSERA_CHECK(false, "end_epoch: client state out of bounds ({}); {} is dropped from epoch {}",
                  out_of_bounds, options_.client_id(client), epoch);
  }
  State state;
  for (const auto& [name, t] : request.tensors) state.emplace_back(name, t.clone());
  e.states[pos] = std::move(state);
  e.submitted[pos] = true;
  t_last_progress_us_ = now_us();
  reply.meta["accepted"] = true;
  maybe_finish_epoch_locked();
  return reply;
}

void SplitServer::save_checkpoint_locked() const {
  torch::serialize::OutputArchive archive;
  server_->save(archive);
  torch::serialize::OutputArchive optimizer_archive;
  optimizer_->save(optimizer_archive);
  archive.write("optimizer", optimizer_archive);
  torch::serialize::OutputArchive client_archive;
  nlohmann::json names = nlohmann::json::array();
  for (size_t i = 0; i < global_client_state_.size(); ++i) {
    client_archive.write(fmt::format("t{}", i), global_client_state_[i].second);
    names.push_back(global_client_state_[i].first);
  }
  archive.write("client_state", client_archive);
  nlohmann::json meta = {{"epochs_done", epochs_done_},
                         {"options", options_.to_json()},
                         {"client_state_names", names},
                         {"history", nlohmann::json::array()}};
  for (const auto& r : history_) meta["history"].push_back(r.to_json());
  archive.write("meta", c10::IValue(meta.dump()));
  std::ostringstream bytes;
  archive.save_to(bytes);
  write_file_atomic(settings_.checkpoint_path, bytes.str());
}

void SplitServer::load_checkpoint() {
  const std::string& path = settings_.checkpoint_path;
  std::istringstream bytes(read_file(path));
  torch::serialize::InputArchive archive;
  try {
    archive.load_from(bytes);
    c10::IValue meta_value;
    archive.read("meta", meta_value);
    const nlohmann::json meta = parse_json(meta_value.toStringRef(), "checkpoint " + path);
    const SflOptions saved = SflOptions::from_json(meta.at("options"));
    TESSERA_CHECK(saved.to_json() == options_.to_json(),
                  "checkpoint {} was written for other SFL options; refusing to resume", path);
    server_->load(archive);
    torch::serialize::InputArchive optimizer_archive;
    archive.read("optimizer", optimizer_archive);
    optimizer_->load(optimizer_archive);
    torch::serialize::InputArchive client_archive;
    archive.read("client_state", client_archive);
    const auto& names = meta.at("client_state_names");
    TESSERA_CHECK(names.size() == global_client_state_.size(),
                  "checkpoint {}: {} client tensors, expected {}", path, names.size(),
                  global_client_state_.size());
    State state;
    for (size_t i = 0; i < names.size(); ++i) {
      torch::Tensor t;
      client_archive.read(fmt::format("t{}", i), t);
      state.emplace_back(names[i].get<std::string>(), t);
    }
    load_state(*eval_client_, state);
    global_client_state_ = get_state(*eval_client_);
    epochs_done_ = meta.at("epochs_done").get<int64_t>();
    history_.clear();
    for (const auto& r : meta.at("history")) history_.push_back(EpochRecord::from_json(r));
  } catch (const c10::Error& e) {
    const std::string text = e.what();
    TESSERA_CHECK(false, "checkpoint {} is unreadable: {}", path, text.substr(0, text.find('\n')));
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "checkpoint {} has bad metadata: {}", path, e.what());
  }
  log::info("sfl server: resumed from {} after {} finished epochs", path, epochs_done_);
}

}  // namespace tessera::splitfed
