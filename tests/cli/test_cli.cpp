// End-to-end tests of the tessera binary: bad input gives one `error:` line and a non-zero exit,
// nothing is half-written, and the foundation commands work on real data.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tessera/core/fs.h"
#include "test_support.h"

namespace {

using tessera::testing::TempDir;

using Result = tessera::testing::CommandResult;

Result run(const std::string& args, const TempDir& dir) {
  return tessera::testing::run_command(std::string(TESSERA_BINARY) + " --quiet " + args, dir);
}

bool have_fashion_mnist() {
  return tessera::file_exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz");
}

// The error contract: exit code 1 and exactly one line on stderr, starting with "error: ".
void expect_one_error_line(const Result& r, const std::string& must_mention) {
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(must_mention), std::string::npos) << "stderr: " << r.err;
}

TEST(Cli, HelpShowsDefaults) {
  TempDir dir;
  auto r = run("train --help", dir);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("--epochs"), std::string::npos);
  EXPECT_NE(r.out.find("15"), std::string::npos) << "the default epoch count is shown";
  EXPECT_NE(r.out.find("/usr/share/datasets/fashion-mnist"), std::string::npos);
}

TEST(Cli, UnknownModelNameIsOneClearError) {
  TempDir dir;
  expect_one_error_line(run("info no_such_net", dir), "no_such_net");
}

TEST(Cli, MissingDataDirectoryIsOneClearError) {
  TempDir dir;
  auto r = run(
      "train --epochs 1 --data " + dir.file("nowhere") + " -o " + dir.file("m.safetensors"), dir);
  expect_one_error_line(r, "nowhere");
  EXPECT_FALSE(tessera::file_exists(dir.file("m.safetensors"))) << "no output on failure";
}

TEST(Cli, FailedTrainingLeavesAnExistingOutputFileUntouched) {
  TempDir dir;
  const std::string out = dir.file("m.safetensors");
  tessera::testing::write_bytes(out, "previous contents");
  auto r = run("train --epochs 1 --data " + dir.file("nowhere") + " -o " + out, dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(tessera::read_file(out), "previous contents");
}

TEST(Cli, CorruptModelFileIsOneClearError) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  tessera::testing::write_bytes(path, std::string("\xff\xff\xff\xff\xff\xff\xff\x7f{}", 10));
  expect_one_error_line(run("eval --model " + path, dir), "bad.safetensors");
  tessera::testing::write_bytes(path, "abc");
  expect_one_error_line(run("info " + path, dir), "bad.safetensors");
}

TEST(Cli, OutOfRangeFlagsAreRejected) {
  TempDir dir;
  auto r = run("train --epochs 0 --data " + dir.path(), dir);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("epochs"), std::string::npos) << r.err;
  r = run("--threads -2 models", dir);
  EXPECT_NE(r.exit_code, 0);
  r = run("train --image-size 7", dir);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("image-size"), std::string::npos) << r.err;
}

TEST(Cli, InfoPrintsParametersAndMacs) {
  TempDir dir;
  auto r = run("info resnet20 --json " + dir.file("info.json"), dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("parameters:"), std::string::npos);
  EXPECT_NE(r.out.find("MACs per image"), std::string::npos);
  EXPECT_NE(tessera::read_file(dir.file("info.json")).find("\"macs\""), std::string::npos);
}

TEST(Cli, TrainThenEvalRoundTripsThroughTheModelFile) {
  if (!have_fashion_mnist()) GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  TempDir dir;
  const std::string model = dir.file("m.safetensors");
  auto r =
      run("train --arch vgg11_bn --width-mult 0.125 --epochs 1 --train-subset 512 "
          "--batch-size 64 -o " +
              model + " --json " + dir.file("train.json") + " --svg " + dir.file("train.svg"),
          dir);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_TRUE(tessera::file_exists(model));
  EXPECT_NE(tessera::read_file(dir.file("train.svg")).find(">training loss<"), std::string::npos);
  const auto report = tessera::read_file(dir.file("train.json"));
  for (const char* key : {"\"config\"", "\"seed\"", "\"git_commit\"", "\"machine\"", "\"results\""})
    EXPECT_NE(report.find(key), std::string::npos) << key;
  // eval needs no architecture flag: the model file carries it.
  auto e = run("eval --model " + model, dir);
  ASSERT_EQ(e.exit_code, 0) << e.err;
  EXPECT_NE(e.out.find("vgg11_bn"), std::string::npos);
  EXPECT_NE(e.out.find("accuracy"), std::string::npos);
}

// Usage errors exit 2; an output path that cannot be written is refused before any work.
TEST(Cli, UsageErrorsExitTwoAndBadOutputPathsAreRefusedFirst) {
  TempDir dir;
  auto r = run("train --no-such-flag", dir);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  r = run("train --arch resnet20 --epochs 1 -o " + dir.file("missing/m.safetensors"), dir);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("does not exist"), std::string::npos) << r.err;
  EXPECT_FALSE(tessera::file_exists(dir.file("missing/m.safetensors")));
}

TEST(Cli, SaturatingIntegerFlagsAndRepeatedOutputsAreRefused) {
  TempDir dir;
  // CLI11 turns 99999999999999999999 into INT64_MAX; the flag's range refuses it.
  auto r = run("llm generate --model " + dir.file("none.safetensors") +
                   " --prompt hi --block 99999999999999999999",
               dir);
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--block"), std::string::npos) << r.err;
  // --json on the model's own path would replace the model after it was reported written.
  const std::string out = dir.file("m.safetensors");
  r = run("train --arch resnet20 --epochs 1 -o " + out + " --json " + out, dir);
  expect_one_error_line(r, "given twice");
  EXPECT_FALSE(tessera::file_exists(out));
}

TEST(Cli, VersionNamesTheCommit) {
  TempDir dir;
  auto r = run("--version", dir);
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out.rfind("tessera ", 0), 0u) << r.out;
  EXPECT_NE(r.out.find("commit"), std::string::npos) << r.out;
}

}  // namespace
