// Federated rounds: the job message round trip, checks on incoming parameters, a failing node
// dropped from the average (equal to a run without it), and seeded in-process runs that repeat.
#include <gtest/gtest.h>

#include "tessera/metagater/federated.h"
#include "test_support.h"

namespace tessera::metagater {
namespace {

using tessera::testing::error_of;
using tessera::testing::SeededTest;

class Federated : public SeededTest {};

JobTemplate small_job() {
  JobTemplate job;
  job.net.image_size = 8;
  job.net.width = 4;
  job.net.layers = 2;
  job.net.ways = 2;
  job.task.ways = 2;
  job.task.shots = 1;
  job.task.queries = 2;
  return job;
}

FedOptions small_fed() {
  FedOptions fed;
  fed.rounds = 3;
  fed.nodes_per_round = 3;
  fed.local.steps = 1;
  fed.local.tasks_per_step = 1;
  fed.seed = 5;
  return fed;
}

std::shared_ptr<const TaskSource> small_source() {
  return std::make_shared<TaskSource>(data::make_synthetic(120, 1, 8, 4, 2));
}

bool same(const Params& a, const Params& b) {
  const auto x = a.all(), y = b.all();
  if (x.size() != y.size()) return false;
  for (size_t i = 0; i < x.size(); ++i)
    if (!torch::equal(x[i], y[i])) return false;
  return true;
}

TEST_F(Federated, JobMessageRoundTrips) {
  const JobTemplate t = small_job();
  NodeJob job{t.net, t.task, t.loss, t.adapt, LocalOptions{}, NodeSpec{3, {1, 2, 0}, 2}, 7, 11};
  const GatedNet net(t.net);
  const net::Message m = encode_job(job, net->params());
  const NodeJob back = decode_job(m);
  EXPECT_EQ(back.node.classes, job.node.classes);
  EXPECT_EQ(back.node.rotation, 2);
  EXPECT_EQ(back.round, 7);
  EXPECT_EQ(back.seed, 11u);
  EXPECT_EQ(back.net.to_json(), t.net.to_json());
  EXPECT_TRUE(same(decode_params(m, t.net), net->params()));
}

TEST_F(Federated, BadParametersAreRefused) {
  const JobTemplate t = small_job();
  const GatedNet net(t.net);
  Params p = net->params().clone();
  p.backbone[0][0][0][0][0] = std::nan("");
  net::Message m;
  encode_params(m, p);
  EXPECT_THROW(decode_params(m, t.net), Error);
  GatedNetOptions wider = t.net;
  wider.width = 5;
  net::Message ok;
  encode_params(ok, net->params());
  EXPECT_THROW(decode_params(ok, wider), Error);
}

TEST_F(Federated, FailingNodeIsDroppedFromTheAverage) {
  const JobTemplate job = small_job();
  const auto nodes = make_nodes(3, 3, 4, {0}, 0, 1);
  const GatedNet net(job.net);
  const Params init = net->params().clone();
  auto links = in_process_links(small_source(), 3);
  auto broken = links;
  broken[1] = [](const net::Message&) -> net::Message { throw Error("node timed out"); };
  const FedRunResult with_failure = run_federated(job, nodes, broken, init, small_fed());
  EXPECT_EQ(with_failure.dropped, 3);
  EXPECT_EQ(with_failure.history[0].dropped, (std::vector<int64_t>{1}));
  EXPECT_EQ(with_failure.history[0].nodes, (std::vector<int64_t>{0, 2}));
  // The same as a run over nodes 0 and 2 only.
  FedOptions two = small_fed();
  two.nodes_per_round = 2;
  const FedRunResult without =
      run_federated(job, {nodes[0], nodes[2]}, {links[0], links[2]}, init, two);
  EXPECT_TRUE(same(with_failure.params, without.params));
  EXPECT_FALSE(same(with_failure.params, init));
}

TEST_F(Federated, SeededRunsRepeatAndParallelCallsGiveTheSameModel) {
  const JobTemplate job = small_job();
  const auto nodes = make_nodes(3, 3, 4, {0, 1}, 0, 1);
  const GatedNet net(job.net);
  const Params init = net->params().clone();
  const auto links = in_process_links(small_source(), 3);
  const FedRunResult a = run_federated(job, nodes, links, init, small_fed());
  const FedRunResult b = run_federated(job, nodes, links, init, small_fed());
  EXPECT_TRUE(same(a.params, b.params));
  FedOptions parallel = small_fed();
  parallel.parallel = true;
  const FedRunResult c = run_federated(job, nodes, links, init, parallel);
  for (size_t i = 0; i < a.params.all().size(); ++i)
    EXPECT_TRUE(torch::allclose(a.params.all()[i], c.params.all()[i], 1e-5, 1e-6));
}

TEST_F(Federated, BadRequestsAreClearErrors) {
  NodeService service(small_source());
  net::Message m;
  m.method = "train_everything";
  EXPECT_NE(error_of([&] { service.handle(m); }).find("unknown method"), std::string::npos);
  m.method = "local_update";
  EXPECT_NE(error_of([&] { service.handle(m); }).find("malformed"), std::string::npos);
  FedOptions fed = small_fed();
  fed.local.lr = 0.0;
  EXPECT_THROW(fed.validate(), Error);
}

}  // namespace
}  // namespace tessera::metagater
