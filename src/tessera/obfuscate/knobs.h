// The eight function-preserving obfuscation knobs (research/hw_security.md 4.5) as rewrites of a
// Net, and the genome that says which knob each layer takes. Each knob has a check that returns
// why it cannot apply ("" when it can); applying an inapplicable knob throws tessera::Error.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/obfuscate/executor.h"
#include "tessera/obfuscate/net.h"

namespace tessera::obfuscate {

enum class Knob { widen, branch, deepen, skip, kernel, dummy, fuse, schedule, decoy };
constexpr int kNumKnobs = 9;
std::string knob_name(Knob knob);       ///< "widen", "branch", ...
std::vector<std::string> knob_names();  ///< every knob, in Knob order
Knob parse_knob(const std::string& name);

/// Why `knob` cannot apply to the conv/linear node `layer` ("" when it can).
std::string knob_blocker(const Net& net, Knob knob, const std::string& layer);

/// Layer widening: `extra` zero output channels (zero weights and bias; BN scale 1, shift 0,
/// mean 0, var 1, so the channels stay 0 through BN, ReLU and pooling), and zero input-channel
/// weights in every consumer conv (or zero columns in the linear after a flatten). Conv only;
/// the output must reach only convs (or flatten -> linear) through BN/ReLU/max-pool.
void widen_layer(Net& net, const std::string& conv, int64_t extra);
/// Layer branching: split the output channels of conv (+BN, +ReLU) into `parts` (2 or 4)
/// parallel convs, concatenated. OC must be divisible by parts.
void branch_layer(Net& net, const std::string& conv, int64_t parts);
/// Layer deepening: an identity 1x1 conv (identity linear after an FC) after the layer's unit
/// (conv -> BN -> ReLU).
void deepen_layer(Net& net, const std::string& layer);
/// Zero skip connection: a parallel conv (linear) with the layer's shape and all-zero weights
/// reads the layer's input; its output is added to the unit's output.
void zero_skip(Net& net, const std::string& layer);
/// Kernel widening: k x k -> (k + 2) x (k + 2) with a zero ring, padding + 1. Conv only.
void widen_kernel(Net& net, const std::string& conv);
/// Dummy additions: `count` additions of a stored all-zero tensor after the layer's unit.
void add_dummies(Net& net, const std::string& layer, int64_t count);
/// Decoy kernels (ours, not in the paper; RECONSTRUCTED): `count` additions on a stored all-zero
/// tensor of the layer's output channels and 1/`shrink` of its height and width (a linear: of its
/// features), chained after the layer's unit but read by nothing. Each costs about one kernel
/// dispatch whatever the activation size, and shows in the trace as one more small kernel. Not
/// for the layer that computes the network's output.
void add_decoys(Net& net, const std::string& layer, int64_t count, int64_t shrink = 4);
/// Selective fusion: the executor runs conv+BN+ReLU (linear+ReLU) as one kernel or not.
void set_fusion(Net& net, const std::string& layer, bool fused);
/// Schedule choice for a conv (groups 1): direct, im2col GEMM, or two output-channel halves.
void set_schedule(Net& net, const std::string& conv, ConvSchedule schedule);

/// The genes of one weighted layer (ranges follow section 4.5, adapted).
struct LayerGenes {
  int widen = 0;     ///< 0..8: extra channels = OC x widen / 8, rounded to a multiple of 4
  int branch = 0;    ///< 0..2: 1, 2 or 4 branches
  int deepen = 0;    ///< 0/1
  int skip = 0;      ///< 0/1
  int kernel = 0;    ///< 0/1
  int dummy = 0;     ///< 0..4 dummy additions
  int unfuse = 0;    ///< 0/1: 1 runs conv, BN and ReLU as separate kernels
  int schedule = 0;  ///< 0..2 (ConvSchedule)
  int decoy = 0;     ///< 0..8 decoy kernels
  int get(Knob knob) const;
  void set(Knob knob, int value);
  static int max_value(Knob knob);
  bool operator==(const LayerGenes& other) const;
};

/// One gene list per weighted layer of the clean net (weighted_layers order).
struct Genome {
  std::vector<LayerGenes> layers;
  int active() const;  ///< number of non-zero genes
  std::string key() const;
  nlohmann::json to_json() const;  ///< only the non-zero genes, by layer index
  bool operator==(const Genome& other) const { return layers == other.layers; }
};

struct Obfuscated {
  Net net;
  std::vector<std::string> skipped;  ///< "layer 'x': widen skipped: <reason>"
};

/// Applies every gene of `genome` to a copy of `clean` (hints, widening, kernels, skips,
/// deepening, dummies, then branching). Genes whose knob cannot apply are skipped with a
/// message. Throws if the genome has the wrong number of layers or a gene out of range.
Obfuscated apply_genome(const Net& clean, const Genome& genome);

}  // namespace tessera::obfuscate
