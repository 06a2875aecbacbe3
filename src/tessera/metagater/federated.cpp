// The federated rounds: job messages, the node's local steps (train::fit_epochs), the platform's
// average over the nodes that replied.
#include "tessera/metagater/federated.h"

#include <algorithm>
#include <exception>
#include <mutex>
#include <thread>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/random.h"
#include "tessera/core/seed.h"
#include "tessera/core/timer.h"
#include "tessera/train/train.h"

namespace tessera::metagater {

namespace {

GatedNetOptions net_from_json(const nlohmann::json& j) {
  GatedNetOptions o;
  o.in_channels = j.at("in_channels").get<int64_t>();
  o.image_size = j.at("image_size").get<int64_t>();
  o.width = j.at("width").get<int64_t>();
  o.layers = j.at("layers").get<int64_t>();
  o.ways = j.at("ways").get<int64_t>();
  o.gated = j.at("gated").get<bool>();
  o.gate_hidden = j.at("gate_hidden").get<int64_t>();
  o.gate_bias_init = j.at("gate_bias_init").get<double>();
  return o;
}

std::string tensor_name(char kind, size_t i) { return std::string(1, kind) + std::to_string(i); }

uint64_t job_stream(int64_t node, int64_t round) {
  return 0x6a6f62ULL ^ (static_cast<uint64_t>(node) << 32) ^ static_cast<uint64_t>(round);
}

}  // namespace

void LocalOptions::validate() const {
  TESSERA_CHECK(steps >= 1, "local steps must be >= 1 (got {})", steps);
  TESSERA_CHECK(tasks_per_step >= 1, "tasks per step must be >= 1 (got {})", tasks_per_step);
  TESSERA_CHECK(optimizer == "sgd" || optimizer == "adam",
                "local optimizer must be sgd or adam (got '{}')", optimizer);
  TESSERA_CHECK(lr > 0, "the meta (outer) learning rate must be > 0 (got {})", lr);
}

nlohmann::json LocalOptions::to_json() const {
  return {{"steps", steps},         {"tasks_per_step", tasks_per_step},
          {"optimizer", optimizer}, {"lr", lr},
          {"meta", meta},           {"second_order", second_order}};
}

LocalOptions LocalOptions::from_json(const nlohmann::json& j) {
  LocalOptions o;
  o.steps = j.at("steps").get<int64_t>();
  o.tasks_per_step = j.at("tasks_per_step").get<int64_t>();
  o.optimizer = j.at("optimizer").get<std::string>();
  o.lr = j.at("lr").get<double>();
  o.meta = j.at("meta").get<bool>();
  o.second_order = j.at("second_order").get<bool>();
  return o;
}

void encode_params(net::Message& message, const Params& params) {
  for (size_t i = 0; i < params.backbone.size(); ++i)
    message.add(tensor_name('b', i), params.backbone[i]);
  for (size_t i = 0; i < params.gates.size(); ++i)
    message.add(tensor_name('g', i), params.gates[i]);
}

Params decode_params(const net::Message& message, const GatedNetOptions& net) {
  torch::NoGradGuard no_grad;
  const GatedNet shape(net);
  const Params reference = shape->params();
  Params out;
  const auto take = [&](char kind, const std::vector<torch::Tensor>& ref,
                        std::vector<torch::Tensor>& into) {
    for (size_t i = 0; i < ref.size(); ++i) {
      const std::string name = tensor_name(kind, i);
      const torch::Tensor& t = message.tensor(name);
      net::check_tensor(t, {torch::kFloat32, ref[i].sizes().vec()}, message.method + " " + name);
      into.push_back(t.clone());
    }
  };
  take('b', reference.backbone, out.backbone);
  take('g', reference.gates, out.gates);
  return out;
}

net::Message encode_job(const NodeJob& job, const Params& params) {
  net::Message m;
  m.method = "local_update";
  m.meta = {{"net", job.net.to_json()},     {"task", job.task.to_json()},
            {"loss", job.loss.to_json()},   {"adapt", job.adapt.to_json()},
            {"local", job.local.to_json()}, {"node", job.node.to_json()},
            {"round", job.round},           {"seed", job.seed}};
  encode_params(m, params);
  return m;
}

NodeJob decode_job(const net::Message& request) {
  TESSERA_CHECK(request.method == "local_update", "node: unknown method '{}'", request.method);
  NodeJob job;
  try {
    const auto& m = request.meta;
    job.net = net_from_json(m.at("net"));
    job.task.ways = m.at("task").at("ways").get<int64_t>();
    job.task.shots = m.at("task").at("shots").get<int64_t>();
    job.task.queries = m.at("task").at("queries").get<int64_t>();
    job.loss.sparsity_weight = m.at("loss").at("sparsity_weight").get<double>();
    job.loss.target_rate = m.at("loss").at("target_rate").get<double>();
    job.adapt.backbone_lr = m.at("adapt").at("backbone_lr").get<double>();
    job.adapt.gate_lr = m.at("adapt").at("gate_lr").get<double>();
    job.adapt.steps = m.at("adapt").at("steps").get<int64_t>();
    job.adapt.two_stage = m.at("adapt").at("two_stage").get<bool>();
    job.local = LocalOptions::from_json(m.at("local"));
    job.node.id = m.at("node").at("id").get<int64_t>();
    job.node.classes = m.at("node").at("classes").get<std::vector<int64_t>>();
    job.node.rotation = m.at("node").at("rotation_degrees").get<int64_t>() / 90;
    job.round = m.at("round").get<int64_t>();
    job.seed = m.at("seed").get<uint64_t>();
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "node: malformed local_update request: {}", e.what());
  }
  job.net.validate();
  job.task.validate();
  job.loss.validate();
  job.local.validate();
  if (job.local.meta) job.adapt.validate(job.net.gated);
  return job;
}

