// The SFL protocol in process: V1 and V2 match a naive single-threaded reference, client
// sampling, dropouts and rejoin, refusal of bad messages, and checkpoint/resume.
#include <gtest/gtest.h>

#include <limits>
#include <thread>

#include "sfl_test_util.h"
#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/seed.h"
#include "tessera/splitfed/client.h"
#include "tessera/splitfed/runtime.h"
#include "test_support.h"

namespace tessera::splitfed {
namespace {

using testing_util::tiny_options;

data::Dataset tiny_data(int64_t n, uint64_t seed) { return data::make_synthetic(n, 1, 8, 3, seed); }

/// Naive reference of research/sfl.md 1.2, written without the server/turn machinery: one loop,
/// separate models, the same initial weights, shards and batch order as the runtime.
State reference_run(const SflOptions& o, const data::Dataset& train, State* server_out) {
  seed_everything(o.seed);
  auto [global_client, server] = make_split(o.model, o.split);
  State global = get_state(*global_client);
  auto server_opt = train::make_optimizer(server->parameters(), o.schedule_options());
  std::vector<ClientSide> clients;
  std::vector<data::Dataset> shards;
  for (int64_t k = 0; k < o.n_clients; ++k) {
    clients.push_back(make_split(o.model, o.split).first);
    shards.push_back(train.subset(client_shard(o, train.labels, k)));
  }
  const int64_t n_batches = (o.n_train / o.n_clients + o.batch_size - 1) / o.batch_size;
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    std::vector<std::unique_ptr<torch::optim::Optimizer>> opts;
    std::vector<std::unique_ptr<data::BatchIterator>> iters;
    for (int64_t k = 0; k < o.n_clients; ++k) {
      load_state(*clients[k], global);
      opts.push_back(train::make_optimizer(clients[k]->parameters(), o.schedule_options()));
      const uint64_t stream = 100000 * static_cast<uint64_t>(k + 1) + epoch;
      iters.push_back(std::make_unique<data::BatchIterator>(shards[k], o.batch_size, true,
                                                            o.seed * 1000003 + stream));
    }
    for (int64_t b = 0; b < n_batches; ++b) {
      if (o.ordering == Ordering::v1) server_opt->zero_grad();
      for (int64_t k = 0; k < o.n_clients; ++k) {
        torch::Tensor x, y;
        if (!iters[k]->next(x, y)) {
          iters[k]->reset();
          iters[k]->next(x, y);
        }
        opts[k]->zero_grad();
        if (o.ordering == Ordering::v2) server_opt->zero_grad();
        const torch::Tensor z = clients[k]->forward(x);
        torch::Tensor zs = z.detach().clone().requires_grad_(true);
        torch::nn::functional::cross_entropy(server->forward(zs), y).backward();
        if (o.ordering == Ordering::v2) server_opt->step();
        (z * zs.grad()).sum().backward();
        opts[k]->step();
      }
      if (o.ordering == Ordering::v1) server_opt->step();
    }
    std::vector<State> states;
    for (auto& c : clients) states.push_back(get_state(*c));
    global = average_states(states);
  }
  *server_out = get_state(*server);
  return global;
}

void expect_states_near(const State& a, const State& b, const std::string& what) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a[i].first, b[i].first);
    EXPECT_TRUE(torch::allclose(a[i].second.to(torch::kFloat64), b[i].second.to(torch::kFloat64),
                                1e-4, 1e-5))
        << what << " " << a[i].first;
  }
}

class SflProtocol : public testing::SeededTest {};

TEST_F(SflProtocol, V1AndV2MatchTheNaiveReference) {
  const data::Dataset train = tiny_data(48, 1);
  for (const Ordering ordering : {Ordering::v2, Ordering::v1}) {
    const SflOptions o = tiny_options(train.size(), 3, ordering);
    const RunResult run = run_in_process(o, train, nullptr);
    State ref_server;
    const State ref_client = reference_run(o, train, &ref_server);
    expect_states_near(run.client_state, ref_client, ordering_name(ordering) + " client");
    expect_states_near(run.server_state, ref_server, ordering_name(ordering) + " server");
    ASSERT_EQ(run.history.size(), 2u);
    EXPECT_EQ(run.history[0].n_steps, 3 * 2);  // 3 clients x 2 batches of 8 (16 samples each)
  }
}

