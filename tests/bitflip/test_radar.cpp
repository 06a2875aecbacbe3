// RADAR: signature arithmetic against hand-computed groups, the fast layer checksum against the
// naive per-group one, detection, recovery, tail groups, and the authenticated signature file.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <random>
#include <set>

#include "tessera/bitflip/crc_guard.h"
#include "tessera/bitflip/radar.h"
#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "test_support.h"

namespace tessera::bitflip {
namespace {

using tessera::testing::error_of;
using tessera::testing::SeededTest;
using tessera::testing::TempDir;

/// A layer of given shape holding seeded random 8-bit values in [-127, 127].
quant::QuantizedTensor random_layer(const std::string& name, std::vector<int64_t> shape,
                                    uint64_t seed, double step = 0.01) {
  quant::QuantizedTensor q;
  q.name = name;
  q.bits = 8;
  q.step = step;
  auto gen = at::detail::createCPUGenerator(seed);
  q.values = torch::randint(-127, 128, shape, gen, torch::kInt32).contiguous();
  return q;
}

std::vector<quant::QuantizedTensor> small_model(uint64_t seed) {
  return {random_layer("conv.weight", {8, 3, 3, 3}, seed),
          random_layer("fc.weight", {10, 20}, seed + 1, 0.02)};
}

std::vector<quant::QuantizedTensor> copy_of(const std::vector<quant::QuantizedTensor>& w) {
  std::vector<quant::QuantizedTensor> out = w;
  for (auto& q : out) q.values = q.values.clone();
  return out;
}

// The worked examples of research/hw_security.md 3.3: G = 8, key row 0 of the codebook,
// group w = [3, -2, 10, 0, 5, -7, 1, 2]. Values computed by hand:
//   products k*w = [3, -2, 10, 0, -5, 7, -1, -2]: s = 10, four negative -> [A, B] = [0, 1].
TEST(RadarSignature, MatchesHandComputedWorkedExamples) {
  const int8_t keys[8] = {1, 1, 1, 1, -1, -1, -1, -1};
  struct Case {
    const char* what;
    std::vector<int32_t> w;
    int32_t sum;
    int64_t n_negative;
    int a, b;
  };
  const std::vector<Case> cases = {
      {"clean", {3, -2, 10, 0, 5, -7, 1, 2}, 10, 4, 0, 1},
      // MSB of w0: 3 -> -125; s = 10 - 128 = -118, five negative: B toggles.
      {"MSB w0", {-125, -2, 10, 0, 5, -7, 1, 2}, -118, 5, 0, 0},
      // MSB of w0 and w2 (both keys +1): s = 10 - 256 = 10 (mod 256), six negative: A toggles.
      {"MSB w0+w2", {-125, -2, -118, 0, 5, -7, 1, 2}, 10, 6, 1, 1},
      // MSB of w0 (key +1) and w4 (key -1): the changes cancel, undetected.
      {"MSB w0+w4", {-125, -2, 10, 0, -123, -7, 1, 2}, 10, 4, 0, 1},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    const GroupChecksum got = group_checksum(c.w.data(), keys, 8, 8);
    EXPECT_EQ(got.sum, c.sum);
    EXPECT_EQ(got.n_negative, c.n_negative);
    EXPECT_EQ(got.a, c.a);
    EXPECT_EQ(got.b, c.b);
    EXPECT_EQ(got.signature(), (c.a << 1) | c.b);
  }
}

TEST(RadarSignature, WrapsProductsLikeInt8) {
  // k = -1, w = -128: the product 128 wraps to -128 (negative); 127 + 1 wraps to -128.
  const int8_t keys[2] = {-1, 1};
  const int32_t w[2] = {-128, 0};
  const GroupChecksum c = group_checksum(w, keys, 2, 8);
  EXPECT_EQ(c.sum, -128);
  EXPECT_EQ(c.n_negative, 1);
  EXPECT_EQ(c.b, 0);
  const int32_t w2[2] = {-127, 1};  // products 127 and 1: sum 128 wraps to -128
  EXPECT_EQ(group_checksum(w2, keys, 2, 8).sum, -128);
}

TEST_F(SeededTest, AnySingleMsbFlipTogglesBAndSameDirectionPairTogglesA) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<int32_t> w(8);
    std::vector<int8_t> k(8);
    for (int i = 0; i < 8; ++i) {
      w[i] = static_cast<int32_t>(rng() % 255) - 127;
      k[i] = (rng() & 1) ? 1 : -1;
    }
    const GroupChecksum clean = group_checksum(w.data(), k.data(), 8, 8);
    const auto flip_msb = [](int32_t v) {
      return quant::from_twos_complement(quant::to_twos_complement(v, 8) ^ 0x80u, 8);
    };
    const int i = static_cast<int>(rng() % 8);
    auto one = w;
    one[i] = flip_msb(one[i]);
    EXPECT_NE(group_checksum(one.data(), k.data(), 8, 8).b, clean.b) << "trial " << trial;
    // Two MSB flips: the sum moves by 0 or +-256, so B never changes; A changes exactly when
    // both products cross zero in the same direction (n_negative changes by +-2).
    int j = static_cast<int>(rng() % 8);
    if (j == i) j = (i + 1) % 8;
    auto two = one;
    two[j] = flip_msb(two[j]);
    const GroupChecksum after = group_checksum(two.data(), k.data(), 8, 8);
    EXPECT_EQ(after.b, clean.b) << "trial " << trial;
    const int64_t delta = after.n_negative - clean.n_negative;
    if (delta == 2 || delta == -2) {
      EXPECT_NE(after.a, clean.a) << "trial " << trial;
    }
    if (delta == 0) {
      EXPECT_EQ(after.a, clean.a) << "trial " << trial;
    }
  }
}