net::Message control_message(const std::string& method) {
  net::Message m;
  m.method = method;
  return m;
}

NodeService::NodeService(std::shared_ptr<const TaskSource> source) : source_(std::move(source)) {
  TESSERA_CHECK(source_ != nullptr, "node: no task source");
}

net::Message NodeService::handle(const net::Message& request) const {
  if (request.method == "shutdown" || request.method == "ping") {
    return control_message(request.method);
  }
  const NodeJob job = decode_job(request);
  GatedNet model(job.net);
  model->load(decode_params(request, job.net));
  auto rng = make_rng(job.seed, job_stream(job.node.id, job.round));
  train::TrainOptions o;
  o.epochs = 1;
  o.optimizer = job.local.optimizer;
  o.lr = job.local.lr;
  o.momentum = 0.0;
  o.weight_decay = 0.0;
  o.schedule = "constant";
  o.seed = job.seed;
  o.progress_label = "node " + std::to_string(job.node.id);
  const GatedNetImpl& net = *model;
  const auto history = train::fit_epochs(*model, o, [&](int64_t, const train::StepFn& step) {
    for (int64_t s = 0; s < job.local.steps; ++s) {
      torch::Tensor loss = torch::zeros({});
      for (int64_t t = 0; t < job.local.tasks_per_step; ++t) {
        const Task task = source_->sample(job.node, job.task, rng);
        const Params p = net.params();
        loss = loss + (job.local.meta
                           ? meta_loss(net, p, task, job.adapt, job.loss, job.local.second_order)
                           : joint_loss(net, p, task, job.loss));
      }
      step(loss / static_cast<double>(job.local.tasks_per_step));
    }
  });
  net::Message reply;
  reply.method = "local_update";
  reply.meta = {{"loss", history.empty() ? 0.0 : history.back().train_loss},
                {"node", job.node.id},
                {"round", job.round}};
  encode_params(reply, model->params());
  return reply;
}

void FedOptions::validate() const {
  TESSERA_CHECK(rounds >= 1, "rounds must be >= 1 (got {})", rounds);
  TESSERA_CHECK(nodes_per_round >= 1, "nodes per round must be >= 1 (got {})", nodes_per_round);
  local.validate();
}

