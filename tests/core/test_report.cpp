// core/report: JSON reports carry command, config, seed, git commit, machine and results.
#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/report.h"
#include "test_support.h"

namespace tessera {
namespace {

using ::tessera::testing::TempDir;

TEST(Report, JsonHasEveryRequiredKey) {
  Report report("bitflip attack", {{"bits", 8}, {"n_iter", 20}}, 1234);
  report.results()["accuracy"] = 0.93;
  const nlohmann::json json = report.to_json();
  for (const char* key :
       {"command", "config", "seed", "git_commit", "machine", "results", "started_at", "wall_s"}) {
    EXPECT_TRUE(json.contains(key)) << key;
  }
  EXPECT_EQ(json.at("command"), "bitflip attack");
  EXPECT_EQ(json.at("config").at("bits"), 8);
  EXPECT_EQ(json.at("seed"), 1234);
  EXPECT_EQ(json.at("results").at("accuracy"), 0.93);
  EXPECT_TRUE(json.at("git_commit").is_string());
  EXPECT_FALSE(json.at("git_commit").get<std::string>().empty());
  EXPECT_TRUE(json.at("machine").contains("cpu"));
  EXPECT_GE(json.at("wall_s").get<double>(), 0.0);
}

TEST(Report, ResultsStartEmpty) {
  const Report report("tour", nlohmann::json::object(), 0);
  EXPECT_TRUE(report.results().is_object());
  EXPECT_TRUE(report.results().empty());
}

TEST(Report, WriteProducesParsableJson) {
  TempDir dir;
  Report report("train", {{"epochs", 2}}, 7);
  report.results()["loss"] = {1.5, 0.75};
  report.write(dir.file("r.json"));
  const nlohmann::json back = nlohmann::json::parse(read_file(dir.file("r.json")));
  EXPECT_EQ(back.at("results").at("loss")[1], 0.75);
  EXPECT_EQ(back.at("seed"), 7);
}

TEST(Report, EmptyPathWritesNothingAndBadPathThrows) {
  TempDir dir;
  const Report report("train", nlohmann::json::object(), 7);
  EXPECT_NO_THROW(report.write(""));
  EXPECT_THROW(report.write(dir.file("missing/r.json")), Error);
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

}  // namespace
}  // namespace tessera
