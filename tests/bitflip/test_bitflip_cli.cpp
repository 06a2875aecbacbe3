// `tessera bitflip` end to end through the binary: keygen writes a 0600 key, verify exits 0 on
// the protected model and 3 on a tampered one (naming the layer and group), and a world- or
// group-readable key file is refused.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include "tessera/bitflip/quantized_model.h"
#include "tessera/bitflip/radar.h"
#include "tessera/core/fs.h"
#include "tessera/models/registry.h"
#include "test_support.h"

namespace tessera::bitflip {
namespace {

using tessera::testing::SeededTest;
using tessera::testing::TempDir;

using Result = tessera::testing::CommandResult;

Result run(const std::string& args, const TempDir& dir) {
  return tessera::testing::run_command(std::string(TESSERA_BINARY) + " --quiet bitflip " + args,
                                       dir);
}

TEST_F(SeededTest, VerifyGatesADeploymentAndKeysStayPrivate) {
  TempDir dir;
  models::ModelConfig config;
  config.name = "resnet20";
  config.in_channels = 1;
  config.image_size = 32;
  config.width_mult = 0.25;
  QuantizedModel qm = quantize_model(models::create(config), 8);
  save_quantized(dir.file("model.safetensors"), qm);
  const std::string key = dir.file("radar.key");
  const Result keygen = run("keygen -o " + key, dir);
  ASSERT_EQ(keygen.exit_code, 0) << keygen.err;
  struct stat st {};
  ASSERT_EQ(::stat(key.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  const std::string sig = dir.file("model.radar");
  const Result protect =
      run("protect --model " + dir.file("model.safetensors") + " --key " + key + " -G 8 -o " + sig,
          dir);
  ASSERT_EQ(protect.exit_code, 0) << protect.err;
  const std::string verify_args = " --signatures " + sig + " --key " + key;
  const Result ok = run("verify --model " + dir.file("model.safetensors") + verify_args, dir);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("OK:"), std::string::npos) << ok.out;
  // One MSB flip in layer 3, written to a model file: verify exits 3 and names layer and group.
  qm.weights[3].flip_bit(21, 7);
  save_quantized(dir.file("tampered.safetensors"), qm);
  const Radar radar(RadarKey::from_file(key), RadarOptions{8, 2}, qm.weights);
  const int64_t group = radar.layout(3).group_of(21);
  const Result bad = run("verify --model " + dir.file("tampered.safetensors") + verify_args +
                             " --json " + dir.file("verify.json"),
                         dir);
  EXPECT_EQ(bad.exit_code, 3) << bad.out << bad.err;
  EXPECT_NE(bad.out.find("MISMATCH"), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find(qm.weights[3].name), std::string::npos) << bad.out;
  EXPECT_NE(bad.out.find("| " + std::to_string(group) + " "), std::string::npos) << bad.out;
  EXPECT_NE(read_file(dir.file("verify.json")).find("\"exit_code\": 3"), std::string::npos);
  // A key file others may read is refused (exit 1, one error line naming the mode).
  ASSERT_EQ(::chmod(key.c_str(), 0644), 0);
  const Result exposed = run("verify --model " + dir.file("model.safetensors") + verify_args, dir);
  EXPECT_EQ(exposed.exit_code, 1);
  EXPECT_NE(exposed.err.find("mode 0644"), std::string::npos) << exposed.err;
}

}  // namespace
}  // namespace tessera::bitflip