TEST_F(SeededTest, LayoutCoversEveryWeightOnceWithOneCodePerRowAndBalancedKeys) {
  const auto weights = small_model(1);
  for (int64_t g_size : {2, 5, 8, 16}) {
    const Radar radar(RadarKey::from_seed(3), RadarOptions{g_size, 2, 256}, weights);
    for (size_t l = 0; l < weights.size(); ++l) {
      const auto& layout = radar.layout(l);
      ASSERT_EQ(layout.padded % (32 * g_size), 0);
      ASSERT_GE(layout.padded, layout.numel);
      ASSERT_LT(layout.padded - layout.numel, 32 * g_size);
      std::vector<int> seen(static_cast<size_t>(layout.padded), 0);
      for (int64_t g = 0; g < layout.n_groups(); ++g) {
        std::set<int64_t> rows;
        for (int64_t j = 0; j < g_size; ++j) {
          const int64_t flat = layout.element(g, j);
          ASSERT_GE(flat, 0);
          ASSERT_LT(flat, layout.padded);
          ++seen[static_cast<size_t>(flat)];
          if (flat < layout.numel) {
            EXPECT_EQ(layout.group_of(flat), g);
          }
          // Within its block, a group takes one code from each of the G rows.
          for (const auto& block : layout.blocks) {
            const int64_t width = 32 * block.slots;
            if (flat >= block.begin && flat < block.begin + g_size * width)
              rows.insert((flat - block.begin) / width);
          }
        }
        EXPECT_EQ(static_cast<int64_t>(rows.size()), g_size) << "G " << g_size << " group " << g;
      }
      for (int64_t i = 0; i < layout.padded; ++i) ASSERT_EQ(seen[i], 1) << "element " << i;
      int key_sum = 0;
      for (int64_t j = 0; j < g_size; ++j) key_sum += layout.key(j);
      EXPECT_EQ(key_sum, g_size % 2);
    }
  }
  const Radar radar(RadarKey::from_seed(3), RadarOptions{8, 2}, weights);
  const Radar same(RadarKey::from_seed(3), RadarOptions{8, 2}, weights);
  const Radar other(RadarKey::from_seed(4), RadarOptions{8, 2}, weights);
  EXPECT_EQ(radar.layout(0).chunk, same.layout(0).chunk);
  EXPECT_EQ(radar.layout(0).controls, same.layout(0).controls);
  EXPECT_EQ(radar.layout(0).group_key, same.layout(0).group_key);
  EXPECT_NE(radar.layout(0).group_key, other.layout(0).group_key);
}

