// The SFL client loop and the two links (see client.h).
#include "tessera/splitfed/client.h"

#include <thread>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/progress.h"
#include "tessera/core/seed.h"
#include "tessera/core/timer.h"

namespace tessera::splitfed {

net::Message LocalLink::call(const net::Message& request) {
  // Same validation as the wire: non-finite tensors are refused before the handler.
  for (const auto& [name, t] : request.tensors) {
    net::check_finite(t, request.method + " tensor '" + name + "'");
  }
  return server_.handle(client_id_, request);
}

GrpcLink::GrpcLink(const net::ClientOptions& options, int64_t retry_ms)
    : client_(options), retry_ms_(retry_ms) {}

net::Message GrpcLink::call(const net::Message& request) {
  Timer timer;
  int64_t backoff_ms = 100;
  while (true) {
    try {
      return client_.call(request);
    } catch (const net::RpcError& e) {
      if (!e.transient() || timer.elapsed_us() / 1000 > retry_ms_) throw;
      log::debug("sfl client: {} (retrying in {} ms)", e.what(), backoff_ms);
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff_ms));
      backoff_ms = std::min<int64_t>(backoff_ms * 2, 2000);
    }
  }
}

torch::Tensor client_weight_penalty(ClientSide& model, const SflOptions& options) {
  torch::Tensor penalty;
  if (options.client_l1 <= 0.0 && options.client_l2 <= 0.0) return penalty;
  penalty = torch::zeros({});
  for (const auto& p : model->parameters()) {
    if (p.dim() < 2) continue;  // weights only (conv, linear), not biases or BN
    if (options.client_l1 > 0.0) penalty = penalty + options.client_l1 * p.abs().sum();
    if (options.client_l2 > 0.0) penalty = penalty + options.client_l2 * p.pow(2).sum();
  }
  return penalty;
}

void honest_step(StepContext& context, const torch::Tensor& x, const torch::Tensor& y,
                 bool& dropped) {
  context.optimizer.zero_grad();
  const torch::Tensor z = context.model->forward(x);
  const torch::Tensor grad = context.exchange(z.detach(), y);
  dropped = !grad.defined();
  if (dropped) return;
  // A frozen client (learning rate 0, no weight penalty) would not change: it only runs forward.
  const bool frozen = context.options.effective_client_lr() == 0.0 &&
                      context.options.client_l1 == 0.0 && context.options.client_l2 == 0.0;
  if (frozen) return;
  // d<z, g>/dθ = g · dz/dθ: the chain rule through the cut (research/sfl.md 1.1 step 3).
  torch::Tensor loss = (z * grad).sum();
  const torch::Tensor penalty = client_weight_penalty(context.model, context.options);
  if (penalty.defined()) loss = loss + penalty;
  loss.backward();
  context.optimizer.step();
}

bool ClientStrategy::step(StepContext& context, const torch::Tensor& x, const torch::Tensor& y) {
  bool dropped = false;
  honest_step(context, x, y, dropped);
  return !dropped;
}

bool PoisonStrategy::step(StepContext& context, const torch::Tensor& x, const torch::Tensor& y) {
  if (context.batch != 0 || activation_scale_ == 1.0) return ClientStrategy::step(context, x, y);
  StepContext poisoned = context;
  poisoned.exchange = [&](const torch::Tensor& z, const torch::Tensor& labels) {
    return context.exchange(z * activation_scale_, labels);
  };
  return ClientStrategy::step(poisoned, x, y);
}

State PoisonStrategy::end_epoch(int64_t /*epoch*/, ClientSide& model) {
  State state = get_state(*model);
  for (auto& [name, t] : state) {
    if (t.is_floating_point()) t = t * state_scale_;
  }
  return state;
}

