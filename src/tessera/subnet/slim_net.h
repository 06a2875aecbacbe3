// The width-sliceable CIFAR-style ResNet that holds every sub-net: weights stored once at full
// width with channels in rank order, a sub-net = a channel prefix per width slot, run with
// physically narrower (sliced, contiguous) convolutions, one BN statistics set per sub-net
// (switchable BN), per-channel parametric noise for the ranking, and its one-file format.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::subnet {

/// The super-net: a CIFAR-style ResNet (3x3 stem, stages of BasicBlocks, stage s > 0 starts with
/// stride 2 and a 1x1 conv + BN projection shortcut, global pool, FC). The defaults are
/// ResNet-20 (3 stages x 3 blocks, 16/32/64 channels) on 28x28 Fashion-MNIST.
struct SlimNetOptions {
  int64_t in_channels = 1;
  int64_t image_size = 28;
  int64_t num_classes = 10;
  std::vector<int64_t> stage_channels = {16, 32, 64};
  int64_t blocks_per_stage = 3;

  /// Throws tessera::Error naming the bad field.
  void validate() const;
  nlohmann::json to_json() const;
  /// Checks keys and types (a model file's metadata).
  static SlimNetOptions from_json(const nlohmann::json& json);
  /// "ResNet-20-style (3x3 blocks, 16/32/64 channels), 28x28x1"
  std::string describe() const;
};

/// One sub-net: the kept channel count of every width slot. Slots 0..S-1 are the residual stream
/// of each stage (ranked jointly: the stem or projection, every block's second conv and the
/// identity shortcuts share the stage's channel set, so residual adds stay consistent); slot
/// S + b is the inner width (first conv's output) of block b.
struct SubnetSpec {
  std::vector<int64_t> widths;

  bool operator==(const SubnetSpec& other) const { return widths == other.widths; }
  nlohmann::json to_json() const { return widths; }
  /// "stream 16/32/64 inner 16,16,16|32,32,32|64,64,64"
  std::string describe(int64_t n_stages, int64_t blocks_per_stage) const;
};

class SlimNetImpl : public torch::nn::Module {
 public:
  explicit SlimNetImpl(SlimNetOptions options);

  const SlimNetOptions& options() const { return options_; }
  int64_t n_stages() const { return static_cast<int64_t>(options_.stage_channels.size()); }
  int64_t n_blocks() const { return n_stages() * options_.blocks_per_stage; }
  int64_t n_slots() const { return n_stages() + n_blocks(); }
  /// "stage1".."stageS" then "block1.inner".."blockN.inner".
  std::string slot_name(int64_t slot) const;
  int64_t slot_max(int64_t slot) const;
  SubnetSpec full_spec() const;
  /// Throws tessera::Error unless the spec has n_slots() widths, each in [1, slot_max].
  void check_spec(const SubnetSpec& spec) const;
  /// Multiply-accumulates per image of the sub-net (convolutions and FC; BN, ReLU, adds and the
  /// pool are not counted).
  int64_t macs(const SubnetSpec& spec) const;

  /// x: [B, C, H, W] -> logits [B, K] through `spec`. In training mode BN normalises with batch
  /// statistics and, when bn_set >= 0, updates that set's running statistics; in eval mode it uses
  /// the running statistics of set bn_set (which must exist). Differentiable (weight slices).
  torch::Tensor forward_spec(const torch::Tensor& x, const SubnetSpec& spec, int64_t bn_set);

  /// Declares the sub-nets (nested, largest first by convention) and gives each a fresh BN
  /// statistics set (mean 0, variance 1). Active sub-net: 0.
  void set_subnets(std::vector<SubnetSpec> specs);
  const std::vector<SubnetSpec>& subnets() const { return subnets_; }
  int64_t n_subnets() const { return static_cast<int64_t>(subnets_.size()); }
  /// Run-time switch: selects sub-net k and its BN set, and copies its weight slices into
  /// contiguous narrower tensors for forward(). No reload. Throws for k out of range.
  void set_subnet(int64_t k);
  int64_t active() const { return active_; }
  /// The active sub-net: in eval mode through the contiguous narrower weights set_subnet made
  /// (remade when the weights changed since), in training mode as forward_spec().
  torch::Tensor forward(torch::Tensor x);

