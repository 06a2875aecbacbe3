// Defenses against model inversion in SFL (ResSFL, arXiv 2205.04007; research/sfl.md 3.2-3.5):
// attacker-aware training (a client-side simulated decoder and the SSIM hinge regulariser), the
// two-step ResSFL framework (expert pre-training on a source task, then resistance transfer), and
// the compared baselines (Laplace / Gaussian noise, dropout, top-k pruning of the smashed data,
// NoPeek distance correlation, bottleneck only). Every defense is client-side work in a
// ClientStrategy, so it runs unchanged over both transports (in-process and gRPC).
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "tessera/data/dataset.h"
#include "tessera/splitfed/client.h"
#include "tessera/splitfed/inversion.h"
#include "tessera/splitfed/runtime.h"

namespace tessera::splitfed {

/// The MI defenses (research/sfl.md 3.2-3.5). attacker_aware and ressfl run the same client step
/// (3.2); ressfl names the transfer step of 3.4 B (light decoder, every few batches). bottleneck
/// is honest training of a split with SplitOptions::bottleneck_channels > 0.
enum class DefenseKind {
  none,
  attacker_aware,
  ressfl,
  laplace,
  gaussian,
  dropout,
  topk,
  nopeek,
  bottleneck
};
/// Every defense, in the order above.
const std::vector<DefenseKind>& all_defenses();
/// "none", "attacker_aware", ...; throws tessera::Error listing the valid names.
DefenseKind parse_defense(const std::string& name);
std::string defense_name(DefenseKind kind);

struct DefenseOptions {
  DefenseKind kind = DefenseKind::none;
  double lambda = 0.3;   ///< hinge weight (regularization_strength), >= 0
  double tau = 0.5;      ///< SSIM threshold (ssim_threshold), in [0, 1)
  DecoderSpec decoder;   ///< the defender's simulated attacker g_phi (default res_normN4C64)
  int64_t interval = 1;  ///< decoder step every `interval` batches (1 / 5)
  /// True (the reference's loop): the SSIM hinge on every batch, with the decoder of its last
  /// update. False (RECONSTRUCTED from ResSFL's `optimize_computation`): the hinge only on the
  /// batches where the decoder steps, so the whole adversarial part costs 1/interval.
  bool hinge_every_batch = true;
  int64_t inner_steps = 1;   ///< decoder steps each time (gan_adv_step{n})
  double decoder_lr = 1e-3;  ///< Adam
  /// Epochs of decoder pre-training before the client's first step: the decoder learns to
  /// maximise SSIM(g(f_c(x)), x) on the client's own images with f_c as the run starts (the
  /// expert's for the transfer). The reference trains 30 epochs before the expert and before
  /// the transfer; 0 = off (RECONSTRUCTED default until measured here).
  int64_t decoder_pretrain_epochs = 0;
  /// Baselines' strength; <= 0 picks the default: laplace epsilon 10 (scale 1/eps), gaussian
  /// epsilon 10 (sigma = sqrt(2 ln(1.25/delta)) / eps), dropout p 0.2, topk ratio 0.6,
  /// nopeek alpha 1.0 (research/sfl.md 3.5, middle of the swept values).
  double strength = 0.0;
  double delta = 1e-4;  ///< Gaussian mechanism's delta
  uint64_t seed = 0;

