// The SFL server against a poisoning client and a restarted server, in process (issue 22, items
// 10-12): robust aggregation against hand-computed values, an all-or-nothing step that leaves no
// trace, poisoned activations and states refused while honest clients finish, clipping of an
// in-bounds poisoned state, long-poll and "restarted" answers, and one token per client id.
#include <gtest/gtest.h>

#include <cmath>
#include <thread>

#include "sfl_test_util.h"
#include "tessera/core/error.h"
#include "tessera/core/timer.h"
#include "tessera/splitfed/client.h"
#include "tessera/splitfed/runtime.h"
#include "test_support.h"

namespace tessera::splitfed {
namespace {

using testing_util::tiny_options;

class SflRobust : public testing::SeededTest {};

data::Dataset tiny_data() { return data::make_synthetic(48, 1, 8, 3, 1); }

State one(const std::vector<double>& w, int64_t count) {
  return {{"w", torch::tensor(w, torch::kFloat32)}, {"n", torch::tensor({count}, torch::kInt64)}};
}

TEST_F(SflRobust, AggregationsMatchHandComputedValuesWithOneHugeState) {
  const State global = one({0, 0}, 0);
  const std::vector<State> states = {one({1, 2}, 2), one({3, 4}, 4), one({1e6, -1e6}, 9)};
  // Median and trimmed mean (k = 1 of 3): per coordinate the middle value.
  for (const Aggregation a : {Aggregation::median, Aggregation::trimmed_mean}) {
    const State r = aggregate_states(global, states, a, 2.0, 0.2);
    EXPECT_TRUE(torch::allclose(r[0].second, torch::tensor({3.0f, 2.0f}))) << aggregation_name(a);
    EXPECT_EQ(r[1].second.item<int64_t>(), 5);  // integers: the rounded mean
  }
  // Mean with clipping: update norms sqrt(5), 5, 1.414e6; median 5, so the third is scaled to
  // norm 10: (7.0711, -7.0711).
  const State clipped = aggregate_states(global, states, Aggregation::mean, 2.0, 0.2);
  const double c = 10.0 / std::sqrt(2.0);
  EXPECT_TRUE(torch::allclose(
      clipped[0].second,
      torch::tensor({static_cast<float>((4 + c) / 3), static_cast<float>((6 - c) / 3)}), 1e-4,
      1e-5));
  const State plain = aggregate_states(global, states, Aggregation::mean, 0.0, 0.2);
  EXPECT_NEAR(plain[0].second[0].item<double>(), (4 + 1e6) / 3, 1.0);
  EXPECT_EQ(parse_aggregation("trimmed_mean"), Aggregation::trimmed_mean);
  EXPECT_THROW(parse_aggregation("mode"), Error);
}

struct Session {
  int64_t session = 0;
};

Session begin(SplitServer& server, const std::string& id) {
  net::Message m;
  m.method = "begin_epoch";
  m.meta = {{"epoch", 0}};
  const net::Message reply = server.handle(id, m);
  return {reply.meta.at("session").get<int64_t>()};
}

net::Message step(const torch::Tensor& z, int64_t session, int64_t batch = 0) {
  net::Message m;
  m.method = "step";
  m.meta = {{"epoch", 0}, {"batch", batch}, {"session", session}};
  m.tensors = {{"z", z}, {"y", torch::zeros({z.size(0)}, torch::kInt64)}};
  return m;
}

bool states_equal(const State& a, const State& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!torch::equal(a[i].second, b[i].second)) return false;
  }
  return true;
}

TEST_F(SflRobust, AStepBeyondTheBoundsIsRolledBackWithoutATrace) {
  const SflOptions o = tiny_options(48, 2, Ordering::v2);
  ServerSettings settings;
  settings.max_abs_activation = 1e12;  // lets the 1e6 smashed data in; its BN variance is not
  // Server A: client0's step of 1e6 runs and is rolled back, then client1 steps.
  SplitServer a(o, settings);
  const int64_t sa = begin(a, "client0").session;
  const State before = a.server_state();
  const std::string why = testing::error_of([&] {
    a.handle("client0", step(torch::full({4, 8, 2, 2}, 1e6), sa));
  });
  EXPECT_NE(why.find("rolled back"), std::string::npos) << why;
  EXPECT_TRUE(states_equal(a.server_state(), before)) << "weights and BN statistics restored";
  const torch::Tensor z = torch::rand({4, 8, 2, 2});
  a.handle("client1", step(z, sa));
  // Server B: client0 is dropped without a step (refused at the input bound), then client1.
  SplitServer b(o, settings);
  const int64_t sb = begin(b, "client0").session;
  EXPECT_THROW(b.handle("client0", step(torch::full({4, 8, 2, 2}, 1e13), sb)), Error);
  b.handle("client1", step(z, sb));
  EXPECT_FALSE(states_equal(a.server_state(), before));
  EXPECT_TRUE(states_equal(a.server_state(), b.server_state()))
      << "the rolled-back step left nothing behind (weights, BN statistics, momentum)";
  a.stop();
  b.stop();
}

RunResult run_with(const SflOptions& o, const ServerSettings& settings,
                   std::shared_ptr<ClientStrategy> poisoner, std::vector<ClientReport>* reports) {
  const data::Dataset train = tiny_data();
  SplitServer server(o, settings);
  std::vector<std::thread> threads;
  reports->assign(o.n_clients, {});
  for (int64_t k = 0; k < o.n_clients; ++k) {
    threads.emplace_back([&, k] {
      (*reports)[k] = SplitClient(std::make_unique<LocalLink>(server, o.client_id(k)), train,
                                  k == o.n_clients - 1 ? poisoner : nullptr)
                          .run();
    });
  }
  for (auto& t : threads) t.join();
  RunResult r;
  r.history = server.history();
  r.client_state = server.client_state();
  r.server_state = server.server_state();
  return r;
}