/// The naive per-group checksum of 3.3 over the layout's elements (padding reads as 0).
uint8_t naive_signature(const LayerLayout& layout, const int32_t* values, int64_t g, int bits) {
  std::vector<int32_t> w;
  std::vector<int8_t> k;
  for (int64_t j = 0; j < layout.group_size; ++j) {
    const int64_t flat = layout.element(g, j);
    w.push_back(flat < layout.numel ? values[flat] : 0);
    k.push_back(static_cast<int8_t>(layout.key(j)));
  }
  return group_checksum(w.data(), k.data(), static_cast<int64_t>(w.size()), bits).signature();
}

TEST_F(SeededTest, LayerSignaturesMatchNaivePerGroupChecksum) {
  const auto weights = small_model(2);
  for (int64_t g_size : {2, 5, 8, 16, 64}) {
    const Radar radar(RadarKey::from_seed(5), RadarOptions{g_size, 2}, weights);
    const GoldenSignatures golden = radar.sign(weights);
    for (size_t l = 0; l < weights.size(); ++l) {
      const auto& layout = radar.layout(l);
      const int32_t* v = weights[l].values.data_ptr<int32_t>();
      ASSERT_EQ(static_cast<int64_t>(golden.layers[l].signatures.size()), layout.n_groups());
      for (int64_t g = 0; g < layout.n_groups(); ++g) {
        EXPECT_EQ(golden.layers[l].signatures[g], naive_signature(layout, v, g, 8))
            << "G " << g_size << " layer " << l << " group " << g;
      }
    }
  }
}

/// Real (non-padding) weights of a group.
int64_t real_members(const LayerLayout& layout, int64_t g) {
  int64_t n = 0;
  for (int64_t j = 0; j < layout.group_size; ++j) n += layout.element(g, j) < layout.numel;
  return n;
}

TEST_F(SeededTest, DetectsEveryMsbFlipAndRecoveryZeroesExactlyItsGroup) {
  auto weights = small_model(3);
  const Radar radar(RadarKey::from_seed(9), RadarOptions{8, 2}, weights);
  const GoldenSignatures golden = radar.sign(weights);
  EXPECT_TRUE(radar.check(weights, golden).clean());
  for (size_t l = 0; l < weights.size(); ++l) {
    for (int64_t index = 0; index < weights[l].numel(); index += 7) {
      auto attacked = copy_of(weights);
      attacked[l].flip_bit(index, 7);
      const CheckResult result = radar.check(attacked, golden);
      ASSERT_EQ(result.n_flagged_groups(), 1) << "layer " << l << " index " << index;
      const int64_t group = radar.layout(l).group_of(index);
      EXPECT_TRUE(result.is_flagged(l, group));
      EXPECT_EQ(radar.recover(attacked, result), real_members(radar.layout(l), group));
      // Exactly the group's weights are zero now; everything else is untouched.
      const int32_t* before = weights[l].values.data_ptr<int32_t>();
      const int32_t* after = attacked[l].values.data_ptr<int32_t>();
      for (int64_t i = 0; i < weights[l].numel(); ++i) {
        if (radar.layout(l).group_of(i) == group)
          EXPECT_EQ(after[i], 0);
        else
          EXPECT_EQ(after[i], before[i]);
      }
    }
  }
}

TEST_F(SeededTest, GroupSizeThatDoesNotDivideTheLayerStillCoversTheTail) {
  // 10 weights, G = 4: padded with zero codes to 128 (32 G); a flip in any weight is caught.
  std::vector<quant::QuantizedTensor> weights = {random_layer("fc.weight", {2, 5}, 11)};
  const Radar radar(RadarKey::from_seed(1), RadarOptions{4, 2}, weights);
  EXPECT_EQ(radar.layout(0).padded, 128);
  EXPECT_EQ(radar.layout(0).n_groups(), 32);
  const GoldenSignatures golden = radar.sign(weights);
  for (int64_t index = 0; index < 10; ++index) {
    auto attacked = copy_of(weights);
    attacked[0].flip_bit(index, 7);
    const CheckResult result = radar.check(attacked, golden);
    EXPECT_TRUE(result.is_flagged(0, radar.layout(0).group_of(index))) << "index " << index;
  }
  // G larger than the layer.
  const Radar big(RadarKey::from_seed(1), RadarOptions{64, 2}, weights);
  auto attacked = copy_of(weights);
  attacked[0].flip_bit(3, 7);
  EXPECT_FALSE(big.check(attacked, big.sign(weights)).clean());
}