  /// Parametric noise injection (He et al. 2019): in training mode every conv weight becomes
  /// w + alpha (per output channel) x std(w) x N(0, 1), resampled each forward.
  void set_noise(bool on) { noise_ = on; }
  bool noise() const { return noise_; }
  /// The trainable noise scale of a slot, [slot_max] (the residual stream's is shared by every
  /// conv writing into it).
  torch::Tensor& alpha(int64_t slot) { return alphas_.at(static_cast<size_t>(slot)); }
  void reset_alphas(double value);

  /// Reorders the channels of a slot: new channel i is old channel order[i]. Every tensor that
  /// reads or writes the slot (weights, BN affine and every statistics set, alpha) is permuted,
  /// so the full network computes the same function.
  void permute_slot(int64_t slot, const std::vector<int64_t>& order);

  /// Resets BN statistics set k to mean 0, variance 1.
  void reset_bn_stats(int64_t k);
  /// Momentum of the running-statistics update (0.1; calibration uses 1/(i+1) for batch i).
  void set_bn_momentum(double momentum) { bn_momentum_ = momentum; }
  /// The running mean / variance of BN layer `layer` (index into bn_names()) in set k: [slot_max].
  torch::Tensor& bn_mean(int64_t k, int64_t layer);
  torch::Tensor& bn_var(int64_t k, int64_t layer);
  std::vector<std::string> bn_names() const;

  /// Called when weights change outside forward (an optimizer step): forward() re-slices.
  void mark_weights_changed() { cache_valid_ = false; }

 private:
  struct Conv {
    std::string name;
    torch::Tensor weight, gamma, beta;
    int64_t out_slot = 0, in_slot = -1;  ///< in_slot -1: the input image
    int64_t stride = 1, kernel = 3;
  };
  struct Block {
    int64_t in_slot, out_slot, stride;
    size_t conv1, conv2;
    int64_t shortcut = -1;  ///< conv index of the projection, -1 for identity
  };
  /// A conv and its BN as forward() uses them: weight [out, in, k, k] and BN vectors [out].
  struct ConvView {
    torch::Tensor weight, gamma, beta, mean, var;
  };
  int64_t width_of(const SubnetSpec& spec, int64_t slot) const;
  ConvView view(size_t conv, const SubnetSpec& spec, int64_t bn_set) const;
  torch::Tensor conv_bn(const torch::Tensor& x, const Conv& conv, const ConvView& v) const;
  torch::Tensor run(const torch::Tensor& x, const SubnetSpec& spec,
                    const std::vector<ConvView>& views, const torch::Tensor& fc_w) const;
  void check_set(int64_t k) const;

  SlimNetOptions options_;
  std::vector<Conv> convs_;
  std::vector<Block> blocks_;
  torch::Tensor fc_weight_, fc_bias_;
  std::vector<torch::Tensor> alphas_;
  std::vector<SubnetSpec> subnets_;
  /// stats_[set][conv] = {running mean, running var}, each [slot_max(out_slot)].
  std::vector<std::vector<std::pair<torch::Tensor, torch::Tensor>>> stats_;
  int64_t active_ = 0;
  bool noise_ = false;
  double bn_momentum_ = 0.1;
  bool cache_valid_ = false;
  std::vector<ConvView> cache_;
  torch::Tensor cache_fc_;
};
TORCH_MODULE(SlimNet);

/// Sub-nets, their BN statistics and the ranking noise in one .safetensors file: every parameter
/// under its name, "bn.<k>.<layer>.mean/var" per sub-net k, and metadata "tessera.subnet" =
/// {"options", "subnets", "info"}. `info` is free JSON (method, search log).
void save_slim_net(const std::string& path, SlimNet& net, const nlohmann::json& info = {});
struct LoadedSlimNet {
  SlimNet net{nullptr};
  nlohmann::json info;
};
/// Rebuilds the net from the file alone; every tensor's name, dtype and shape is checked (a file
/// that is not a sub-net file, a missing or unexpected tensor: tessera::Error naming it). The net
/// is in eval mode with sub-net 0 active.
LoadedSlimNet load_slim_net(const std::string& path);

}  // namespace tessera::subnet