/// An honest client that also draws from LibTorch's default generator before every step (under
/// the RNG lock, as the runtime's own draws are), as other parties sharing the process may.
class RngDrawingClient : public ClientStrategy {
 public:
  bool step(StepContext& context, const torch::Tensor& x, const torch::Tensor& y) override {
    {
      std::lock_guard<std::mutex> lock(torch_rng_mutex());
      torch::rand({17});
    }
    return ClientStrategy::step(context, x, y);
  }
};

TEST_F(SflProtocol, OptionsFromJsonRefuseUnknownKeysAndFractionalCounts) {
  const SflOptions o = tiny_options(64, 3, Ordering::v2);
  EXPECT_EQ(SflOptions::from_json(o.to_json()).to_json(), o.to_json());
  auto misspelt = o.to_json();
  misspelt["n_client"] = 3;
  EXPECT_NE(
      testing::error_of([&] { SflOptions::from_json(misspelt); }).find("unknown key 'n_client'"),
      std::string::npos);
  for (const char* key : {"n_clients", "epochs", "batch_size"}) {
    auto fractional = o.to_json();
    fractional[key] = 1.9;
    EXPECT_NE(testing::error_of([&] { SflOptions::from_json(fractional); }).find(key),
              std::string::npos)
        << key;
  }
}

TEST_F(SflProtocol, ServerDropoutDoesNotDependOnOtherDrawsFromTheGenerator) {
  // The server keeps dropout layers (cut 4 of the tiny VGG leaves it the classifier); its masks
  // must come from (seed, epoch, turn) alone, or in-process and gRPC runs differ.
  const data::Dataset train = tiny_data(48, 6);
  SflOptions o = tiny_options(train.size(), 3, Ordering::v2);
  o.model.extra = {{"dropout", 0.5}};
  const RunResult plain = run_in_process(o, train, nullptr);
  const RunResult disturbed =
      run_in_process(o, train, nullptr, {}, {{1, std::make_shared<RngDrawingClient>()}});
  expect_states_near(disturbed.server_state, plain.server_state, "server");
  expect_states_near(disturbed.client_state, plain.client_state, "client");
}

TEST_F(SflProtocol, OneClientV2EqualsCentralTrainingForOneEpoch) {
  // With K = 1 and one epoch, SFL is plain SGD on the uncut model over the same batches.
  const data::Dataset train = tiny_data(40, 2);
  SflOptions o = tiny_options(train.size(), 1, Ordering::v2);
  o.epochs = 1;
  const RunResult run = run_in_process(o, train, nullptr);
  seed_everything(o.seed);
  auto [c, s] = make_split(o.model, o.split);  // same initial weights as the server made
  std::vector<torch::Tensor> params = c->parameters();
  for (const auto& p : s->parameters()) params.push_back(p);
  auto optimizer = train::make_optimizer(params, o.schedule_options());
  const data::Dataset shard = train.subset(client_shard(o, train.labels, 0));
  data::BatchIterator batches(shard, o.batch_size, true, o.seed * 1000003 + 100000);
  torch::Tensor x, y;
  while (batches.next(x, y)) {
    optimizer->zero_grad();
    torch::nn::functional::cross_entropy(s->forward(c->forward(x)), y).backward();
    optimizer->step();
  }
  expect_states_near(run.client_state, get_state(*c), "client");
  expect_states_near(run.server_state, get_state(*s), "server");
}

TEST_F(SflProtocol, ClientSamplingIsSeededAndSized) {
  const data::Dataset train = tiny_data(60, 3);
  SflOptions o = tiny_options(train.size(), 5, Ordering::v2);
  o.sample_ratio = 0.4;
  o.epochs = 3;
  SplitServer server(o, {});
  for (int64_t e = 0; e < 3; ++e) {
    const auto active = server.active_clients(e);
    ASSERT_EQ(active.size(), 2u);
    EXPECT_LT(active[0], active[1]);
    EXPECT_EQ(active, server.active_clients(e));
  }
  server.stop();
  const RunResult run = run_in_process(o, train, nullptr);
  for (const auto& r : run.history) EXPECT_EQ(r.n_active, 2);
  int64_t active_epochs = 0;
  for (const auto& c : run.clients) active_epochs += c.epochs_active;
  EXPECT_EQ(active_epochs, 2 * 3);
}