std::vector<int64_t> client_shard(const SflOptions& options, const torch::Tensor& labels,
                                  int64_t index) {
  TESSERA_CHECK(labels.size(0) == options.n_train,
                "the training set has {} samples but the run partitions {}", labels.size(0),
                options.n_train);  // SplitClient::run passes the first n_train samples
  TESSERA_CHECK(index >= 0 && index < options.n_clients, "client index {} outside [0, {})", index,
                options.n_clients);
  const uint64_t seed = options.seed + 17;
  if (options.partition == Partition::iid) {
    return data::partition_iid(options.n_train, options.n_clients, seed)[index];
  }
  return data::partition_label_shards(labels, options.n_clients, options.shards_per_client,
                                      seed)[index];
}

SplitClient::SplitClient(std::unique_ptr<ServerLink> link, const data::Dataset& train_set,
                         std::shared_ptr<ClientStrategy> strategy, bool show_progress)
    : link_(std::move(link)),
      train_set_(train_set),
      strategy_(strategy ? std::move(strategy) : std::make_shared<ClientStrategy>()),
      show_progress_(show_progress) {}

namespace {

/// Sends `request` again while the server answers {pending: true} (a long poll).
net::Message call_until_answered(ServerLink& link, const net::Message& request) {
  while (true) {
    net::Message reply = link.call(request);
    if (!reply.meta.value("pending", false)) return reply;
  }
}

/// A refusal by the server (of a step or a state), not a lost server or a wrong token: the
/// client skips the rest of the epoch and goes on with the next.
bool is_refusal(const Error& e) {
  const auto* rpc = dynamic_cast<const net::RpcError*>(&e);
  return rpc == nullptr || (!rpc->transient() && !rpc->unauthenticated());
}

}  // namespace

ClientReport SplitClient::run(int64_t stop_after_steps) {
  net::Message join;
  join.method = "join";
  join.meta["n_samples"] = train_set_.size();
  const net::Message joined = link_->call(join);
  const SflOptions options = SflOptions::from_json(joined.meta.at("options"));
  ClientReport report;
  report.index = joined.meta.at("index").get<int64_t>();
  // Every party uses the first n_train samples of its copy of the training set.
  TESSERA_CHECK(train_set_.size() >= options.n_train,
                "this client has {} training samples but the run partitions {}", train_set_.size(),
                options.n_train);
  const data::Dataset usable =
      train_set_.size() > options.n_train ? train_set_.head(options.n_train) : train_set_;
  const data::Dataset shard = usable.subset(client_shard(options, usable.labels, report.index));
  TESSERA_CHECK(shard.size() > 0, "client {} has an empty shard", report.index);
  // The client model's initial weights do not matter: the averaged state is loaded each epoch.
  // Built under the RNG lock: its initialisation draws from the process-wide generator, which
  // the server of an in-process run reseeds for its steps (protocol.h).
  ClientSide model{nullptr};
  {
    std::lock_guard<std::mutex> rng_lock(torch_rng_mutex());
    model = make_split(options.model, options.split).first;
  }
  model->train();

  int64_t epoch = 0;
  while (true) {
    net::Message begin;
    begin.method = "begin_epoch";
    begin.meta["epoch"] = epoch;
    const net::Message plan = call_until_answered(*link_, begin);
    if (plan.meta.at("finished").get<bool>()) break;
    epoch = plan.meta.at("epoch").get<int64_t>();
    if (!plan.meta.at("active").get<bool>()) {
      ++report.epochs_skipped;
      ++epoch;
      continue;
    }
    EpochEnd end = EpochEnd::dropped;
    try {
      end = run_epoch(options, shard, model, plan, stop_after_steps, report);
    } catch (const Error& e) {
      if (!is_refusal(e)) throw;
      log::warn("{}: epoch {} refused, skipping it: {}", options.client_id(report.index), epoch,
                e.what());
      ++report.epochs_refused;
    }
    if (end == EpochEnd::stopped) return report;
    if (end == EpochEnd::restarted) {
      log::info("{}: the server restarted epoch {}; redoing it", options.client_id(report.index),
                epoch);
      continue;  // ask for the same epoch again
    }
    if (end == EpochEnd::submitted) {
      ++report.epochs_active;
    } else {
      ++report.epochs_skipped;
    }
    ++epoch;
  }
  return report;
}

