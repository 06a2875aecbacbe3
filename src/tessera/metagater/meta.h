// Meta-learning of the gated network (research/efficient.md 3.2, RECONSTRUCTED): the two-stage
// one-step adaptation (backbone first, theta' = theta - alpha grad_theta L(theta, phi; S); then
// the gates given the adapted backbone, phi' = phi - beta grad_phi L(theta', phi; S)), the
// meta-loss L(theta', phi'; Q) differentiated through the inner steps (second order, autograd
// create_graph) or not (first order), the joint loss of training without meta-learning, and the
// evaluation of one adapted task with the inference gates.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <vector>

#include "tessera/metagater/gated.h"
#include "tessera/metagater/tasks.h"

namespace tessera::metagater {

/// The loss L(theta, phi; D) = cross-entropy + sparsity_weight x R(gates).
struct LossOptions {
  double sparsity_weight = 2.0;  ///< lambda (RECONSTRUCTED)
  double target_rate = 0.5;      ///< fraction of channels the regularizer aims at per layer

  void validate() const;
  nlohmann::json to_json() const;
};

/// The inner (adaptation) update.
struct AdaptOptions {
  double backbone_lr = 0.1;  ///< alpha, stage 1
  double gate_lr = 0.1;      ///< beta, stage 2 (gated networks only)
  int64_t steps = 1;         ///< gradient steps (1: the paper's one-step adaptation)
  /// true: backbone, then gates on the adapted backbone (the paper's two stages); false: one
  /// joint step on both.
  bool two_stage = true;

  /// Throws for a zero (or negative) learning rate or no steps.
  void validate(bool gated) const;
  nlohmann::json to_json() const;
};

/// L on a support set alone (BN on its own statistics): x [B, C, H, W], y [B].
torch::Tensor support_loss(const GatedNetImpl& net, const Params& p, const torch::Tensor& x,
                           const torch::Tensor& y, const LossOptions& loss);

/// L on the query set, BN normalizing with the support statistics (the query is never used for
/// statistics, so inference on one query image is the same computation).
torch::Tensor query_loss(const GatedNetImpl& net, const Params& p, const Task& task,
                         const LossOptions& loss);

/// The adaptation on task.support_x/y. create_graph: keep the graph of the inner gradients (the
/// second-order meta-gradient); otherwise the inner gradients are constants (first order) and
/// the result still depends on p through the identity. p's tensors must require grad.
Params adapt(const GatedNetImpl& net, const Params& p, const Task& task, const AdaptOptions& adapt,
             const LossOptions& loss, bool create_graph);

/// The meta-loss of one task: query_loss(adapt(p)).
torch::Tensor meta_loss(const GatedNetImpl& net, const Params& p, const Task& task,
                        const AdaptOptions& adapt, const LossOptions& loss, bool second_order);

/// Training without meta-learning: L on support and query together (BN on all of them).
torch::Tensor joint_loss(const GatedNetImpl& net, const Params& p, const Task& task,
                         const LossOptions& loss);

/// One test task after adaptation.
struct TaskEval {
  double accuracy = 0.0;                ///< on the query set, inference gates
  std::vector<double> active_fraction;  ///< per layer, mean over query images
  double macs = 0.0;                    ///< mean MACs per query image
};

/// Adapts a copy of p on the support set and evaluates the query set with hard gates at
/// `threshold`.
TaskEval evaluate_task(const GatedNetImpl& net, const Params& p, const Task& task,
                       const AdaptOptions& adapt, const LossOptions& loss, double threshold = 0.0);

/// The adapted parameters and the support BN statistics a node then runs inference with.
struct Adapted {
  Params params;
  BnStats stats;
};
Adapted adapt_for_inference(const GatedNetImpl& net, const Params& p, const Task& task,
                            const AdaptOptions& adapt, const LossOptions& loss,
                            double threshold = 0.0);

}  // namespace tessera::metagater