TEST_F(SflProtocol, AKilledClientIsDroppedAndTheRunGoesOnThenItRejoins) {
  const data::Dataset train = tiny_data(48, 4);
  SflOptions o = tiny_options(train.size(), 3, Ordering::v2);
  o.epochs = 3;
  ServerSettings settings;
  settings.step_timeout_ms = 300;
  SplitServer server(o, settings);
  std::vector<std::thread> threads;
  std::vector<ClientReport> reports(2);
  for (int64_t k = 0; k < 2; ++k) {
    threads.emplace_back([&, k] {
      reports[k] = SplitClient(std::make_unique<LocalLink>(server, o.client_id(k)), train).run();
    });
  }
  // Client 2 "dies" after one step (never sends again), then a new process of it rejoins.
  ClientReport dead = SplitClient(std::make_unique<LocalLink>(server, "client2"), train).run(1);
  EXPECT_EQ(dead.steps, 1);
  const ClientReport rejoined =
      SplitClient(std::make_unique<LocalLink>(server, "client2"), train).run();
  for (auto& t : threads) t.join();
  ASSERT_TRUE(server.finished());
  const auto history = server.history();
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history[0].n_dropped, 1);
  EXPECT_GE(rejoined.epochs_active, 1) << "the restarted client takes part again";
  EXPECT_EQ(reports[0].epochs_active, 3);
  EXPECT_EQ(history.back().n_dropped, 0);
}

TEST_F(SflProtocol, ServerKnowsWhenEveryClientWasToldTheRunIsOver) {
  const data::Dataset train = tiny_data(24, 5);
  SflOptions o = tiny_options(train.size(), 2, Ordering::v2);
  o.epochs = 1;
  SplitServer server(o, ServerSettings{});
  EXPECT_FALSE(server.wait_all_told_finished(20)) << "nobody has been told yet";
  SplitClient(std::make_unique<LocalLink>(server, "client0"), train).run(1);  // dies mid-run
  std::thread other(
      [&] { SplitClient(std::make_unique<LocalLink>(server, "client1"), train).run(); });
  // client0 restarts and finishes: both have now been told (a gRPC server may exit at once).
  SplitClient(std::make_unique<LocalLink>(server, "client0"), train).run();
  other.join();
  ASSERT_TRUE(server.finished());
  EXPECT_TRUE(server.wait_all_told_finished(0));
}