TEST(RecoveryMode, MarkIsTheTopTwoBitsDiffering) {
  // PBFA's typical flips (3.2): 21 -> -107 and -1 -> 127 carry the mark; small weights do not.
  EXPECT_TRUE(is_marked(-107, 8));
  EXPECT_TRUE(is_marked(127, 8));
  EXPECT_TRUE(is_marked(64, 8));
  EXPECT_TRUE(is_marked(-65, 8));
  EXPECT_FALSE(is_marked(63, 8));
  EXPECT_FALSE(is_marked(-64, 8));
  EXPECT_FALSE(is_marked(0, 8));
  EXPECT_FALSE(is_marked(-1, 8));
  for (int v = -63; v < 64; ++v) {
    const int32_t flipped = quant::from_twos_complement(quant::to_twos_complement(v, 8) ^ 0x80u, 8);
    EXPECT_TRUE(is_marked(flipped, 8)) << v;
  }
  EXPECT_EQ(parse_recovery_mode("marked"), RecoveryMode::zero_marked);
  EXPECT_EQ(recovery_mode_name(parse_recovery_mode("group")), "group");
  EXPECT_EQ(parse_recovery_mode("restore"), RecoveryMode::restore_marked);
  EXPECT_NE(error_of([] { parse_recovery_mode("all"); }).find("group, marked or restore"),
            std::string::npos);
}

TEST_F(SeededTest, MarkedRecoveryZeroesOnlyTheFlippedWeightOrTheWholeGroupWithoutAMark) {
  // Small weights (|w| < 32), as in a trained layer.
  quant::QuantizedTensor q = random_layer("fc.weight", {16, 32}, 12);
  q.values = torch::remainder(q.values, 63) - 31;
  std::vector<quant::QuantizedTensor> weights = {q};
  weights[0].values.data_ptr<int32_t>()[100] = 100;  // one large clean weight
  const Radar radar(RadarKey::from_seed(2), RadarOptions{8, 2}, weights);
  const GoldenSignatures golden = radar.sign(weights);
  const auto& layout = radar.layout(0);
  for (const int64_t index : {int64_t{5}, int64_t{100}, int64_t{311}}) {
    auto marked = copy_of(weights);
    marked[0].flip_bit(index, 7);
    auto whole = copy_of(marked);
    const CheckResult result = radar.check(marked, golden);
    ASSERT_TRUE(result.is_flagged(0, layout.group_of(index)));
    const int64_t zeroed = radar.recover(marked, result, RecoveryMode::zero_marked);
    const int64_t group = layout.group_of(index);
    if (index != 100) {
      // The flipped small weight now carries the mark and is zeroed, with the large clean
      // weight only if it shares the group; nothing else changes.
      const bool shares = layout.group_of(100) == group;
      EXPECT_EQ(zeroed, shares ? 2 : 1);
      for (int64_t i = 0; i < q.numel(); ++i)
        EXPECT_EQ(
            marked[0].values.data_ptr<int32_t>()[i],
            i == index || (shares && i == 100) ? 0 : weights[0].values.data_ptr<int32_t>()[i]);
    } else {
      // 100 -> -28 carries no mark: the whole group is zeroed, as by the paper's recovery.
      EXPECT_EQ(zeroed, real_members(layout, group));
    }
    EXPECT_EQ(radar.recover(whole, result, RecoveryMode::zero_group), real_members(layout, group));
  }
}

