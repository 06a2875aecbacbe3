// RADAR run-time bit-flip detection and recovery (Li et al., DATE'21; research/hw_security.md
// 3.3) over a block layout made for a fused SIMD check: each layer is cut into cache-sized
// blocks, a key-driven permutation local to each block gathers G weights into a group, each
// group gets secret +-1 keys and a 2-bit signature, golden signatures live in an HMAC'd file,
// and recovery zeroes the flagged groups (or only their MSB-marked weights).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tessera/core/quant.h"

namespace tessera::bitflip {

class DeployedModel;

/// The RADAR secret (32 bytes). It seeds the block permutations and the group keys and keys
/// the HMAC of the signature file.
class RadarKey {
 public:
  /// A reproducible key derived from a seed: SHA-256("tessera.radar.seed:<seed>"). For
  /// experiments only; anyone who knows the seed knows the key.
  static RadarKey from_seed(uint64_t seed);
  /// Reads a key file: 64 hex digits (surrounding whitespace allowed). Refuses a file that its
  /// group or others may read or write (any of mode 077), as ssh does for private keys.
  static RadarKey from_file(const std::string& path);
  /// A fresh key from libcrypto's CSPRNG (RAND_bytes).
  static RadarKey generate();
  /// Writes the key as 64 hex digits and a newline, atomically, into a file created with mode
  /// 0600 (the temporary is created 0600 before any byte is written).
  void save(const std::string& path) const;
  /// A public identifier of the key (16 hex digits of an HMAC under it) stored in signature
  /// files so that a wrong key is reported as such.
  std::string id() const;
  std::string_view bytes() const { return secret_; }

 private:
  explicit RadarKey(std::string secret) : secret_(std::move(secret)) {}
  std::string secret_;
};

struct RadarOptions {
  int64_t group_size = 8;  ///< G: weights per group (paper: 8 for CIFAR, 512 for ImageNet)
  int check_bits = 2;      ///< 2: signature [A, B]; 1: B only (the paper's check_bit)
  /// Target weights per block (4096 int8 codes = 4 KiB, L1-sized). A block is G rows of
  /// 32 * T codes with T = max(1, block_weights / (32 G)); a layer's last block may be shorter.
  int64_t block_weights = 4096;
  /// Layers with fewer weights than this use G = 2 (0: every layer uses group_size; ours). A
  /// layer of fewer than 32 G weights has 32 groups whatever G is, so flips that land in it
  /// (PBFA favours the small stem) often share a group, where two MSB flips can cancel; G = 2
  /// gives it about as many groups as half its weights, for a few bytes of signature.
  int64_t small_layer_weights = 0;
  /// Throws tessera::Error unless 2 <= group_size <= 2^16, check_bits is 1 or 2,
  /// 32 <= block_weights <= 2^20 and small_layer_weights >= 0.
  void validate() const;
};

/// How recovery repairs a flagged group.
enum class RecoveryMode {
  zero_group,   ///< the paper: zero every weight of the group
  zero_marked,  ///< ours: zero only weights with the mark of a high-bit flip (see is_marked);
                ///< a flagged group with no marked weight is zeroed whole
  /// ours: flip the MSB back on the one marked weight whose flip-back makes the group match its
  /// golden signature again (the exact pre-flip value); when no or several marked weights fit,
  /// as zero_marked. Needs the golden signatures.
  restore_marked,
};
/// "group", "marked" or "restore"; throws tessera::Error listing the valid names.
RecoveryMode parse_recovery_mode(const std::string& name);
std::string recovery_mode_name(RecoveryMode mode);
/// The mark of an MSB (or bit n-2) flip of a small weight: |w| >= 2^(n-2), i.e. the two top
/// bits of the two's-complement code differ (8 bits: w >= 64 or w <= -65). An MSB flip of any
/// weight with |w| < 64 lands there.
bool is_marked(int32_t value, int bits);

/// The checksum of one group (3.3): p_i = wrap_n(k_i * w_i), s = wrap_n(sum p_i),
/// n_negative = #{p_i < 0}; A = bit 1 of n_negative; B = [s >= 0].
struct GroupChecksum {
  int32_t sum = 0;
  int64_t n_negative = 0;
  int a = 0;
  int b = 0;
  /// (A << 1) | B
  uint8_t signature() const { return static_cast<uint8_t>((a << 1) | b); }
};

/// values, keys: the group's n integer weights (n-bit signed) and +-1 keys, in group order.
GroupChecksum group_checksum(const int32_t* values, const int8_t* keys, int64_t n, int bits);

/// The secret layout of one layer (RECONSTRUCTED, docs/systems/bitflip.md). The flat codes,
/// zero-padded to a multiple of 32 G, are cut into blocks; block b is G rows of W_b = 32 T_b
/// codes, read as 32-byte chunks. Per block and row a key-driven permutation sends chunk t to
/// slot tau(t) in [0, T_b), and a key-driven byte shuffle (within each 16-byte half, one
/// `pshufb`) sends its byte l to lane sigma(l). Group (slot, lane) holds one code per row; its
/// rows are listed in a keyed random order and the first ceil(G/2) of them have key +1, the
/// others -1. Groups are numbered 32 * (global slot) + lane.
struct LayerLayout {
  std::string name;
  std::vector<int64_t> shape;
  int64_t group_size = 0;
  int64_t numel = 0;   ///< real weights
  int64_t padded = 0;  ///< codes including the zero padding (a multiple of 32 G)
  int64_t n_plus = 0;  ///< rows with key +1 in every group: ceil(G/2)

