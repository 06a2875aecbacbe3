// The cut of a Tessera vision model into a client side (units [0, k) plus an optional bottleneck
// encoder) and a server side (optional bottleneck decoder plus units [k, n)), research/sfl.md 1.1,
// 1.4 and 3.3; and the state helpers of federated averaging (unweighted mean incl. BN buffers).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "tessera/models/model.h"

namespace tessera::splitfed {

struct SplitOptions {
  /// Units [0, cut) run on the client. For VGG-11-BN this is the papers' `cutlayer`.
  int64_t cut = 4;
  /// 0: no bottleneck. c > 0: the client ends with Conv3x3(C_cut -> c, stride s) and the server
  /// starts with Conv3x3(c -> C_cut) (ConvTranspose for s = 2), both without ReLU
  /// (ResSFL `norelu_C{c}S{s}`, research/sfl.md 3.3).
  int64_t bottleneck_channels = 0;
  int64_t bottleneck_stride = 1;  ///< 1 or 2

  nlohmann::json to_json() const;
  static SplitOptions from_json(const nlohmann::json& json);
};

/// The client-side model f_c. It keeps the Model it was cut from (for forward_units) but
/// registers only units [0, cut) and the bottleneck encoder, so parameters() and named_buffers()
/// are exactly the client's state.
class ClientSideImpl : public torch::nn::Module {
 public:
  /// Takes a freshly built model; throws tessera::Error for a cut outside [1, n_units - 1] or a
  /// bottleneck on a non-image cut.
  ClientSideImpl(models::Model model, const SplitOptions& options);
  /// x: [B, C, H, W] float32 -> smashed data z: [B, smashed_shape()...] float32.
  torch::Tensor forward(const torch::Tensor& x);
  /// Per-sample shape of the smashed data, e.g. {8, 8, 8}.
  const std::vector<int64_t>& smashed_shape() const { return smashed_shape_; }
  const SplitOptions& options() const { return options_; }

 private:
  models::Model model_;
  SplitOptions options_;
  torch::nn::Conv2d bottleneck_{nullptr};
  std::vector<int64_t> smashed_shape_;
};
TORCH_MODULE(ClientSide);

/// The server-side model f_s: bottleneck decoder (if any) then units [cut, n).
class ServerSideImpl : public torch::nn::Module {
 public:
  ServerSideImpl(models::Model model, const SplitOptions& options);
  /// z: [B, smashed_shape...] float32 -> logits [B, num_classes].
  torch::Tensor forward(const torch::Tensor& z);
  int64_t num_classes() const { return num_classes_; }

 private:
  models::Model model_;
  SplitOptions options_;
  torch::nn::AnyModule decoder_;
  int64_t num_classes_ = 0;
};
TORCH_MODULE(ServerSide);

/// Builds a fresh model from `config` and cuts it: {client side, server side}.
std::pair<ClientSide, ServerSide> make_split(const models::ModelConfig& config,
                                             const SplitOptions& options);

/// How "server-side layers" are counted (research/sfl.md 1.4, ambiguous in the papers' code).
///  - weights (default; EMGAN/README convention): conv, block and fc units count; a pool stays
///    with the conv before it, so VGG-11 with 5 server layers is conv,conv+pool,fc,fc,fc (cut 10).
///  - units (offline attack code): conv, block, pool and fc units count, from the right.
enum class LayerConvention { weights, units };
/// "weights" or "units"; throws tessera::Error listing the valid names.
LayerConvention parse_layer_convention(const std::string& name);
std::string layer_convention_name(LayerConvention convention);

/// Returns the cut k such that units [k, n) hold exactly `n_layers` counted units and start
/// with a counted unit. Throws tessera::Error if n_layers is not in [1, max].
int64_t cut_for_server_layers(models::Model& model, int64_t n_layers,
                              LayerConvention convention = LayerConvention::weights);
/// Counted server-side layers of a cut under a convention (inverse of cut_for_server_layers).
int64_t server_layers_of_cut(models::Model& model, int64_t cut,
                             LayerConvention convention = LayerConvention::weights);

/// Named parameters and buffers of a module ("state"), detached and cloned.
using State = std::vector<std::pair<std::string, torch::Tensor>>;
State get_state(const torch::nn::Module& module);
/// Copies `state` into the module's parameters and buffers. Every name must exist with the same
/// shape and dtype, and every parameter/buffer must be given; otherwise tessera::Error.
void load_state(torch::nn::Module& module, const State& state);
/// Unweighted element-wise mean of states with identical names and shapes (FedAvg with equal
/// weights, BN running statistics included; integer buffers such as num_batches_tracked are
/// averaged in float64 and rounded). Throws on an empty list or mismatched states.
State average_states(const std::vector<State>& states);

/// Xavier-uniform weights and zero biases for every conv/linear of a module (fresh surrogate
/// server parts, research/sfl.md 2.1); BN to weight 1, bias 0.
void xavier_init(torch::nn::Module& module);

}  // namespace tessera::splitfed