TEST_F(SeededTest, RestoreRecoveryFlipsTheMarkedMsbBackWhenTheSignatureConfirmsIt) {
  quant::QuantizedTensor q = random_layer("fc.weight", {16, 32}, 13);
  q.values = torch::remainder(q.values, 63) - 31;  // small weights: no clean weight is marked
  std::vector<quant::QuantizedTensor> weights = {q};
  const Radar radar(RadarKey::from_seed(4), RadarOptions{8, 2}, weights);
  const GoldenSignatures golden = radar.sign(weights);
  for (const int64_t index : {int64_t{0}, int64_t{77}, int64_t{300}, int64_t{511}}) {
    auto attacked = copy_of(weights);
    attacked[0].flip_bit(index, 7);
    const CheckResult result = radar.check(attacked, golden);
    EXPECT_EQ(radar.recover(attacked, result, RecoveryMode::restore_marked, &golden), 1);
    EXPECT_TRUE(torch::equal(attacked[0].values, weights[0].values)) << "index " << index;
    EXPECT_TRUE(radar.check(attacked, golden).clean());
  }
  auto attacked = copy_of(weights);
  attacked[0].flip_bit(5, 7);
  EXPECT_NE(error_of([&] {
              radar.recover(attacked, radar.check(attacked, golden), RecoveryMode::restore_marked);
            }).find("golden"),
            std::string::npos);
}

TEST(RadarOptions, RejectsBadGroupSizeAndCheckBits) {
  const std::vector<quant::QuantizedTensor> weights = {random_layer("w", {4, 4}, 1)};
  EXPECT_NE(error_of([&] {
              Radar(RadarKey::from_seed(1), RadarOptions{1, 2}, weights);
            }).find("group size"),
            std::string::npos);
  EXPECT_NE(error_of([&] { Radar(RadarKey::from_seed(1), RadarOptions{0, 2}, weights); }), "");
  EXPECT_NE(error_of([&] {
              Radar(RadarKey::from_seed(1), RadarOptions{8, 3}, weights);
            }).find("check bits"),
            std::string::npos);
}

TEST_F(SeededTest, SignatureFileRoundTripsAndStorageIsTwoBitsPerGroup) {
  TempDir dir;
  const auto weights = small_model(4);
  const RadarKey key = RadarKey::from_seed(21);
  const Radar radar(key, RadarOptions{8, 2}, weights);
  const GoldenSignatures golden = radar.sign(weights);
  golden.save(dir.file("sig.radar"), key);
  const GoldenSignatures loaded = GoldenSignatures::load(dir.file("sig.radar"), key);
  ASSERT_EQ(loaded.layers.size(), golden.layers.size());
  for (size_t l = 0; l < golden.layers.size(); ++l) {
    EXPECT_EQ(loaded.layers[l].signatures, golden.layers[l].signatures);
    EXPECT_EQ(loaded.layers[l].step, golden.layers[l].step);
  }
  // 216 + 200 weights, G = 8: each padded to 256 codes, 32 + 32 groups, 2 bits each.
  EXPECT_EQ(golden.n_groups(), 64);
  EXPECT_EQ(golden.storage_bits(), 128);
  EXPECT_TRUE(radar.check(weights, loaded).clean());
}

TEST_F(SeededTest, TamperedSignatureFileFailsItsHmac) {
  TempDir dir;
  const auto weights = small_model(5);
  const RadarKey key = RadarKey::from_seed(22);
  const Radar radar(key, RadarOptions{8, 2}, weights);
  radar.sign(weights).save(dir.file("sig.radar"), key);
  const std::string bytes = read_file(dir.file("sig.radar"));
  // Flip one bit in the last byte (signature data) and, separately, in the header's G value.
  std::string data_edit = bytes;
  data_edit.back() = static_cast<char>(data_edit.back() ^ 0x01);
  tessera::testing::write_bytes(dir.file("data.radar"), data_edit);
  EXPECT_NE(error_of([&] { GoldenSignatures::load(dir.file("data.radar"), key); }).find("HMAC"),
            std::string::npos);
  std::string header_edit = bytes;
  const size_t at = header_edit.find("\\\"group_size\\\":8");
  ASSERT_NE(at, std::string::npos);
  header_edit[at + std::string("\\\"group_size\\\":").size()] = '9';
  tessera::testing::write_bytes(dir.file("header.radar"), header_edit);
  EXPECT_NE(error_of([&] { GoldenSignatures::load(dir.file("header.radar"), key); }).find("HMAC"),
            std::string::npos);
  // A truncated file is an error too, never a pass.
  tessera::testing::write_bytes(dir.file("short.radar"), bytes.substr(0, bytes.size() / 2));
  EXPECT_NE(error_of([&] { GoldenSignatures::load(dir.file("short.radar"), key); }), "");
}