  struct Block {
    int64_t begin = 0;  ///< first flat index
    int64_t slots = 0;  ///< T_b: chunks per row, and 32-group slots
  };
  std::vector<Block> blocks;
  /// The fused check's table, per global slot q and row j (G entries per slot, j < n_plus
  /// with key +1): the flat offset of the 32-byte chunk it reads, and the index of its
  /// 32-byte shuffle control in `controls`.
  std::vector<uint32_t> chunk;
  std::vector<uint32_t> control_of;
  std::vector<uint8_t> controls;  ///< 32 bytes per (block, row): pshufb controls (0..15)
  /// Per real flat index: (group << 1) | (key == -1), for the scalar pass and group_of.
  std::vector<int32_t> group_key;

  int64_t n_groups() const { return padded / group_size; }
  int64_t n_slots() const { return n_groups() / 32; }
  /// The group holding flat element `flat_index` (< numel).
  int64_t group_of(int64_t flat_index) const;
  /// Flat index of element j (0 .. G-1) of group `group`; >= numel for zero padding.
  int64_t element(int64_t group, int64_t j) const;
  /// Key of element j of every group: +1 for j < n_plus, else -1.
  int key(int64_t j) const { return j < n_plus ? 1 : -1; }
};

/// Golden signatures of one layer plus what identifies the weights they were made for.
struct LayerSignatures {
  std::string name;
  std::vector<int64_t> shape;
  int bits = 8;
  double step = 0.0;
  std::vector<uint8_t> signatures;  ///< one per group, (A << 1) | B
};

/// The golden signature set. On disk (save/load) it is a safetensors file whose tensors hold
/// the packed signatures (check_bits bits per group) and whose metadata holds a header (format
/// 2: G, check bits, block size, key id, layer names, shapes, bits, steps) and an HMAC-SHA256
/// tag, keyed by the secret, over the header and every signature byte.
struct GoldenSignatures {
  RadarOptions options;
  std::string key_id;
  std::vector<LayerSignatures> layers;

  int64_t n_groups() const;
  /// Signature storage in bits: check_bits per group.
  int64_t storage_bits() const;
  void save(const std::string& path, const RadarKey& key) const;
  /// Throws tessera::Error if the file is not a signature file, was made with another key or
  /// an older layout, or fails its HMAC check (edited after signing).
  static GoldenSignatures load(const std::string& path, const RadarKey& key);
};

/// Flagged groups of one layer.
struct LayerCheck {
  size_t layer = 0;
  std::string name;
  std::vector<int64_t> flagged_groups;  ///< ascending
};

/// Outcome of one check: only layers with at least one flagged group are listed.
struct CheckResult {
  std::vector<LayerCheck> layers;
  int64_t n_flagged_groups() const;
  bool clean() const { return layers.empty(); }
  /// Whether group `group` of layer `layer` is flagged.
  bool is_flagged(size_t layer, int64_t group) const;
};

/// Per layer, the signatures as the fused check produces them: for slot q, bit i of a[q] and
/// b[q] are A and B of group 32 q + i.
struct SignatureMasks {
  std::vector<std::vector<uint32_t>> a, b;
};

/// RADAR for one model's quantized layers. The layouts are derived from the key, the options
/// and the layer names and shapes, so the same key always gives the same grouping.
class Radar {
 public:
  Radar(const RadarKey& key, RadarOptions options,
        const std::vector<quant::QuantizedTensor>& weights);

  /// Signatures of every group of every layer (the golden set when the weights are clean).
  GoldenSignatures sign(const std::vector<quant::QuantizedTensor>& weights) const;
  /// The same from the deployed int8 memory, by the fused check.
  GoldenSignatures sign(const DeployedModel& model) const;
  /// Recomputes every signature and compares it with the golden set. Throws tessera::Error if
  /// the golden set does not describe these weights (another key, G, block size, layer set,
  /// shape, bit width or quantization step: a signature file for another model).
  CheckResult check(const std::vector<quant::QuantizedTensor>& weights,
                    const GoldenSignatures& golden) const;
  /// The check over the deployed int8 memory (the fused kernel, without dequantizing).
  CheckResult check(const DeployedModel& model, const GoldenSignatures& golden) const;
  /// Repairs every flagged group; returns how many weights were zeroed (or restored).
  /// restore_marked needs `golden`.
  int64_t recover(std::vector<quant::QuantizedTensor>& weights, const CheckResult& result,
                  RecoveryMode mode = RecoveryMode::zero_group,
                  const GoldenSignatures* golden = nullptr) const;
  int64_t recover(DeployedModel& model, const CheckResult& result,
                  RecoveryMode mode = RecoveryMode::zero_group,
                  const GoldenSignatures* golden = nullptr) const;

  /// Golden signatures as the fused check's masks (throws like check() when they do not fit).
  SignatureMasks masks(const GoldenSignatures& golden) const;
  /// Compares freshly computed masks of layer `layer` with `expected`; flagged groups, ascending.
  std::vector<int64_t> compare(size_t layer, const uint32_t* a, const uint32_t* b,
                               const SignatureMasks& expected) const;

  size_t n_layers() const { return layouts_.size(); }
  const LayerLayout& layout(size_t layer) const;
  const RadarOptions& options() const { return options_; }
  const std::string& key_id() const { return key_id_; }
  /// Throws tessera::Error unless `golden` was made with this key and options for layers of
  /// these names, shapes, bit widths and steps.
  void check_golden(const GoldenSignatures& golden, const std::vector<std::string>& names,
                    const std::vector<std::vector<int64_t>>& shapes, const std::vector<int>& bits,
                    const std::vector<double>& steps) const;

 private:
  void check_layers(const std::vector<quant::QuantizedTensor>& weights) const;
  void check_golden(const std::vector<quant::QuantizedTensor>& weights,
                    const GoldenSignatures& golden) const;

  RadarOptions options_;
  std::string key_id_;
  std::vector<LayerLayout> layouts_;
};

}  // namespace tessera::bitflip