  /// Throws tessera::Error naming the first bad field (a bad decoder, lambda < 0, tau outside
  /// [0, 1), interval or inner_steps < 1, a strength out of range).
  void validate() const;
  bool attacker_aware() const {
    return kind == DefenseKind::attacker_aware || kind == DefenseKind::ressfl;
  }
  /// Whether the defense is client-side work in a DefenseStrategy (not none or bottleneck).
  bool needs_strategy() const {
    return kind != DefenseKind::none && kind != DefenseKind::bottleneck;
  }
  /// The strength in effect (the default when strength <= 0).
  double effective_strength() const;
  nlohmann::json to_json() const;
};

/// The server-visible perturbation of smashed data for laplace / gaussian / dropout / topk (an
/// empty function for the others). Seeded; thread-safe. Dropout zeroes each value with
/// probability p without rescaling; top-k zeroes the smallest `ratio` of the whole tensor's
/// values (by value, as coded in ResSFL). Differentiable in z (masks / additive noise).
SmashedTransform smashed_transform(const DefenseOptions& options, uint64_t stream = 0);

/// lambda * max(0, SSIM(reconstruction, x) - tau) (research/sfl.md 3.2 step 2).
torch::Tensor ssim_hinge(const torch::Tensor& reconstruction, const torch::Tensor& x, double lambda,
                         double tau);
/// Trains `decoder` for `epochs` epochs to maximise SSIM(decoder(f_c(x)), x) over `images` (f_c
/// frozen, in eval mode; batches of 64 in a seeded order; Adam at `lr`, through
/// train::fit_epochs). Returns the last epoch's mean SSIM.
double pretrain_decoder(Decoder& decoder, ClientSide& client, const torch::Tensor& images,
                        int64_t epochs, double lr, uint64_t seed);

/// Sample distance correlation between x: [B, ...] and z: [B, ...] (NoPeek; Szekely et al.),
/// in [0, 1]. Differentiable.
torch::Tensor distance_correlation(const torch::Tensor& x, const torch::Tensor& z);

/// One client's defended SFL step. Attacker-aware training (3.2): every `interval` batches the
/// client trains its decoder g_phi to maximise SSIM(g(f_c(x)), x) with f_c frozen (features in
/// eval mode, as in the reference), then takes
/// the model step on CE + lambda * max(0, SSIM - tau) with g fixed (the other batches are plain
/// CE steps when hinge_every_batch is off). The decoder is built at the
/// first step from the data's shapes and kept across epochs (not averaged); with
/// decoder_pretrain_epochs > 0 it is first pre-trained on `own_images` (the client's shard).
/// Also measures the client's own compute time per step (the exchange with the server
/// excluded; the pre-training is reported apart, in pretrain_seconds()).
class DefenseStrategy : public ClientStrategy {
 public:
  explicit DefenseStrategy(DefenseOptions options, uint64_t stream = 0,
                           torch::Tensor own_images = {});
  bool step(StepContext& context, const torch::Tensor& x, const torch::Tensor& y) override;
  double compute_seconds() const;
  double pretrain_seconds() const;
  int64_t steps() const;
  /// Mean SSIM of the simulated decoder on the last model step (-1 before any).
  double last_ssim() const;

 private:
  DefenseOptions options_;
  SmashedTransform transform_;
  torch::Tensor own_images_;
  Decoder decoder_{nullptr};
  std::unique_ptr<torch::optim::Adam> decoder_optimizer_;
  mutable std::mutex mutex_;
  double compute_seconds_ = 0.0;
  double pretrain_seconds_ = 0.0;
  int64_t steps_ = 0;
  double last_ssim_ = -1.0;
};

struct DefendedRun {
  RunResult run;
  /// Test accuracy of the final model with the defense's transform on the smashed data.
  double accuracy = 0.0;
  /// Mean client compute per step (forward, defense work, backward), summed over clients.
  double client_seconds_per_step = 0.0;
  /// (epochs done, averaged client state) for every requested checkpoint epoch; 0 is the
  /// state the run started from.
  std::vector<std::pair<int64_t, State>> checkpoints;
  nlohmann::json to_json() const;
};

/// Test accuracy of f_s(transform(f_c(x))) in eval mode.
double defended_accuracy(ClientSide& client, ServerSide& server, const data::Dataset& test,
                         const SmashedTransform& transform);

/// In-process SFL where every client runs DefenseStrategy(defense). `initial_client` /
/// `initial_server` (if non-empty) start the run from given states (resistance transfer).
DefendedRun run_defended(const SflOptions& options, const DefenseOptions& defense,
                         const data::Dataset& train, const data::Dataset& test,
                         const std::vector<int64_t>& checkpoint_epochs = {},
                         const State& initial_client = {}, const State& initial_server = {});

/// ResSFL step B's starting point (research/sfl.md 3.4): the expert's client side and the
/// expert's server side except the classifier (the last unit), which is freshly initialised
/// (seeded by target.seed). The two runs must share model (but for the class count) and split.
std::pair<State, State> transfer_states(const SflOptions& target, const SflOptions& source,
                                        const State& expert_client, const State& expert_server);

}  // namespace tessera::splitfed