TEST_F(SeededTest, WrongKeyIsReportedAsSuch) {
  TempDir dir;
  const auto weights = small_model(6);
  const RadarKey key = RadarKey::from_seed(23);
  Radar(key, RadarOptions{8, 2}, weights).sign(weights).save(dir.file("sig.radar"), key);
  EXPECT_NE(error_of([&] {
              GoldenSignatures::load(dir.file("sig.radar"), RadarKey::from_seed(24));
            }).find("another key"),
            std::string::npos);
  // And a golden set checked by a RADAR built from another key is refused, not compared.
  const GoldenSignatures golden = GoldenSignatures::load(dir.file("sig.radar"), key);
  const Radar wrong(RadarKey::from_seed(24), RadarOptions{8, 2}, weights);
  EXPECT_NE(error_of([&] { wrong.check(weights, golden); }).find("another key"), std::string::npos);
}

TEST_F(SeededTest, SignaturesOfAnotherModelOrGroupSizeAreRefused) {
  const RadarKey key = RadarKey::from_seed(25);
  const auto weights = small_model(7);
  const GoldenSignatures golden = Radar(key, RadarOptions{8, 2}, weights).sign(weights);
  // Same architecture, other weights (another quantization step): refused by name.
  auto other = small_model(8);
  other[1].step = 0.03;
  const Radar radar(key, RadarOptions{8, 2}, other);
  EXPECT_NE(error_of([&] { radar.check(other, golden); }).find("another model"), std::string::npos);
  // Same steps but other integers: not an error, but a loud mismatch.
  auto same_steps = small_model(8);
  const CheckResult result = Radar(key, RadarOptions{8, 2}, same_steps).check(same_steps, golden);
  EXPECT_GT(result.n_flagged_groups(), 10);
  // Another architecture.
  std::vector<quant::QuantizedTensor> smaller = {weights[0]};
  EXPECT_NE(error_of([&] { Radar(key, RadarOptions{8, 2}, smaller).check(smaller, golden); }), "");
  // Another G.
  EXPECT_NE(error_of([&] {
              Radar(key, RadarOptions{16, 2}, weights).check(weights, golden);
            }).find("G = 8"),
            std::string::npos);
}

TEST_F(SeededTest, SmallLayersGetGroupsOfTwoAndTheSettingTravelsWithTheSignatures) {
  TempDir dir;
  const auto weights = small_model(9);  // 216 and 200 weights
  const RadarKey key = RadarKey::from_seed(26);
  RadarOptions options{8, 2};
  options.small_layer_weights = 210;  // the 200-weight layer only
  const Radar radar(key, options, weights);
  EXPECT_EQ(radar.layout(0).group_size, 8);
  EXPECT_EQ(radar.layout(0).n_groups(), 32);  // 256 codes: 32 groups whatever G
  EXPECT_EQ(radar.layout(1).group_size, 2);
  EXPECT_EQ(radar.layout(1).n_groups(), 128);  // 256 codes (a multiple of 64): 128 groups
  const GoldenSignatures golden = radar.sign(weights);
  golden.save(dir.file("sig.radar"), key);
  const GoldenSignatures loaded = GoldenSignatures::load(dir.file("sig.radar"), key);
  EXPECT_EQ(loaded.options.small_layer_weights, 210);
  EXPECT_TRUE(radar.check(weights, loaded).clean());
  // Every MSB flip of the small layer is caught in its group of two.
  for (int64_t index = 0; index < weights[1].numel(); index += 9) {
    auto attacked = copy_of(weights);
    attacked[1].flip_bit(index, 7);
    const CheckResult result = radar.check(attacked, loaded);
    ASSERT_EQ(result.n_flagged_groups(), 1) << index;
    EXPECT_TRUE(result.is_flagged(1, radar.layout(1).group_of(index)));
  }
  // A check set up without the option is refused, not compared.
  EXPECT_NE(error_of([&] {
              Radar(key, RadarOptions{8, 2}, weights).check(weights, loaded);
            }).find("G = 2 below 210"),
            std::string::npos);
  options.small_layer_weights = -1;
  EXPECT_NE(error_of([&] { Radar(key, options, weights); }).find("small-layer"), std::string::npos);
}

