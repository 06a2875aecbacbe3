// RADAR signatures, secret block layouts, the authenticated signature file, check and recovery
// (research/hw_security.md 3.3; reference zlijingtao/radar_check).
#include "tessera/bitflip/radar.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <functional>
#include <random>

#include "tessera/bitflip/crypto.h"
#include "tessera/bitflip/deployed.h"
#include "tessera/bitflip/fused_check.h"
#include "tessera/core/error.h"
#include "tessera/core/json.h"
#include "tessera/core/random.h"
#include "tessera/core/safetensors.h"

namespace tessera::bitflip {

namespace {

constexpr const char* kHeaderKey = "tessera.radar";
constexpr const char* kTagKey = "tessera.radar.hmac";
constexpr const char* kTensorPrefix = "signatures/";
constexpr const char* kLayoutName = "block-v2";
constexpr int64_t kChunk = 32;

/// x mod 2^bits as a signed n-bit value (int8 wrap-around for bits = 8).
int32_t wrap(int64_t x, int bits) {
  const uint64_t modulus = uint64_t{1} << bits;
  const uint64_t u = static_cast<uint64_t>(x) & (modulus - 1);
  return u >= (modulus >> 1)
             ? static_cast<int32_t>(static_cast<int64_t>(u) - static_cast<int64_t>(modulus))
             : static_cast<int32_t>(u);
}

/// A std::mt19937_64 seeded from an HMAC of `label` under the secret (std::seed_seq and the
/// engine are fully specified by the standard, so layouts are the same on every platform).
std::mt19937_64 keyed_rng(std::string_view secret, const std::string& label) {
  const Digest digest = hmac_sha256(secret, label);
  std::vector<uint32_t> words(8);
  for (size_t i = 0; i < 8; ++i) {
    words[i] = (uint32_t{digest[4 * i]} << 24) | (uint32_t{digest[4 * i + 1]} << 16) |
               (uint32_t{digest[4 * i + 2]} << 8) | uint32_t{digest[4 * i + 3]};
  }
  std::seed_seq seq(words.begin(), words.end());
  return std::mt19937_64(seq);
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::vector<int64_t> shape_of(const quant::QuantizedTensor& q) {
  return std::vector<int64_t>(q.values.sizes().begin(), q.values.sizes().end());
}

/// The keyed block layout of one layer (radar.h LayerLayout).
LayerLayout make_layout(std::string_view secret, const std::string& name,
                        std::vector<int64_t> shape, int64_t n, const RadarOptions& options) {
  LayerLayout layout;
  layout.name = name;
  layout.shape = std::move(shape);
  const int64_t g_size = n < options.small_layer_weights ? 2 : options.group_size;
  layout.group_size = g_size;
  layout.numel = n;
  layout.n_plus = (g_size + 1) / 2;
  const int64_t row_unit = kChunk * g_size;
  layout.padded = (n + row_unit - 1) / row_unit * row_unit;
  const int64_t full_slots = std::max<int64_t>(1, options.block_weights / row_unit);
  const std::string label =
      fmt::format("block-v2\n{}\n{}\n{}\n{}", name, n, g_size, options.block_weights);
  std::mt19937_64 rng = keyed_rng(secret, label);
  std::vector<std::vector<int64_t>> chunk_of_slot(static_cast<size_t>(g_size));
  std::vector<int64_t> rows(static_cast<size_t>(g_size));
  std::vector<uint8_t> half(16);
  uint32_t control_base = 0;
  for (int64_t begin = 0; begin < layout.padded;) {
    const int64_t slots = std::min(full_slots, (layout.padded - begin) / row_unit);
    const int64_t width = kChunk * slots;
    layout.blocks.push_back({begin, slots});
    for (int64_t r = 0; r < g_size; ++r) {
      // tau: chunk t of row r feeds slot perm[t]; keep the inverse (slot -> chunk).
      const std::vector<int64_t> perm = random::permutation(slots, rng);
      auto& inverse = chunk_of_slot[static_cast<size_t>(r)];
      inverse.assign(static_cast<size_t>(slots), 0);
      for (int64_t t = 0; t < slots; ++t) inverse[static_cast<size_t>(perm[t])] = t;
      for (int h = 0; h < 2; ++h) {
        for (int i = 0; i < 16; ++i) half[static_cast<size_t>(i)] = static_cast<uint8_t>(i);
        random::shuffle(half, rng);
        layout.controls.insert(layout.controls.end(), half.begin(), half.end());
      }
    }
    for (int64_t s = 0; s < slots; ++s) {
      for (int64_t r = 0; r < g_size; ++r) rows[static_cast<size_t>(r)] = r;
      random::shuffle(rows, rng);  // the first n_plus rows get key +1
      for (const int64_t r : rows) {
        const int64_t t = chunk_of_slot[static_cast<size_t>(r)][static_cast<size_t>(s)];
        layout.chunk.push_back(static_cast<uint32_t>(begin + r * width + kChunk * t));
        layout.control_of.push_back(control_base + static_cast<uint32_t>(r));
      }
    }
    control_base += static_cast<uint32_t>(g_size);
    begin += g_size * width;
  }
  layout.group_key.assign(static_cast<size_t>(n), 0);
  for (int64_t g = 0; g < layout.n_groups(); ++g) {
    for (int64_t j = 0; j < g_size; ++j) {
      const int64_t flat = layout.element(g, j);
      if (flat < n)
        layout.group_key[static_cast<size_t>(flat)] =
            static_cast<int32_t>((g << 1) | (j >= layout.n_plus ? 1 : 0));
    }
  }
  return layout;
}

/// Signatures of one layer's int32 values in one sequential pass over the real weights
/// (padding codes are zero and add nothing); equals group_checksum() per group (tests).
void layer_signatures(const LayerLayout& layout, const quant::QuantizedTensor& q,
                      std::vector<uint8_t>& out) {
  const int32_t* values = q.values.data_ptr<int32_t>();
  const auto n_groups = static_cast<size_t>(layout.n_groups());
  const uint32_t mask = (uint32_t{1} << q.bits) - 1;
  const uint32_t half = uint32_t{1} << (q.bits - 1);
  // Unsigned sums wrap mod 2^32; only their low n bits are used, so that is exact.
  std::vector<uint32_t> sums(n_groups, 0);
  std::vector<uint32_t> negatives(n_groups, 0);
  const int32_t* group_key = layout.group_key.data();
  for (int64_t i = 0; i < layout.numel; ++i) {
    const int32_t gk = group_key[i];
    const int32_t v = values[i];
    const uint32_t product = static_cast<uint32_t>((gk & 1) ? -v : v) & mask;
    const auto g = static_cast<size_t>(gk >> 1);
    sums[g] += product;
    negatives[g] += product >= half ? 1u : 0u;
  }
  out.resize(n_groups);
  for (size_t g = 0; g < n_groups; ++g) {
    const int b = (sums[g] & half) == 0 ? 1 : 0;  // s >= 0 iff its bit n-1 is clear
    const int a = static_cast<int>((negatives[g] >> 1) & 1u);
    out[g] = static_cast<uint8_t>((a << 1) | b);
  }
}

/// Signatures of one layer from the fused kernel's masks.
void signatures_from_masks(const std::vector<uint32_t>& a, const std::vector<uint32_t>& b,
                           std::vector<uint8_t>& out) {
  out.resize(a.size() * 32);
  for (size_t q = 0; q < a.size(); ++q) {
    for (int i = 0; i < 32; ++i)
      out[32 * q + i] = static_cast<uint8_t>((((a[q] >> i) & 1u) << 1) | ((b[q] >> i) & 1u));
  }
}

/// The signature of group g as the accessor's values give it, with element `flat` read as
/// `value` (flat < 0: no substitution).
uint8_t group_signature(const LayerLayout& layout, int64_t g, int bits,
                        const std::function<int32_t(int64_t)>& get, int64_t flat, int32_t value) {
  std::vector<int32_t> w;
  std::vector<int8_t> k;
  for (int64_t j = 0; j < layout.group_size; ++j) {
    const int64_t e = layout.element(g, j);
    w.push_back(e >= layout.numel ? 0 : e == flat ? value : get(e));
    k.push_back(static_cast<int8_t>(layout.key(j)));
  }
  return group_checksum(w.data(), k.data(), static_cast<int64_t>(w.size()), bits).signature();
}

/// Repairs the flagged groups through a value accessor (int32 tensors or int8 memory); returns
/// how many weights it changed. restore_marked needs the layer's golden signatures.
int64_t recover_layer(const LayerLayout& layout, const std::vector<int64_t>& groups,
                      RecoveryMode mode, int bits, const std::function<int32_t(int64_t)>& get,
                      const std::function<void(int64_t, int32_t)>& set,
                      const std::vector<uint8_t>* golden, uint8_t mask) {
  TESSERA_CHECK(mode != RecoveryMode::restore_marked || golden != nullptr,
                "restore recovery needs the golden signatures");
  int64_t n_changed = 0;
  for (const int64_t g : groups) {
    TESSERA_CHECK(g >= 0 && g < layout.n_groups(), "group {} out of range for layer '{}'", g,
                  layout.name);
    std::vector<int64_t> real, marked;
    for (int64_t j = 0; j < layout.group_size; ++j) {
      const int64_t flat = layout.element(g, j);
      if (flat >= layout.numel) continue;
      real.push_back(flat);
      if (is_marked(get(flat), bits)) marked.push_back(flat);
    }
    if (mode == RecoveryMode::restore_marked) {
      // Flip the MSB back on the one marked weight whose flip-back restores the signature.
      std::vector<std::pair<int64_t, int32_t>> fits;
      for (const int64_t flat : marked) {
        const int32_t back = quant::from_twos_complement(
            quant::to_twos_complement(get(flat), bits) ^ (uint32_t{1} << (bits - 1)), bits);
        const uint8_t sig = group_signature(layout, g, bits, get, flat, back);
        if (((sig ^ (*golden)[static_cast<size_t>(g)]) & mask) == 0) fits.emplace_back(flat, back);
      }
      if (fits.size() == 1) {
        set(fits.front().first, fits.front().second);
        ++n_changed;
        continue;
      }
    }
    const bool only_marked = mode != RecoveryMode::zero_group && !marked.empty();
    for (const int64_t flat : only_marked ? marked : real) {
      set(flat, 0);
      ++n_changed;
    }
  }
  return n_changed;
}

/// check_bits bits per group, little-endian within each byte.
std::string pack(const std::vector<uint8_t>& signatures, int check_bits) {
  const int per_byte = 8 / check_bits;
  std::string out((signatures.size() + per_byte - 1) / per_byte, '\0');
  const uint8_t mask = check_bits == 2 ? 3 : 1;
  for (size_t g = 0; g < signatures.size(); ++g) {
    const int shift = static_cast<int>(g % per_byte) * check_bits;
    out[g / per_byte] = static_cast<char>(static_cast<uint8_t>(out[g / per_byte]) |
                                          ((signatures[g] & mask) << shift));
  }
  return out;
}

std::vector<uint8_t> unpack(const std::string& bytes, int64_t n_groups, int check_bits) {
  const int per_byte = 8 / check_bits;
  const uint8_t mask = check_bits == 2 ? 3 : 1;
  std::vector<uint8_t> out(static_cast<size_t>(n_groups));
  for (int64_t g = 0; g < n_groups; ++g) {
    const int shift = static_cast<int>(g % per_byte) * check_bits;
    out[static_cast<size_t>(g)] = static_cast<uint8_t>(
        (static_cast<uint8_t>(bytes[static_cast<size_t>(g / per_byte)]) >> shift) & mask);
  }
  return out;
}

/// The bytes the HMAC covers: a domain label, the header and each layer's packed signatures
/// with its length, so that nothing can be moved between fields.
std::string mac_message(const std::string& header, const std::vector<std::string>& packed) {
  std::string message = "tessera.radar.v1";
  message.push_back('\0');
  auto append_length = [&](uint64_t n) {
    for (int i = 0; i < 8; ++i) message.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  };
  append_length(header.size());
  message += header;
  for (const auto& bytes : packed) {
    append_length(bytes.size());
    message += bytes;
  }
  return message;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Key

RadarKey RadarKey::from_seed(uint64_t seed) {
  const Digest digest = sha256("tessera.radar.seed:" + std::to_string(seed));
  return RadarKey(std::string(reinterpret_cast<const char*>(digest.data()), digest.size()));
}

RadarKey RadarKey::from_file(const std::string& path) {
  // Open first, then fstat the open file: the mode checked is the file read.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  TESSERA_CHECK(fd >= 0, "cannot open key file '{}': {}", path, std::strerror(errno));
  struct stat st {};
  std::string text;
  bool ok = ::fstat(fd, &st) == 0;
  const bool exposed = ok && (st.st_mode & 077) != 0;
  if (ok && !exposed) {
    char buffer[512];
    ssize_t got = 0;
    while ((got = ::read(fd, buffer, sizeof buffer)) > 0) text.append(buffer, buffer + got);
    ok = got == 0;
  }
  ::close(fd);
  TESSERA_CHECK(ok, "cannot read key file '{}': {}", path, std::strerror(errno));
  TESSERA_CHECK(!exposed,
                "key file '{}' has mode {:04o}: its group or others may read or write it, so the "
                "secret may be known; refusing it (run `chmod 600 {}`, or make a new key with "
                "`tessera bitflip keygen`)",
                path, st.st_mode & 07777, path);
  std::string hex;
  for (char c : text) {
    if (std::isspace(static_cast<unsigned char>(c))) continue;
    hex.push_back(c);
  }
  TESSERA_CHECK(hex.size() == 64, "key file '{}' must hold 64 hex digits, found {} characters",
                path, hex.size());
  std::string secret(32, '\0');
  for (size_t i = 0; i < 32; ++i) {
    const int hi = hex_value(hex[2 * i]);
    const int lo = hex_value(hex[2 * i + 1]);
    TESSERA_CHECK(hi >= 0 && lo >= 0, "key file '{}' has a non-hex character near position {}",
                  path, 2 * i);
    secret[i] = static_cast<char>((hi << 4) | lo);
  }
  return RadarKey(std::move(secret));
}

RadarKey RadarKey::generate() { return RadarKey(random_bytes(32)); }

void RadarKey::save(const std::string& path) const {
  const std::string text =
      to_hex(reinterpret_cast<const uint8_t*>(secret_.data()), secret_.size()) + "\n";
  const std::string tmp = fmt::format("{}.tmp.{}", path, ::getpid());
  // O_EXCL: never write the secret into a file someone else created; 0600 from the start.
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  TESSERA_CHECK(fd >= 0, "cannot create key file '{}': {}", tmp, std::strerror(errno));
  bool ok = ::fchmod(fd, 0600) == 0;
  size_t written = 0;
  while (ok && written < text.size()) {
    const ssize_t n = ::write(fd, text.data() + written, text.size() - written);
    ok = n > 0;
    if (ok) written += static_cast<size_t>(n);
  }
  ok = ok && ::fsync(fd) == 0;
  const int saved_errno = errno;
  ok = ::close(fd) == 0 && ok;
  if (ok) ok = ::rename(tmp.c_str(), path.c_str()) == 0;
  if (!ok) {
    const int err = saved_errno != 0 ? saved_errno : errno;
    ::unlink(tmp.c_str());
    TESSERA_CHECK(false, "cannot write key file '{}': {}", path, std::strerror(err));
  }
}

std::string RadarKey::id() const {
  return to_hex(hmac_sha256(secret_, "tessera.radar.key-id")).substr(0, 16);
}

// ---------------------------------------------------------------------------------------------
// Options, checksums, layouts

void RadarOptions::validate() const {
  TESSERA_CHECK(group_size >= 2 && group_size <= (int64_t{1} << 16),
                "RADAR group size G must be in [2, 65536], got {}", group_size);
  TESSERA_CHECK(check_bits == 1 || check_bits == 2, "RADAR check bits must be 1 or 2, got {}",
                check_bits);
  TESSERA_CHECK(block_weights >= 32 && block_weights <= (int64_t{1} << 20),
                "RADAR block size must be in [32, 1048576] weights, got {}", block_weights);
  TESSERA_CHECK(small_layer_weights >= 0, "RADAR small-layer size must be >= 0, got {}",
                small_layer_weights);
}

RecoveryMode parse_recovery_mode(const std::string& name) {
  if (name == "group") return RecoveryMode::zero_group;
  if (name == "marked") return RecoveryMode::zero_marked;
  if (name == "restore") return RecoveryMode::restore_marked;
  throw Error(fmt::format("unknown recovery mode '{}' (expected group, marked or restore)", name));
}

std::string recovery_mode_name(RecoveryMode mode) {
  switch (mode) {
    case RecoveryMode::zero_group:
      return "group";
    case RecoveryMode::zero_marked:
      return "marked";
    case RecoveryMode::restore_marked:
      return "restore";
  }
  throw Error("invalid recovery mode");
}

bool is_marked(int32_t value, int bits) {
  const uint32_t code = quant::to_twos_complement(value, bits);
  return ((code >> (bits - 1)) & 1u) != ((code >> (bits - 2)) & 1u);
}

GroupChecksum group_checksum(const int32_t* values, const int8_t* keys, int64_t n, int bits) {
  TESSERA_CHECK(bits >= 2 && bits <= 16, "bits must be in [2, 16], got {}", bits);
  TESSERA_CHECK(n >= 0, "group length must be >= 0, got {}", n);
  GroupChecksum c;
  int64_t sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    TESSERA_CHECK(keys[i] == 1 || keys[i] == -1, "group key {} at {} is not +1 or -1", keys[i], i);
    const int32_t product = wrap(static_cast<int64_t>(keys[i]) * values[i], bits);
    c.n_negative += product < 0 ? 1 : 0;
    sum += product;
  }
  c.sum = wrap(sum, bits);
  c.a = static_cast<int>((c.n_negative >> 1) & 1);
  c.b = c.sum >= 0 ? 1 : 0;
  return c;
}

int64_t LayerLayout::group_of(int64_t flat_index) const {
  TESSERA_CHECK(flat_index >= 0 && flat_index < numel,
                "element {} out of range for layer '{}' with {} weights", flat_index, name, numel);
  return group_key[static_cast<size_t>(flat_index)] >> 1;
}

int64_t LayerLayout::element(int64_t group, int64_t j) const {
  const int64_t q = group / 32;
  const int64_t lane = group % 32;
  const auto e = static_cast<size_t>(q * group_size + j);
  const uint8_t control = controls[static_cast<size_t>(control_of[e]) * 32 + lane];
  return static_cast<int64_t>(chunk[e]) + (lane & 16) + control;
}

Radar::Radar(const RadarKey& key, RadarOptions options,
             const std::vector<quant::QuantizedTensor>& weights)
    : options_(options), key_id_(key.id()) {
  options_.validate();
  TESSERA_CHECK(!weights.empty(), "RADAR needs at least one quantized layer");
  for (const auto& q : weights) {
    TESSERA_CHECK(
        q.values.defined() && q.values.scalar_type() == torch::kInt32 && q.values.is_contiguous(),
        "layer '{}' must hold contiguous int32 values", q.name);
    TESSERA_CHECK(
        q.numel() > 0 && q.numel() < (int64_t{1} << 31) - 2 * kChunk * options_.group_size,
        "layer '{}' has {} weights; RADAR needs 1 .. 2^31 - 64 G", q.name, q.numel());
    layouts_.push_back(make_layout(key.bytes(), q.name, shape_of(q), q.numel(), options_));
  }
}

const LayerLayout& Radar::layout(size_t layer) const {
  TESSERA_CHECK(layer < layouts_.size(), "layer {} out of range ({} layers)", layer,
                layouts_.size());
  return layouts_[layer];
}

void Radar::check_layers(const std::vector<quant::QuantizedTensor>& weights) const {
  TESSERA_CHECK(weights.size() == layouts_.size(),
                "RADAR was set up for {} layers but the model has {}", layouts_.size(),
                weights.size());
  for (size_t l = 0; l < weights.size(); ++l) {
    const auto& q = weights[l];
    TESSERA_CHECK(q.name == layouts_[l].name && shape_of(q) == layouts_[l].shape,
                  "layer {} is '{}' {} but RADAR was set up for '{}' {}", l, q.name,
                  c10::str(q.values.sizes()), layouts_[l].name, c10::str(layouts_[l].shape));
    TESSERA_CHECK(q.values.scalar_type() == torch::kInt32 && q.values.is_contiguous(),
                  "layer '{}' must hold contiguous int32 values", q.name);
  }
}

void Radar::check_golden(const GoldenSignatures& golden, const std::vector<std::string>& names,
                         const std::vector<std::vector<int64_t>>& shapes,
                         const std::vector<int>& bits, const std::vector<double>& steps) const {
  TESSERA_CHECK(golden.key_id == key_id_,
                "the signatures were made with another key (key id {}, this key is {})",
                golden.key_id, key_id_);
  TESSERA_CHECK(golden.options.group_size == options_.group_size &&
                    golden.options.check_bits == options_.check_bits &&
                    golden.options.block_weights == options_.block_weights &&
                    golden.options.small_layer_weights == options_.small_layer_weights,
                "the signatures use G = {} with {} check bit(s), {}-weight blocks and G = 2 "
                "below {} weights but the check uses G = {} with {}, {} and {}",
                golden.options.group_size, golden.options.check_bits, golden.options.block_weights,
                golden.options.small_layer_weights, options_.group_size, options_.check_bits,
                options_.block_weights, options_.small_layer_weights);
  TESSERA_CHECK(golden.layers.size() == names.size() && names.size() == layouts_.size(),
                "the signature file is for another model: it has {} layers, the model has {}",
                golden.layers.size(), names.size());
  for (size_t l = 0; l < names.size(); ++l) {
    const auto& s = golden.layers[l];
    TESSERA_CHECK(s.name == names[l] && s.shape == shapes[l] && s.bits == bits[l],
                  "the signature file is for another model: layer {} is '{}' {} {}-bit there, "
                  "'{}' {} {}-bit here",
                  l, s.name, c10::str(s.shape), s.bits, names[l], c10::str(shapes[l]), bits[l]);
    TESSERA_CHECK(s.step == steps[l],
                  "the signature file is for another model: layer '{}' has quantization step {} "
                  "there and {} here",
                  names[l], s.step, steps[l]);
    TESSERA_CHECK(static_cast<int64_t>(s.signatures.size()) == layouts_[l].n_groups(),
                  "signature file layer '{}' has {} groups, expected {}", names[l],
                  s.signatures.size(), layouts_[l].n_groups());
  }
}

void Radar::check_golden(const std::vector<quant::QuantizedTensor>& weights,
                         const GoldenSignatures& golden) const {
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<int> bits;
  std::vector<double> steps;
  for (const auto& q : weights) {
    names.push_back(q.name);
    shapes.push_back(shape_of(q));
    bits.push_back(q.bits);
    steps.push_back(q.step);
  }
  check_golden(golden, names, shapes, bits, steps);
}

GoldenSignatures Radar::sign(const std::vector<quant::QuantizedTensor>& weights) const {
  check_layers(weights);
  GoldenSignatures golden;
  golden.options = options_;
  golden.key_id = key_id_;
  for (size_t l = 0; l < weights.size(); ++l) {
    LayerSignatures s;
    s.name = weights[l].name;
    s.shape = shape_of(weights[l]);
    s.bits = weights[l].bits;
    s.step = weights[l].step;
    layer_signatures(layouts_[l], weights[l], s.signatures);
    // With one check bit only B is kept (the reference's check_bit = 1).
    if (options_.check_bits == 1) {
      for (auto& sig : s.signatures) sig &= 1;
    }
    golden.layers.push_back(std::move(s));
  }
  return golden;
}

GoldenSignatures Radar::sign(const DeployedModel& model) const {
  model.check_layout(*this);
  GoldenSignatures golden;
  golden.options = options_;
  golden.key_id = key_id_;
  for (size_t l = 0; l < layouts_.size(); ++l) {
    const auto& info = model.layer(l);
    const LayerLayout& layout = layouts_[l];
    std::vector<uint32_t> a(static_cast<size_t>(layout.n_slots()));
    std::vector<uint32_t> b(a.size());
    fused_read(layout, model.codes(l), nullptr, 0.0f, a.data(), b.data());
    LayerSignatures s;
    s.name = info.name;
    s.shape = info.shape;
    s.bits = 8;
    s.step = info.step;
    signatures_from_masks(a, b, s.signatures);
    if (options_.check_bits == 1) {
      for (auto& sig : s.signatures) sig &= 1;
    }
    golden.layers.push_back(std::move(s));
  }
  return golden;
}

CheckResult Radar::check(const std::vector<quant::QuantizedTensor>& weights,
                         const GoldenSignatures& golden) const {
  check_layers(weights);
  check_golden(weights, golden);
  const uint8_t mask = options_.check_bits == 2 ? 3 : 1;
  CheckResult result;
  std::vector<uint8_t> current;
  for (size_t l = 0; l < weights.size(); ++l) {
    layer_signatures(layouts_[l], weights[l], current);
    const auto& expected = golden.layers[l].signatures;
    LayerCheck layer_check;
    for (size_t g = 0; g < current.size(); ++g) {
      if (((current[g] ^ expected[g]) & mask) != 0)
        layer_check.flagged_groups.push_back(static_cast<int64_t>(g));
    }
    if (!layer_check.flagged_groups.empty()) {
      layer_check.layer = l;
      layer_check.name = weights[l].name;
      result.layers.push_back(std::move(layer_check));
    }
  }
  return result;
}

SignatureMasks Radar::masks(const GoldenSignatures& golden) const {
  TESSERA_CHECK(golden.layers.size() == layouts_.size(),
                "the signature file is for another model: it has {} layers, the model has {}",
                golden.layers.size(), layouts_.size());
  SignatureMasks out;
  for (size_t l = 0; l < layouts_.size(); ++l) {
    const auto& sig = golden.layers[l].signatures;
    TESSERA_CHECK(static_cast<int64_t>(sig.size()) == layouts_[l].n_groups(),
                  "signature file layer '{}' has {} groups, expected {}", layouts_[l].name,
                  sig.size(), layouts_[l].n_groups());
    std::vector<uint32_t> a(static_cast<size_t>(layouts_[l].n_slots()), 0);
    std::vector<uint32_t> b(a.size(), 0);
    for (size_t g = 0; g < sig.size(); ++g) {
      a[g / 32] |= static_cast<uint32_t>((sig[g] >> 1) & 1) << (g % 32);
      b[g / 32] |= static_cast<uint32_t>(sig[g] & 1) << (g % 32);
    }
    out.a.push_back(std::move(a));
    out.b.push_back(std::move(b));
  }
  return out;
}

std::vector<int64_t> Radar::compare(size_t layer, const uint32_t* a, const uint32_t* b,
                                    const SignatureMasks& expected) const {
  std::vector<int64_t> flagged;
  const auto& ea = expected.a[layer];
  const auto& eb = expected.b[layer];
  const bool two_bits = options_.check_bits == 2;
  for (size_t q = 0; q < ea.size(); ++q) {
    uint32_t diff = (b[q] ^ eb[q]) | (two_bits ? (a[q] ^ ea[q]) : 0u);
    while (diff != 0) {
      const int i = __builtin_ctz(diff);
      flagged.push_back(static_cast<int64_t>(32 * q) + i);
      diff &= diff - 1;
    }
  }
  return flagged;
}

CheckResult Radar::check(const DeployedModel& model, const GoldenSignatures& golden) const {
  model.check_layout(*this);
  std::vector<std::string> names;
  std::vector<std::vector<int64_t>> shapes;
  std::vector<double> steps;
  for (size_t l = 0; l < model.n_layers(); ++l) {
    names.push_back(model.layer(l).name);
    shapes.push_back(model.layer(l).shape);
    steps.push_back(model.layer(l).step);
  }
  check_golden(golden, names, shapes, std::vector<int>(names.size(), 8), steps);
  const SignatureMasks expected = masks(golden);
  CheckResult result;
  for (size_t l = 0; l < layouts_.size(); ++l) {
    std::vector<uint32_t> a(expected.a[l].size()), b(a.size());
    fused_read(layouts_[l], model.codes(l), nullptr, 0.0f, a.data(), b.data());
    LayerCheck layer_check{l, names[l], compare(l, a.data(), b.data(), expected)};
    if (!layer_check.flagged_groups.empty()) result.layers.push_back(std::move(layer_check));
  }
  return result;
}

int64_t Radar::recover(std::vector<quant::QuantizedTensor>& weights, const CheckResult& result,
                       RecoveryMode mode, const GoldenSignatures* golden) const {
  check_layers(weights);
  int64_t n_zeroed = 0;
  for (const auto& layer_check : result.layers) {
    TESSERA_CHECK(layer_check.layer < weights.size(), "check result names layer {} of {}",
                  layer_check.layer, weights.size());
    auto& q = weights[layer_check.layer];
    int32_t* values = q.values.data_ptr<int32_t>();
    n_zeroed += recover_layer(
        layouts_[layer_check.layer], layer_check.flagged_groups, mode, q.bits,
        [values](int64_t i) { return values[i]; },
        [values](int64_t i, int32_t v) { values[i] = v; },
        golden != nullptr ? &golden->layers.at(layer_check.layer).signatures : nullptr,
        options_.check_bits == 2 ? 3 : 1);
  }
  return n_zeroed;
}

int64_t Radar::recover(DeployedModel& model, const CheckResult& result, RecoveryMode mode,
                       const GoldenSignatures* golden) const {
  model.check_layout(*this);
  int64_t n_zeroed = 0;
  for (const auto& layer_check : result.layers) {
    TESSERA_CHECK(layer_check.layer < model.n_layers(), "check result names layer {} of {}",
                  layer_check.layer, model.n_layers());
    int8_t* codes = model.codes(layer_check.layer);
    n_zeroed += recover_layer(
        layouts_[layer_check.layer], layer_check.flagged_groups, mode, 8,
        [codes](int64_t i) { return static_cast<int32_t>(codes[i]); },
        [codes](int64_t i, int32_t v) { codes[i] = static_cast<int8_t>(v); },
        golden != nullptr ? &golden->layers.at(layer_check.layer).signatures : nullptr,
        options_.check_bits == 2 ? 3 : 1);
  }
  return n_zeroed;
}

int64_t CheckResult::n_flagged_groups() const {
  int64_t n = 0;
  for (const auto& l : layers) n += static_cast<int64_t>(l.flagged_groups.size());
  return n;
}

bool CheckResult::is_flagged(size_t layer, int64_t group) const {
  for (const auto& l : layers) {
    if (l.layer == layer)
      return std::binary_search(l.flagged_groups.begin(), l.flagged_groups.end(), group);
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// The signature file

int64_t GoldenSignatures::n_groups() const {
  int64_t n = 0;
  for (const auto& l : layers) n += static_cast<int64_t>(l.signatures.size());
  return n;
}

int64_t GoldenSignatures::storage_bits() const { return n_groups() * options.check_bits; }

void GoldenSignatures::save(const std::string& path, const RadarKey& key) const {
  options.validate();
  TESSERA_CHECK(key.id() == key_id, "saving signatures made with key {} under key {}", key_id,
                key.id());
  nlohmann::json layer_list = nlohmann::json::array();
  std::vector<std::string> packed;
  safetensors::File file;
  for (const auto& l : layers) {
    layer_list.push_back({{"name", l.name},
                          {"shape", l.shape},
                          {"bits", l.bits},
                          {"step", l.step},
                          {"n_groups", l.signatures.size()}});
    packed.push_back(pack(l.signatures, options.check_bits));
    const std::string& bytes = packed.back();
    torch::Tensor t = torch::empty({static_cast<int64_t>(bytes.size())}, torch::kUInt8);
    std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(t.data_ptr<uint8_t>()));
    file.tensors.emplace_back(kTensorPrefix + l.name, t);
  }
  const std::string header = nlohmann::json{
      {"format", 2},
      {"layout", kLayoutName},
      {"group_size", options.group_size},
      {"check_bits", options.check_bits},
      {"block_weights", options.block_weights},
      {"small_layer_weights", options.small_layer_weights},
      {"key_id", key_id},
      {"layers", layer_list}}.dump();
  file.metadata[kHeaderKey] = header;
  file.metadata[kTagKey] = to_hex(hmac_sha256(key.bytes(), mac_message(header, packed)));
  safetensors::save(path, file);
}

GoldenSignatures GoldenSignatures::load(const std::string& path, const RadarKey& key) {
  const safetensors::File file = safetensors::load(path);
  auto header_it = file.metadata.find(kHeaderKey);
  auto tag_it = file.metadata.find(kTagKey);
  TESSERA_CHECK(header_it != file.metadata.end() && tag_it != file.metadata.end(),
                "'{}' is not a RADAR signature file (no '{}' metadata)", path, kHeaderKey);
  const std::string& header = header_it->second;
  nlohmann::json json = parse_json(header, fmt::format("signature file '{}': header", path));
  TESSERA_CHECK(json.is_object() && json.contains("key_id") && json["key_id"].is_string() &&
                    json.contains("layers") && json["layers"].is_array(),
                "signature file '{}': malformed header", path);
  const std::string file_key_id = json["key_id"].get<std::string>();
  TESSERA_CHECK(file_key_id == key.id(),
                "signature file '{}' was made with another key (key id {}; the given key's id "
                "is {})",
                path, file_key_id, key.id());
  // Authenticate everything before trusting any field of the header.
  std::vector<std::string> packed;
  for (const auto& layer : json["layers"]) {
    TESSERA_CHECK(layer.is_object() && layer.contains("name") && layer["name"].is_string(),
                  "signature file '{}': malformed layer entry", path);
    const torch::Tensor& t = file.at(kTensorPrefix + layer["name"].get<std::string>());
    TESSERA_CHECK(t.scalar_type() == torch::kUInt8 && t.dim() == 1,
                  "signature file '{}': signatures of '{}' must be a 1-D U8 tensor", path,
                  layer["name"].get<std::string>());
    const torch::Tensor c = t.contiguous();
    packed.emplace_back(reinterpret_cast<const char*>(c.data_ptr<uint8_t>()),
                        static_cast<size_t>(c.numel()));
  }
  const std::string expected = to_hex(hmac_sha256(key.bytes(), mac_message(header, packed)));
  TESSERA_CHECK(constant_time_equal(expected, tag_it->second),
                "signature file '{}' failed its HMAC check: it was modified after signing", path);
  GoldenSignatures golden;
  try {
    const int format = json.at("format").get<int>();
    TESSERA_CHECK(format != 1,
                  "signature file '{}' has format 1 (the layer-wide layout of older tessera "
                  "versions); run `tessera bitflip protect` again",
                  path);
    TESSERA_CHECK(format == 2 && json.value("layout", std::string()) == kLayoutName,
                  "signature file '{}': unknown format {}", path, json.at("format").dump());
    golden.options.group_size = json.at("group_size").get<int64_t>();
    golden.options.check_bits = json.at("check_bits").get<int>();
    golden.options.block_weights = json.at("block_weights").get<int64_t>();
    // Absent from files made before the option existed, which used G for every layer.
    golden.options.small_layer_weights = json.value("small_layer_weights", int64_t{0});
    golden.options.validate();
    golden.key_id = file_key_id;
    size_t i = 0;
    for (const auto& layer : json["layers"]) {
      LayerSignatures s;
      s.name = layer.at("name").get<std::string>();
      s.shape = layer.at("shape").get<std::vector<int64_t>>();
      s.bits = layer.at("bits").get<int>();
      s.step = layer.at("step").get<double>();
      const auto n_groups = layer.at("n_groups").get<int64_t>();
      const int per_byte = 8 / golden.options.check_bits;
      TESSERA_CHECK(n_groups >= 0 && static_cast<int64_t>(packed[i].size()) ==
                                         (n_groups + per_byte - 1) / per_byte,
                    "signature file '{}': layer '{}' has {} bytes for {} groups", path, s.name,
                    packed[i].size(), n_groups);
      s.signatures = unpack(packed[i], n_groups, golden.options.check_bits);
      golden.layers.push_back(std::move(s));
      ++i;
    }
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "signature file '{}': malformed header: {}", path, e.what());
  }
  return golden;
}

}  // namespace tessera::bitflip