SplitClient::EpochEnd SplitClient::run_epoch(const SflOptions& options, const data::Dataset& shard,
                                             ClientSide& model, const net::Message& plan,
                                             int64_t stop_after_steps, ClientReport& report) {
  const int64_t epoch = plan.meta.at("epoch").get<int64_t>();
  const int64_t session = plan.meta.at("session").get<int64_t>();
  load_state(*model, plan.tensors);
  const int64_t n_batches = plan.meta.at("n_batches").get<int64_t>();
  // RECONSTRUCTED: a fresh client optimizer every epoch, so that a client's whole state is the
  // averaged model (exact rejoin, resume and sampling); research/sfl.md 1.2 notes the papers'
  // momentum of inactive clients as an artefact.
  train::TrainOptions t = options.schedule_options();
  const double lr = plan.meta.at("lr").get<double>();
  // A frozen client (learning rate 0: ResSFL's "freeze" transfer) never steps its optimizer
  // (honest_step); it is built at the run's rate and set to 0.
  if (lr > 0.0) t.lr = lr;
  auto optimizer = train::make_optimizer(model->parameters(), t);
  train::set_learning_rate(*optimizer, lr);
  strategy_->begin_epoch(epoch, model);

  const uint64_t stream = 100000 * static_cast<uint64_t>(report.index + 1) + epoch;
  data::BatchIterator batches(shard, options.batch_size, /*shuffle=*/true,
                              options.seed * 1000003 + stream);
  std::mt19937_64 augment_rng = make_rng(options.seed, stream);
  std::unique_ptr<ProgressBar> progress;
  if (show_progress_) {
    progress = std::make_unique<ProgressBar>(
        fmt::format("{} epoch {}/{}", options.client_id(report.index), epoch + 1, options.epochs),
        n_batches);
  }
  bool dropped = false;
  bool restarted = false;
  for (int64_t b = 0; b < n_batches && !dropped; ++b) {
    torch::Tensor x, y;
    if (!batches.next(x, y)) {  // a shard shorter than the epoch wraps around
      batches.reset();
      batches.next(x, y);
    }
    if (options.augment_pad > 0 || options.augment_flip) {
      x = data::augment(x, options.augment_pad, options.augment_flip, augment_rng);
    }
    StepContext context{model,
                        *optimizer,
                        options,
                        epoch,
                        b,
                        [&](const torch::Tensor& z, const torch::Tensor& labels) {
                          net::Message step;
                          step.method = "step";
                          step.meta = {{"epoch", epoch}, {"batch", b}, {"session", session}};
                          step.add("z", z);
                          step.add("y", labels);
                          const net::Message reply = call_until_answered(*link_, step);
                          restarted = reply.meta.value("restarted", false);
                          if (restarted || reply.meta.value("dropped", false)) {
                            return torch::Tensor();
                          }
                          return reply.tensor("grad");
                        }};
    dropped = !strategy_->step(context, x, y);
    if (restarted) return EpochEnd::restarted;
    if (!dropped) ++report.steps;
    if (progress) progress->update();
    if (stop_after_steps > 0 && report.steps >= stop_after_steps) return EpochEnd::stopped;
  }
  if (dropped) return EpochEnd::dropped;
  net::Message end;
  end.method = "end_epoch";
  end.meta = {{"epoch", epoch}, {"session", session}};
  for (const auto& [name, tensor] : strategy_->end_epoch(epoch, model)) end.add(name, tensor);
  const net::Message reply = link_->call(end);
  if (reply.meta.value("restarted", false)) return EpochEnd::restarted;
  return reply.meta.value("accepted", false) ? EpochEnd::submitted : EpochEnd::dropped;
}

}  // namespace tessera::splitfed