nlohmann::json FedOptions::to_json() const {
  return {{"rounds", rounds},
          {"nodes_per_round", nodes_per_round},
          {"local", local.to_json()},
          {"parallel", parallel},
          {"seed", seed}};
}

nlohmann::json FedRunResult::to_json() const {
  nlohmann::json rounds = nlohmann::json::array();
  for (const auto& r : history)
    rounds.push_back(
        {{"round", r.round}, {"nodes", r.nodes}, {"dropped", r.dropped}, {"loss", r.loss}});
  return {{"seconds", seconds}, {"dropped_node_rounds", dropped}, {"rounds", rounds}};
}

FedRunResult run_federated(const JobTemplate& job, const std::vector<NodeSpec>& nodes,
                           const std::vector<NodeLink>& links, const Params& initial,
                           const FedOptions& fed) {
  fed.validate();
  TESSERA_CHECK(!nodes.empty() && nodes.size() == links.size(), "federated: {} nodes but {} links",
                nodes.size(), links.size());
  const Timer timer;
  FedRunResult result;
  result.params = initial.clone();
  const auto per_round = std::min<int64_t>(fed.nodes_per_round, static_cast<int64_t>(nodes.size()));
  for (int64_t round = 0; round < fed.rounds; ++round) {
    auto rng = make_rng(fed.seed, 0x726f756e64ULL + static_cast<uint64_t>(round));
    auto chosen = random::subset(static_cast<int64_t>(nodes.size()), per_round, rng);
    std::sort(chosen.begin(), chosen.end());
    std::vector<net::Message> replies(chosen.size());
    std::vector<std::string> errors(chosen.size());
    const auto call = [&](size_t k) {
      const auto i = static_cast<size_t>(chosen[k]);
      NodeJob request{job.net, job.task, job.loss, job.adapt, fed.local, nodes[i], round, fed.seed};
      try {
        replies[k] = links[i](encode_job(request, result.params));
        decode_params(replies[k], job.net);  // a malformed reply is a failed node
      } catch (const std::exception& e) {
        errors[k] = e.what();
      }
    };
    if (fed.parallel) {
      std::vector<std::thread> threads;
      for (size_t k = 0; k < chosen.size(); ++k) threads.emplace_back(call, k);
      for (auto& t : threads) t.join();
    } else {
      for (size_t k = 0; k < chosen.size(); ++k) call(k);
    }
    RoundRecord record;
    record.round = round;
    Params sum;
    for (size_t k = 0; k < chosen.size(); ++k) {
      const int64_t id = nodes[static_cast<size_t>(chosen[k])].id;
      if (!errors[k].empty()) {
        log::warn("round {}: node {} dropped: {}", round, id, errors[k]);
        record.dropped.push_back(id);
        continue;
      }
      const Params p = decode_params(replies[k], job.net);
      if (sum.backbone.empty()) {
        sum = p;
      } else {
        for (size_t t = 0; t < p.backbone.size(); ++t) sum.backbone[t] += p.backbone[t];
        for (size_t t = 0; t < p.gates.size(); ++t) sum.gates[t] += p.gates[t];
      }
      record.loss += replies[k].meta.value("loss", 0.0);
      record.nodes.push_back(id);
    }
    if (!record.nodes.empty()) {
      const auto n = static_cast<double>(record.nodes.size());
      for (auto& t : sum.backbone) t /= n;
      for (auto& t : sum.gates) t /= n;
      result.params = sum;
      record.loss /= n;
    }
    result.dropped += static_cast<int64_t>(record.dropped.size());
    result.history.push_back(record);
  }
  result.seconds = timer.elapsed_s();
  return result;
}

std::vector<NodeLink> in_process_links(std::shared_ptr<const TaskSource> source, size_t n) {
  auto service = std::make_shared<NodeService>(std::move(source));
  std::vector<NodeLink> links;
  for (size_t i = 0; i < n; ++i)
    links.emplace_back([service](const net::Message& request) { return service->handle(request); });
  return links;
}

}  // namespace tessera::metagater