bool finite(const State& s) {
  for (const auto& [name, t] : s) {
    if (t.is_floating_point() && !torch::isfinite(t).all().item<bool>()) return false;
  }
  return true;
}

TEST_F(SflRobust, OutOfBoundsPoisonIsRefusedAndHonestClientsFinish) {
  const SflOptions o = tiny_options(48, 3, Ordering::v2);
  for (const auto& poison :
       {std::make_shared<PoisonStrategy>(1e30, 1.0), std::make_shared<PoisonStrategy>(1.0, 1e30)}) {
    std::vector<ClientReport> reports;
    const RunResult r = run_with(o, {}, poison, &reports);
    ASSERT_EQ(r.history.size(), 2u);
    for (const auto& e : r.history) EXPECT_EQ(e.n_dropped, 1);
    EXPECT_TRUE(finite(r.client_state) && finite(r.server_state));
    for (int k = 0; k < 2; ++k) {
      EXPECT_EQ(reports[k].epochs_active, 2);
      EXPECT_EQ(reports[k].epochs_refused, 0);
    }
    EXPECT_EQ(reports[2].epochs_refused, 2) << "the poisoner skips its refused epochs";
  }
}

TEST_F(SflRobust, AnInBoundsPoisonedStateIsClippedOrOutvoted) {
  const SflOptions o = tiny_options(48, 3, Ordering::v2);
  std::vector<ClientReport> reports;
  const RunResult honest = run_with(o, {}, nullptr, &reports);
  const auto poison = std::make_shared<PoisonStrategy>(1.0, 50.0);
  ServerSettings plain;
  plain.clip_factor = 0.0;
  const double d_plain =
      update_norm(run_with(o, plain, poison, &reports).client_state, honest.client_state);
  const double d_clipped =
      update_norm(run_with(o, {}, poison, &reports).client_state, honest.client_state);
  EXPECT_EQ(reports[2].epochs_active, 2) << "in bounds: accepted, but clipped";
  ServerSettings median;
  median.aggregation = Aggregation::median;
  const double d_median =
      update_norm(run_with(o, median, poison, &reports).client_state, honest.client_state);
  EXPECT_GT(d_plain, 10.0 * d_clipped) << d_plain << " vs " << d_clipped;
  EXPECT_GT(d_plain, 10.0 * d_median) << d_plain << " vs " << d_median;
}

TEST_F(SflRobust, WaitingCallsLongPollAndOldSessionsAreToldToRestart) {
  const SflOptions o = tiny_options(48, 2, Ordering::v2);
  ServerSettings settings;
  settings.long_poll_ms = 200;
  SplitServer server(o, settings);
  const int64_t session = begin(server, "client0").session;
  net::Message later;
  later.method = "begin_epoch";
  later.meta = {{"epoch", 1}};
  Timer timer;
  EXPECT_TRUE(server.handle("client1", later).meta.value("pending", false));
  EXPECT_LT(timer.elapsed_s(), 5.0);
  // The caller's deadline (100 ms away) and its cancellation end the wait sooner.
  timer.reset();
  EXPECT_TRUE(
      server.handle("client1", later, {now_us() + 100000, {}}).meta.value("pending", false));
  EXPECT_TRUE(
      server.handle("client1", later, {0, [] { return true; }}).meta.value("pending", false));
  EXPECT_LT(timer.elapsed_s(), 5.0);
  // client1's step waits for client0's turn: pending, not a blocked thread.
  EXPECT_TRUE(server.handle("client1", step(torch::rand({4, 8, 2, 2}), session))
                  .meta.value("pending", false));
  // A step or state from before a restart: "restarted".
  EXPECT_TRUE(server.handle("client0", step(torch::rand({4, 8, 2, 2}), session + 1))
                  .meta.value("restarted", false));
  net::Message end;
  end.method = "end_epoch";
  end.meta = {{"epoch", 0}, {"session", session + 1}};
  for (const auto& [name, t] : server.client_state()) end.tensors.emplace_back(name, t);
  EXPECT_TRUE(server.handle("client0", end).meta.value("restarted", false));
  server.stop();
}

TEST_F(SflRobust, EveryClientNeedsItsOwnToken) {
  testing::TempDir dir;
  const SflOptions o = tiny_options(48, 2, Ordering::v2);
  auto tokens_from = [&](const std::string& text) {
    testing::write_bytes(dir.file("tokens.txt"), text);
    return client_tokens(dir.file("tokens.txt"), o);
  };
  EXPECT_EQ(tokens_from("client0 a1\nclient1 b2\n").at("client1"), "b2");
  for (const std::string bad :
       {"client0 same\nclient1 same\n", "client0 a1\n", "client0 a1\nclient0 b2\nclient1 c3\n",
        "client0 a1\nclient1 b2\nclient7 c3\n", "client0 a1 client1\n"}) {
    EXPECT_THROW(tokens_from(bad), Error) << bad;
  }
  EXPECT_THROW(client_tokens("", o), Error);
  testing::write_bytes(dir.file("tokens.txt"), "client0 a1\nclient1 b2\n");
  testing::write_bytes(dir.file("mine.txt"), "s3cret\n");
  EXPECT_EQ(read_client_token(dir.file("mine.txt"), "client1"), "s3cret");
  EXPECT_EQ(read_client_token(dir.file("tokens.txt"), "client1"), "b2");
  EXPECT_THROW(read_client_token(dir.file("tokens.txt"), "client5"), Error);
}

}  // namespace
}  // namespace tessera::splitfed
