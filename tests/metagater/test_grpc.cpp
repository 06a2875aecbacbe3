// MetaGater over gRPC on loopback: a node server in a thread gives the same model as the
// in-process links; an unreachable node is dropped from every round instead of waited for.
#include <gtest/gtest.h>

#include <future>
#include <thread>

#include "tessera/metagater/grpc.h"
#include "test_support.h"

namespace tessera::metagater {
namespace {

using tessera::testing::SeededTest;

class Grpc : public SeededTest {};

TEST_F(Grpc, SameModelAsInProcessAndUnreachableNodesAreDropped) {
  JobTemplate job;
  job.net.image_size = 8;
  job.net.width = 4;
  job.net.layers = 2;
  job.net.ways = 2;
  job.task.ways = 2;
  job.task.shots = 1;
  job.task.queries = 2;
  FedOptions fed;
  fed.rounds = 2;
  fed.nodes_per_round = 3;
  fed.local.steps = 1;
  fed.local.tasks_per_step = 1;
  fed.seed = 3;
  const auto nodes = make_nodes(3, 3, 4, {0, 1}, 0, 2);
  auto source = std::make_shared<TaskSource>(data::make_synthetic(120, 1, 8, 4, 2));
  const Params init = GatedNet(job.net)->params().clone();

  net::ServerOptions server;
  server.address = "127.0.0.1:0";
  server.tokens = {{kPlatformId, "secret"}};
  std::promise<int> port;
  std::thread serving([&] { serve_node(server, source, [&](int p) { port.set_value(p); }); });
  const std::string address = "127.0.0.1:" + std::to_string(port.get_future().get());
  // One server plays all three nodes (the node spec travels in each request).
  const auto remote = grpc_links({address, address, address}, "secret", 30000);
  FedOptions parallel = fed;
  parallel.parallel = true;
  const FedRunResult over_grpc = run_federated(job, nodes, remote, init, parallel);
  const FedRunResult local = run_federated(job, nodes, in_process_links(source, 3), init, fed);
  EXPECT_EQ(over_grpc.dropped, 0);
  const auto a = over_grpc.params.all(), b = local.params.all();
  for (size_t i = 0; i < a.size(); ++i) EXPECT_TRUE(torch::allclose(a[i], b[i], 1e-5, 1e-6));

  // Node 1 unreachable: dropped in each round; the others still train.
  auto partial = grpc_links({address, "127.0.0.1:1", address}, "secret", 2000);
  const FedRunResult dropped = run_federated(job, nodes, partial, init, parallel);
  EXPECT_EQ(dropped.dropped, 2);
  EXPECT_EQ(dropped.history[1].nodes, (std::vector<int64_t>{0, 2}));
  // A wrong token is refused, so that node is dropped too.
  auto wrong = grpc_links({address}, "not-the-secret", 2000);
  EXPECT_EQ(run_federated(job, {nodes[0]}, wrong, init, fed).dropped, 2);

  shutdown_nodes({remote[0]});  // the one server
  serving.join();
}

}  // namespace
}  // namespace tessera::metagater
