// RADAR signatures, secret layouts, the authenticated signature file, check and recovery
// (research/hw_security.md 3.3; reference zlijingtao/radar_check).
#include "tessera/bitflip/radar.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <random>

#include "tessera/bitflip/hmac.h"
#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/random.h"
#include "tessera/core/safetensors.h"

namespace tessera::bitflip {

namespace {

constexpr const char* kHeaderKey = "tessera.radar";
constexpr const char* kTagKey = "tessera.radar.hmac";
constexpr const char* kTensorPrefix = "signatures/";

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

/// Row-major index in the original layout of element `r` of the reference layout: conv
/// [Cout, Cin, kh, kw] viewed as [Cin, kh, kw, Cout]; anything else unchanged.
int64_t reference_to_flat(int64_t r, const std::vector<int64_t>& shape) {
  if (shape.size() != 4) return r;
  const int64_t cout = shape[0];
  const int64_t inner = shape[1] * shape[2] * shape[3];  // Cin * kh * kw
  const int64_t o = r % cout;
  const int64_t rest = r / cout;  // (i * kh + y) * kw + x
  return o * inner + rest;
}

/// Checksum of one layer's groups into `out` (one signature per group). One sequential pass
/// over the weights in memory order, accumulating into per-group sums and negative counts; the
/// result equals group_checksum() over each group (checked in the tests).
void layer_signatures(const LayerLayout& layout, const quant::QuantizedTensor& q,
                      std::vector<uint8_t>& out) {
  const int32_t* values = q.values.data_ptr<int32_t>();
  const int64_t n = layout.numel();
  const auto n_groups = static_cast<size_t>(layout.n_groups());
  const uint32_t mask = (uint32_t{1} << q.bits) - 1;
  const uint32_t half = uint32_t{1} << (q.bits - 1);
  // Unsigned sums wrap mod 2^32; only their low n bits are used, so that is exact.
  std::vector<uint32_t> sums(n_groups, 0);
  std::vector<uint32_t> negatives(n_groups, 0);
  const int32_t* group_key = layout.group_key.data();
  for (int64_t i = 0; i < n; ++i) {
    const int32_t gk = group_key[i];
    const int32_t v = values[i];
    // p_i = wrap_n(k_i * w_i): keep the low n bits, read bit n-1 as the sign.
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
  const std::string text = read_file(path);
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

RadarKey RadarKey::generate() {
  std::random_device device;
  std::string secret(32, '\0');
  for (size_t i = 0; i < 32; i += 4) {
    const uint32_t word = device();
    for (size_t j = 0; j < 4; ++j) secret[i + j] = static_cast<char>((word >> (8 * j)) & 0xff);
  }
  return RadarKey(std::move(secret));
}

void RadarKey::save(const std::string& path) const {
  write_file_atomic(
      path, to_hex(reinterpret_cast<const uint8_t*>(secret_.data()), secret_.size()) + "\n");
}

std::string RadarKey::id() const {
  return to_hex(hmac_sha256(secret_, "tessera.radar.key-id")).substr(0, 16);
}

// ---------------------------------------------------------------------------------------------
// Options, checksums, layouts

void RadarOptions::validate() const {
  TESSERA_CHECK(group_size >= 2 && group_size <= (int64_t{1} << 20),
                "RADAR group size G must be in [2, 1048576], got {}", group_size);
  TESSERA_CHECK(check_bits == 1 || check_bits == 2, "RADAR check bits must be 1 or 2, got {}",
                check_bits);
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
  TESSERA_CHECK(flat_index >= 0 && flat_index < numel(),
                "element {} out of range for layer '{}' with {} weights", flat_index, name,
                numel());
  return position_of[static_cast<size_t>(flat_index)] / group_size;
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
    TESSERA_CHECK(q.numel() > 0 && q.numel() < (int64_t{1} << 31),
                  "layer '{}' has {} weights; RADAR needs 1 .. 2^31-1", q.name, q.numel());
    LayerLayout layout;
    layout.name = q.name;
    layout.shape = shape_of(q);
    layout.group_size = options_.group_size;
    const int64_t n = q.numel();
    // The secret interleaving: a keyed Fisher-Yates shuffle of the reference layout.
    const std::string label = fmt::format("{}\n{}\n{}", q.name, n, options_.group_size);
    std::mt19937_64 perm_rng = keyed_rng(key.bytes(), "perm\n" + label);
    std::vector<int32_t> permutation(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) permutation[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    random::shuffle(permutation, perm_rng);
    layout.order.resize(static_cast<size_t>(n));
    layout.position_of.resize(static_cast<size_t>(n));
    for (int64_t p = 0; p < n; ++p) {
      const int64_t flat = reference_to_flat(permutation[static_cast<size_t>(p)], layout.shape);
      layout.order[static_cast<size_t>(p)] = static_cast<int32_t>(flat);
      layout.position_of[static_cast<size_t>(flat)] = static_cast<int32_t>(p);
    }
    // Secret keys: per group a balanced +-1 vector (ceil(G/2) entries +1) in a keyed random
    // order; the tail group takes the first n mod G entries (RECONSTRUCTED: the reference uses
    // a fixed public codebook of balanced rows, see docs/systems/bitflip.md).
    std::mt19937_64 key_rng = keyed_rng(key.bytes(), "keys\n" + label);
    const int64_t g_size = options_.group_size;
    std::vector<int8_t> base(static_cast<size_t>(g_size));
    layout.keys.resize(static_cast<size_t>(n));
    for (int64_t begin = 0; begin < n; begin += g_size) {
      for (int64_t i = 0; i < g_size; ++i)
        base[static_cast<size_t>(i)] = i < (g_size + 1) / 2 ? 1 : -1;
      random::shuffle(base, key_rng);
      const int64_t end = std::min(begin + g_size, n);
      for (int64_t p = begin; p < end; ++p)
        layout.keys[static_cast<size_t>(p)] = base[static_cast<size_t>(p - begin)];
    }
    layout.group_key.resize(static_cast<size_t>(n));
    for (int64_t p = 0; p < n; ++p) {
      const int32_t key_bit = layout.keys[static_cast<size_t>(p)] < 0 ? 1 : 0;
      layout.group_key[static_cast<size_t>(layout.order[static_cast<size_t>(p)])] =
          static_cast<int32_t>(((p / g_size) << 1) | key_bit);
    }
    layouts_.push_back(std::move(layout));
  }
}

const LayerLayout& Radar::layout(size_t layer) const {
  TESSERA_CHECK(layer < layouts_.size(), "layer {} out of range ({} layers)", layer,
                layouts_.size());
  return layouts_[layer];
}

void Radar::check_compatible(const std::vector<quant::QuantizedTensor>& weights,
                             const GoldenSignatures* golden) const {
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
  if (golden == nullptr) return;
  TESSERA_CHECK(golden->key_id == key_id_,
                "the signatures were made with another key (key id {}, this key is {})",
                golden->key_id, key_id_);
  TESSERA_CHECK(golden->options.group_size == options_.group_size &&
                    golden->options.check_bits == options_.check_bits,
                "the signatures use G = {} with {} check bit(s) but the check uses G = {} with {}",
                golden->options.group_size, golden->options.check_bits, options_.group_size,
                options_.check_bits);
  TESSERA_CHECK(golden->layers.size() == weights.size(),
                "the signature file is for another model: it has {} layers, the model has {}",
                golden->layers.size(), weights.size());
  for (size_t l = 0; l < weights.size(); ++l) {
    const auto& q = weights[l];
    const auto& s = golden->layers[l];
    TESSERA_CHECK(s.name == q.name && s.shape == shape_of(q) && s.bits == q.bits,
                  "the signature file is for another model: layer {} is '{}' {} {}-bit there, "
                  "'{}' {} {}-bit here",
                  l, s.name, c10::str(s.shape), s.bits, q.name, c10::str(q.values.sizes()), q.bits);
    TESSERA_CHECK(s.step == q.step,
                  "the signature file is for another model: layer '{}' has quantization step {} "
                  "there and {} here",
                  q.name, s.step, q.step);
    TESSERA_CHECK(static_cast<int64_t>(s.signatures.size()) == layouts_[l].n_groups(),
                  "signature file layer '{}' has {} groups, expected {}", q.name,
                  s.signatures.size(), layouts_[l].n_groups());
  }
}

GoldenSignatures Radar::sign(const std::vector<quant::QuantizedTensor>& weights) const {
  check_compatible(weights, nullptr);
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

CheckResult Radar::check(const std::vector<quant::QuantizedTensor>& weights,
                         const GoldenSignatures& golden) const {
  check_compatible(weights, &golden);
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

int64_t Radar::recover(std::vector<quant::QuantizedTensor>& weights,
                       const CheckResult& result) const {
  check_compatible(weights, nullptr);
  int64_t n_zeroed = 0;
  for (const auto& layer_check : result.layers) {
    TESSERA_CHECK(layer_check.layer < weights.size(), "check result names layer {} of {}",
                  layer_check.layer, weights.size());
    const LayerLayout& layout = layouts_[layer_check.layer];
    int32_t* values = weights[layer_check.layer].values.data_ptr<int32_t>();
    for (const int64_t g : layer_check.flagged_groups) {
      TESSERA_CHECK(g >= 0 && g < layout.n_groups(), "group {} out of range for layer '{}'", g,
                    layout.name);
      const int64_t end = std::min((g + 1) * layout.group_size, layout.numel());
      for (int64_t p = g * layout.group_size; p < end; ++p) {
        values[layout.order[static_cast<size_t>(p)]] = 0;
        ++n_zeroed;
      }
    }
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
      {"format", 1},
      {"group_size", options.group_size},
      {"check_bits", options.check_bits},
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
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(header);
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "signature file '{}': unreadable header: {}", path, e.what());
  }
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
    TESSERA_CHECK(json.at("format").get<int>() == 1, "signature file '{}': unknown format {}", path,
                  json.at("format").dump());
    golden.options.group_size = json.at("group_size").get<int64_t>();
    golden.options.check_bits = json.at("check_bits").get<int>();
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
