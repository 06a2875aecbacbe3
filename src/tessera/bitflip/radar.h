// RADAR run-time bit-flip detection and recovery (Li et al., DATE'21; research/hw_security.md
// 3.3): weights are interleaved into groups of G by a secret permutation, each group gets a
// secret +-1 key and a 2-bit signature, golden signatures live in an authenticated file, and
// recovery zeroes every group whose signature no longer matches.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "tessera/core/quant.h"

namespace tessera::bitflip {

/// The RADAR secret (32 bytes). It seeds the interleaving permutation and the group keys and
/// keys the HMAC of the signature file.
class RadarKey {
 public:
  /// A reproducible key derived from a seed: SHA-256("tessera.radar.seed:<seed>"). For
  /// experiments only; anyone who knows the seed knows the key.
  static RadarKey from_seed(uint64_t seed);
  /// Reads a key file: 64 hex digits (surrounding whitespace allowed).
  static RadarKey from_file(const std::string& path);
  /// A fresh key from std::random_device.
  static RadarKey generate();
  /// Writes the key as 64 hex digits and a newline (atomic).
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
  /// Throws tessera::Error unless 2 <= group_size <= 2^20 and check_bits is 1 or 2.
  void validate() const;
};

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

/// The secret layout of one layer. A conv weight [Cout, Cin, kh, kw] is first viewed as
/// [Cin*kh*kw, Cout] (the reference's layout), then its n elements are permuted by a secret
/// permutation and cut into consecutive groups of G; the last group holds n mod G weights when
/// G does not divide n (its key is the truncated G-long key, as in the reference).
struct LayerLayout {
  std::string name;
  std::vector<int64_t> shape;
  int64_t group_size = 0;
  std::vector<int32_t> order;        ///< order[p]: flat index (original layout) at position p
  std::vector<int32_t> position_of;  ///< inverse of order
  std::vector<int8_t> keys;          ///< key of position p, +1 or -1
  /// Per flat index: (group << 1) | (key == -1). Lets the check read the weights in memory
  /// order (one sequential pass) instead of gathering them through the permutation.
  std::vector<int32_t> group_key;

  int64_t numel() const { return static_cast<int64_t>(order.size()); }
  int64_t n_groups() const { return (numel() + group_size - 1) / group_size; }
  /// The group holding flat element `flat_index`.
  int64_t group_of(int64_t flat_index) const;
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
/// the packed signatures (check_bits bits per group) and whose metadata holds a header (G,
/// check bits, key id, layer names, shapes, bits, steps) and an HMAC-SHA256 tag, keyed by the
/// secret, over the header and every signature byte.
struct GoldenSignatures {
  RadarOptions options;
  std::string key_id;
  std::vector<LayerSignatures> layers;

  int64_t n_groups() const;
  /// Signature storage in bits: check_bits per group.
  int64_t storage_bits() const;
  void save(const std::string& path, const RadarKey& key) const;
  /// Throws tessera::Error if the file is not a signature file, was made with another key, or
  /// fails its HMAC check (edited after signing).
  static GoldenSignatures load(const std::string& path, const RadarKey& key);
};

/// Flagged groups of one layer.
struct LayerCheck {
  size_t layer = 0;
  std::string name;
  std::vector<int64_t> flagged_groups;
};

/// Outcome of one check: only layers with at least one flagged group are listed.
struct CheckResult {
  std::vector<LayerCheck> layers;
  int64_t n_flagged_groups() const;
  bool clean() const { return layers.empty(); }
  /// Whether group `group` of layer `layer` is flagged.
  bool is_flagged(size_t layer, int64_t group) const;
};

/// RADAR for one model's quantized layers. The layouts are derived from the key, the options
/// and the layer names and shapes, so the same key always gives the same grouping.
class Radar {
 public:
  Radar(const RadarKey& key, RadarOptions options,
        const std::vector<quant::QuantizedTensor>& weights);

  /// Signatures of every group of every layer (the golden set when the weights are clean).
  GoldenSignatures sign(const std::vector<quant::QuantizedTensor>& weights) const;
  /// Recomputes every signature and compares it with the golden set. Throws tessera::Error if
  /// the golden set does not describe these weights (another key, G, layer set, shape, bit
  /// width or quantization step: a signature file for another model).
  CheckResult check(const std::vector<quant::QuantizedTensor>& weights,
                    const GoldenSignatures& golden) const;
  /// Zeroes every weight of every flagged group; returns how many weights were zeroed.
  int64_t recover(std::vector<quant::QuantizedTensor>& weights, const CheckResult& result) const;

  size_t n_layers() const { return layouts_.size(); }
  const LayerLayout& layout(size_t layer) const;
  const RadarOptions& options() const { return options_; }
  const std::string& key_id() const { return key_id_; }

 private:
  void check_compatible(const std::vector<quant::QuantizedTensor>& weights,
                        const GoldenSignatures* golden) const;

  RadarOptions options_;
  std::string key_id_;
  std::vector<LayerLayout> layouts_;
};

}  // namespace tessera::bitflip