mode_t mode_of(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(::stat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

/// A key-file body written with mode 0600.
void write_private(const std::string& path, const std::string& bytes) {
  tessera::testing::write_bytes(path, bytes);
  ::chmod(path.c_str(), 0600);
}

TEST_F(SeededTest, KeyFileIsCreated0600AndRoundTripsAndRejectsBadContent) {
  TempDir dir;
  const RadarKey key = RadarKey::generate();
  const mode_t old_umask = ::umask(0);  // even a permissive umask gives 0600
  key.save(dir.file("key.hex"));
  ::umask(old_umask);
  EXPECT_EQ(mode_of(dir.file("key.hex")), 0600u);
  EXPECT_EQ(RadarKey::from_file(dir.file("key.hex")).id(), key.id());
  EXPECT_NE(RadarKey::generate().id(), key.id());
  write_private(dir.file("short.hex"), "abcd\n");
  EXPECT_NE(error_of([&] { RadarKey::from_file(dir.file("short.hex")); }).find("64 hex"),
            std::string::npos);
  write_private(dir.file("bad.hex"), std::string(63, 'a') + "z");
  EXPECT_NE(error_of([&] { RadarKey::from_file(dir.file("bad.hex")); }).find("non-hex"),
            std::string::npos);
  EXPECT_NE(error_of([&] { RadarKey::from_file(dir.file("missing.hex")); }), "");
}

TEST_F(SeededTest, GroupOrWorldReadableKeyFileIsRefused) {
  TempDir dir;
  const RadarKey key = RadarKey::from_seed(5);
  key.save(dir.file("key.hex"));
  for (const mode_t mode : {0644u, 0640u, 0604u, 0620u}) {
    ASSERT_EQ(::chmod(dir.file("key.hex").c_str(), mode), 0);
    const std::string message = error_of([&] { RadarKey::from_file(dir.file("key.hex")); });
    EXPECT_NE(message.find(fmt::format("mode {:04o}", mode)), std::string::npos) << message;
    EXPECT_NE(message.find("chmod 600"), std::string::npos) << message;
  }
  ASSERT_EQ(::chmod(dir.file("key.hex").c_str(), 0400), 0);
  EXPECT_EQ(RadarKey::from_file(dir.file("key.hex")).id(), key.id());
}

TEST_F(SeededTest, CrcBaselineDetectsTheLayerButNotTheWeight) {
  auto weights = small_model(9);
  const CrcSignatures golden = crc_sign(weights);
  EXPECT_TRUE(crc_check(weights, golden).empty());
  const auto clean = copy_of(weights);
  weights[1].flip_bit(17, 7);
  const auto bad = crc_check(weights, golden);
  ASSERT_EQ(bad, std::vector<size_t>{1});
  auto zeroed = copy_of(weights);
  EXPECT_EQ(crc_recover_zero(zeroed, bad), 200);
  EXPECT_EQ(zeroed[1].values.abs().sum().item<int64_t>(), 0);
  EXPECT_EQ(crc_recover_reload(weights, clean, bad), 200);
  EXPECT_TRUE(crc_check(weights, golden).empty());
  // Known CRC32 value: zlib's crc32 of the bytes "123456789" is 0xCBF43926.
  quant::QuantizedTensor digits;
  digits.name = "digits";
  digits.bits = 8;
  digits.values = torch::tensor({49, 50, 51, 52, 53, 54, 55, 56, 57}, torch::kInt32);
  EXPECT_EQ(layer_crc32(digits), 0xCBF43926u);
}

}  // namespace
}  // namespace tessera::bitflip
