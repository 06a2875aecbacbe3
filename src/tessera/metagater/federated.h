// Federated meta-learning (research/efficient.md 3.2, after Lin et al. ICDCS 2020 and
// Per-FedAvg): each round the platform sends (theta, phi) to a subset of the nodes, each node runs
// local steps on its own tasks (meta-steps through the two-stage inner update, or plain steps on
// the joint loss for the FedAvg baselines) and returns its parameters, and the platform averages
// the replies. A node is reached through a link: in process (a direct call of NodeService) or a
// gRPC client (net/transport.h); both carry the same net::Message, so the same seed gives the
// same run. A node whose call fails or times out is dropped from that round's average.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tessera/metagater/gated.h"
#include "tessera/metagater/meta.h"
#include "tessera/metagater/tasks.h"
#include "tessera/net/message.h"

namespace tessera::metagater {

/// What a node does with the parameters it receives in one round.
struct LocalOptions {
  int64_t steps = 2;               ///< local steps per round (T0)
  int64_t tasks_per_step = 2;      ///< tasks averaged in one step's loss (the meta-batch)
  std::string optimizer = "adam";  ///< train::make_optimizer: "sgd" (no momentum) or "adam"
  double lr = 5e-3;                ///< gamma, the outer (meta) learning rate
  bool meta = true;                ///< false: plain steps on the joint loss (FedAvg)
  bool second_order = true;        ///< meta-gradient through the inner step (false: first order)

  void validate() const;
  nlohmann::json to_json() const;
  static LocalOptions from_json(const nlohmann::json& j);
};

/// Everything a node needs for one round besides its data: sent in every request.
struct NodeJob {
  GatedNetOptions net;
  TaskOptions task;
  LossOptions loss;
  AdaptOptions adapt;
  LocalOptions local;
  NodeSpec node;
  int64_t round = 0;
  uint64_t seed = 0;
};

/// "local_update": meta = the job as JSON, tensors = the parameters; reply tensors = the new
/// parameters, meta {"loss": mean local loss}.
net::Message encode_job(const NodeJob& job, const Params& params);
NodeJob decode_job(const net::Message& request);
/// The parameter tensors of a message, each checked against the shapes of `net` (dtype, shape,
/// finite values).
Params decode_params(const net::Message& message, const GatedNetOptions& net);
void encode_params(net::Message& message, const Params& params);

/// A message with a method and no payload ("ping", "shutdown"; meta an empty JSON object, as
/// the transport requires).
net::Message control_message(const std::string& method);

/// One node's side: its task source, the handler of "local_update" (and "ping" and "shutdown",
/// which only acknowledge). Stateless across rounds apart from the data.
class NodeService {
 public:
  explicit NodeService(std::shared_ptr<const TaskSource> source);
  /// Runs the job's local steps through train::fit_epochs (one epoch of `steps` steps) and
  /// returns the new parameters. Task draws are seeded by (seed, node id, round).
  net::Message handle(const net::Message& request) const;

 private:
  std::shared_ptr<const TaskSource> source_;
};

/// The platform's view of a node: send a request, get the reply; throws on failure.
using NodeLink = std::function<net::Message(const net::Message& request)>;

struct FedOptions {
  int64_t rounds = 150;
  int64_t nodes_per_round = 4;  ///< drawn each round (seeded) from the links
  LocalOptions local;
  bool parallel = false;  ///< call the round's nodes concurrently (the gRPC links)
  uint64_t seed = 0;

  void validate() const;
  nlohmann::json to_json() const;
};

struct RoundRecord {
  int64_t round = 0;
  std::vector<int64_t> nodes;    ///< that replied, in link order
  std::vector<int64_t> dropped;  ///< that failed or timed out
  double loss = 0.0;             ///< mean of the replies' local losses
};

struct FedRunResult {
  Params params;
  std::vector<RoundRecord> history;
  double seconds = 0.0;
  int64_t dropped = 0;             ///< node-rounds dropped in all
  nlohmann::json to_json() const;  ///< loss curve and drops (no tensors)
};

/// The template of the requests a run sends (all but node, round and the parameters).
struct JobTemplate {
  GatedNetOptions net;
  TaskOptions task;
  LossOptions loss;
  AdaptOptions adapt;
};

/// Runs `fed.rounds` rounds over `nodes` (links[i] reaches nodes[i]) from `initial`; the
/// platform averages the replies with equal weights (every node's tasks have the same size).
FedRunResult run_federated(const JobTemplate& job, const std::vector<NodeSpec>& nodes,
                           const std::vector<NodeLink>& links, const Params& initial,
                           const FedOptions& fed);

/// In-process links: one NodeService per node over `source`.
std::vector<NodeLink> in_process_links(std::shared_ptr<const TaskSource> source, size_t n);

}  // namespace tessera::metagater
