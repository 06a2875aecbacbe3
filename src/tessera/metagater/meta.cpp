// The two-stage inner update, the meta-loss (first or second order), the joint loss and the
// evaluation of an adapted task.
#include "tessera/metagater/meta.h"

#include "tessera/core/error.h"

namespace tessera::metagater {

namespace {

// Gradients of `loss` with respect to `inputs`; unused inputs get zeros. Without create_graph
// the gradients are detached constants (first order).
std::vector<torch::Tensor> gradients(const torch::Tensor& loss,
                                     const std::vector<torch::Tensor>& inputs, bool create_graph) {
  if (inputs.empty()) return {};
  auto grads = torch::autograd::grad({loss}, inputs, {}, /*retain_graph=*/create_graph,
                                     create_graph, /*allow_unused=*/true);
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].defined()) grads[i] = torch::zeros_like(inputs[i]);
    if (!create_graph) grads[i] = grads[i].detach();
  }
  return grads;
}

std::vector<torch::Tensor> step(const std::vector<torch::Tensor>& values,
                                const std::vector<torch::Tensor>& grads, double lr) {
  std::vector<torch::Tensor> out;
  for (size_t i = 0; i < values.size(); ++i) out.push_back(values[i] - lr * grads[i]);
  return out;
}

torch::Tensor with_penalty(const GatedNetImpl& net, const torch::Tensor& ce,
                           const std::vector<torch::Tensor>& gates, const LossOptions& loss) {
  if (!net.options().gated || loss.sparsity_weight == 0.0) return ce;
  return ce + loss.sparsity_weight * sparsity_penalty(gates, loss.target_rate);
}

}  // namespace

void LossOptions::validate() const {
  TESSERA_CHECK(sparsity_weight >= 0, "sparsity weight must be >= 0 (got {})", sparsity_weight);
  TESSERA_CHECK(target_rate > 0 && target_rate <= 1, "target rate must be in (0, 1] (got {})",
                target_rate);
}

nlohmann::json LossOptions::to_json() const {
  return {{"sparsity_weight", sparsity_weight}, {"target_rate", target_rate}};
}

void AdaptOptions::validate(bool gated) const {
  TESSERA_CHECK(backbone_lr > 0,
                "adaptation: the inner (backbone) learning rate must be > 0 "
                "(got {}); a zero inner step is no adaptation",
                backbone_lr);
  TESSERA_CHECK(!gated || gate_lr > 0,
                "adaptation: the inner gate learning rate must be > 0 (got {})", gate_lr);
  TESSERA_CHECK(steps >= 1, "adaptation: steps must be >= 1 (got {})", steps);
}

nlohmann::json AdaptOptions::to_json() const {
  return {{"backbone_lr", backbone_lr},
          {"gate_lr", gate_lr},
          {"steps", steps},
          {"two_stage", two_stage}};
}

torch::Tensor support_loss(const GatedNetImpl& net, const Params& p, const torch::Tensor& x,
                           const torch::Tensor& y, const LossOptions& loss) {
  const ForwardOut out = net.forward(p, x, x.size(0), GateMode::train);
  return with_penalty(net, torch::nn::functional::cross_entropy(out.logits, y), out.gates, loss);
}

torch::Tensor query_loss(const GatedNetImpl& net, const Params& p, const Task& task,
                         const LossOptions& loss) {
  const int64_t n_s = task.support_x.size(0);
  const int64_t n_q = task.query_x.size(0);
  const ForwardOut out =
      net.forward(p, torch::cat({task.support_x, task.query_x}), n_s, GateMode::train);
  std::vector<torch::Tensor> gates;
  for (const auto& g : out.gates) gates.push_back(g.narrow(0, n_s, n_q));
  return with_penalty(
      net, torch::nn::functional::cross_entropy(out.logits.narrow(0, n_s, n_q), task.query_y),
      gates, loss);
}

Params adapt(const GatedNetImpl& net, const Params& p, const Task& task,
             const AdaptOptions& options, const LossOptions& loss, bool create_graph) {
  const bool gated = net.options().gated;
  options.validate(gated);
  Params cur = p;
  for (int64_t s = 0; s < options.steps; ++s) {
    if (gated && options.two_stage) {
      // Stage 1: the backbone on the support set.
      const auto g_b = gradients(support_loss(net, cur, task.support_x, task.support_y, loss),
                                 cur.backbone, create_graph);
      cur.backbone = step(cur.backbone, g_b, options.backbone_lr);
      // Stage 2: the gates, given the adapted backbone.
      const auto g_g = gradients(support_loss(net, cur, task.support_x, task.support_y, loss),
                                 cur.gates, create_graph);
      cur.gates = step(cur.gates, g_g, options.gate_lr);
    } else {
      const auto grads = gradients(support_loss(net, cur, task.support_x, task.support_y, loss),
                                   cur.all(), create_graph);
      const size_t nb = cur.backbone.size();
      cur.backbone = step(cur.backbone, {grads.begin(), grads.begin() + static_cast<long>(nb)},
                          options.backbone_lr);
      cur.gates =
          step(cur.gates, {grads.begin() + static_cast<long>(nb), grads.end()}, options.gate_lr);
    }
  }
  return cur;
}

torch::Tensor meta_loss(const GatedNetImpl& net, const Params& p, const Task& task,
                        const AdaptOptions& options, const LossOptions& loss, bool second_order) {
  return query_loss(net, adapt(net, p, task, options, loss, second_order), task, loss);
}

torch::Tensor joint_loss(const GatedNetImpl& net, const Params& p, const Task& task,
                         const LossOptions& loss) {
  return support_loss(net, p, torch::cat({task.support_x, task.query_x}),
                      torch::cat({task.support_y, task.query_y}), loss);
}

Adapted adapt_for_inference(const GatedNetImpl& net, const Params& p, const Task& task,
                            const AdaptOptions& options, const LossOptions& loss,
                            double threshold) {
  Adapted out;
  out.params = adapt(net, p.leaves(), task, options, loss, /*create_graph=*/false).clone();
  torch::NoGradGuard no_grad;
  net.forward(out.params, task.support_x, task.support_x.size(0), GateMode::infer, threshold,
              nullptr, &out.stats);
  return out;
}

TaskEval evaluate_task(const GatedNetImpl& net, const Params& p, const Task& task,
                       const AdaptOptions& options, const LossOptions& loss, double threshold) {
  const Adapted adapted = adapt_for_inference(net, p, task, options, loss, threshold);
  torch::NoGradGuard no_grad;
  const ForwardOut out =
      net.forward(adapted.params, task.query_x, 0, GateMode::infer, threshold, &adapted.stats);
  TaskEval eval;
  eval.accuracy = out.logits.argmax(1).eq(task.query_y).to(torch::kDouble).mean().item<double>();
  const int64_t n = task.query_x.size(0);
  std::vector<torch::Tensor> counts;
  for (const auto& g : out.gates) {
    eval.active_fraction.push_back(g.mean().item<double>());
    counts.push_back(g.sum(1).to(torch::kDouble));
  }
  double macs = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> active;
    for (const auto& c : counts) active.push_back(c[i].item<double>());
    macs += net.macs(active);
  }
  eval.macs = macs / static_cast<double>(n);
  return eval;
}

}  // namespace tessera::metagater