TEST_F(SflProtocol, BadMessagesAreRefusedAndTheServerKeepsServing) {
  const data::Dataset train = tiny_data(48, 5);
  SflOptions o = tiny_options(train.size(), 2, Ordering::v2);
  o.epochs = 1;
  SplitServer server(o, {});
  net::Message begin;
  begin.method = "begin_epoch";
  begin.meta = {{"epoch", 0}};
  const int64_t session = server.handle("client0", begin).meta.at("session").get<int64_t>();
  auto step = [session](torch::Tensor z, torch::Tensor y, int64_t batch = 0) {
    net::Message m;
    m.method = "step";
    m.meta = {{"epoch", 0}, {"batch", batch}, {"session", session}};
    m.tensors = {{"z", z}, {"y", y}};
    return m;
  };
  const torch::Tensor y = torch::zeros({4}, torch::kInt64);
  // Smashed data at cut 4 of the tiny VGG: [B, 8, 2, 2].
  EXPECT_THROW(server.handle("client0", step(torch::zeros({4, 8, 2, 3}), y)), Error);
  EXPECT_THROW(server.handle("client0", step(torch::zeros({4, 8, 2, 2}, torch::kFloat64), y)),
               Error);
  torch::Tensor nan = torch::zeros({4, 8, 2, 2});
  nan[2][0][0][0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(server.handle("client0", step(nan, y)), Error);
  EXPECT_THROW(server.handle("client0",
                             step(torch::zeros({4, 8, 2, 2}), torch::full({4}, 3, torch::kInt64))),
               Error);  // label 3 of 3 classes
  EXPECT_THROW(
      server.handle("client0", step(torch::zeros({4, 8, 2, 2}), torch::zeros({5}, torch::kInt64))),
      Error);
  EXPECT_THROW(server.handle("client0", step(torch::zeros({4, 8, 2, 2}), y, 99)), Error);
  EXPECT_THROW(server.handle("client9", step(torch::zeros({4, 8, 2, 2}), y)), Error);
  net::Message unknown;
  unknown.method = "drop_table";
  EXPECT_THROW(server.handle("client0", unknown), Error);
  net::Message bad_state;
  bad_state.method = "end_epoch";
  bad_state.meta = {{"epoch", 0}, {"session", session}};
  bad_state.tensors = {{"conv1.conv.weight", torch::zeros({1})}};
  EXPECT_THROW(server.handle("client0", bad_state), Error);
  // Nothing was trained on the refused messages, and a normal run still completes.
  std::vector<std::thread> threads;
  for (int64_t k = 0; k < 2; ++k) {
    threads.emplace_back(
        [&, k] { SplitClient(std::make_unique<LocalLink>(server, o.client_id(k)), train).run(); });
  }
  for (auto& t : threads) t.join();
  EXPECT_TRUE(server.finished());
  EXPECT_EQ(server.history().at(0).n_steps, 2 * 3);
}

TEST_F(SflProtocol, CheckpointResumesWithoutLosingFinishedEpochs) {
  testing::TempDir dir;
  const data::Dataset train = tiny_data(48, 6);
  const SflOptions o = tiny_options(train.size(), 2, Ordering::v2);
  ServerSettings settings;
  settings.checkpoint_path = dir.file("server.ckpt");
  const RunResult run = run_in_process(o, train, nullptr, settings);
  ASSERT_TRUE(file_exists(settings.checkpoint_path));
  settings.resume = true;
  SplitServer resumed(o, settings);
  EXPECT_EQ(resumed.epochs_done(), 2);
  EXPECT_TRUE(resumed.finished());
  EXPECT_EQ(resumed.history().size(), 2u);
  expect_states_near(resumed.client_state(), run.client_state, "client");
  expect_states_near(resumed.server_state(), run.server_state, "server");
  // Other options must not silently resume from this checkpoint; a corrupt one is an error.
  SflOptions other = o;
  other.lr = 0.01;
  EXPECT_THROW(SplitServer(other, settings), Error);
  testing::write_bytes(settings.checkpoint_path, "not a checkpoint");
  EXPECT_THROW(SplitServer(o, settings), Error);
}

TEST_F(SflProtocol, ResumeContinuesFromTheLastFinishedEpoch) {
  // A 1-epoch run's checkpoint, resumed under a 2-epoch schedule, must equal a 2-epoch run.
  // (Options must match for a resume, so the 1-epoch checkpoint is made by a 2-epoch server
  // stopped after its first epoch.)
  testing::TempDir dir;
  const data::Dataset train = tiny_data(48, 8);
  const SflOptions o = tiny_options(train.size(), 2, Ordering::v2);
  const RunResult straight = run_in_process(o, train, nullptr);
  ServerSettings settings;
  settings.checkpoint_path = dir.file("server.ckpt");
  {
    SplitServer first(o, settings);
    std::vector<std::thread> threads;
    for (int64_t k = 0; k < 2; ++k) {
      threads.emplace_back([&, k] {
        try {
          SplitClient(std::make_unique<LocalLink>(first, o.client_id(k)), train).run();
        } catch (const Error&) {
        }
      });
    }
    while (first.epochs_done() < 1) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    first.stop();  // "killed" during epoch 1; the checkpoint holds epoch 0
    for (auto& t : threads) t.join();
  }
  settings.resume = true;
  SplitServer second(o, settings);
  EXPECT_GE(second.epochs_done(), 1);
  std::vector<std::thread> threads;
  for (int64_t k = 0; k < 2; ++k) {
    threads.emplace_back(
        [&, k] { SplitClient(std::make_unique<LocalLink>(second, o.client_id(k)), train).run(); });
  }
  for (auto& t : threads) t.join();
  ASSERT_TRUE(second.finished());
  EXPECT_EQ(second.history().size(), 2u);
  expect_states_near(second.client_state(), straight.client_state, "client");
  expect_states_near(second.server_state(), straight.server_state, "server");
}

}  // namespace
}  // namespace tessera::splitfed
