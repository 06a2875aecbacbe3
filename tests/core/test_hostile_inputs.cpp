// Hostile inputs to core (issue 22): deep, padded or ill-typed JSON, huge safetensors headers,
// builds beyond their allocation budget, and reports holding bytes that are not UTF-8.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdlib>
#include <string>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/json.h"
#include "tessera/core/limits.h"
#include "tessera/core/report.h"
#include "tessera/core/safetensors.h"
#include "test_support.h"

namespace tessera {
namespace {

using ::tessera::testing::error_of;
using ::tessera::testing::TempDir;

std::string nested_array(int depth) { return std::string(depth, '[') + std::string(depth, ']'); }

/// A safetensors file whose header is `header` and whose data section is empty.
std::string safetensors_bytes(const std::string& header) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((header.size() >> (8 * i)) & 0xFF));
  return out + header;
}

TEST(ParseJson, RefusesDeepNestingWithoutCrashing) {
  const std::string error = error_of([] { parse_json(nested_array(100'000), "'x.json'"); });
  EXPECT_NE(error.find("'x.json'"), std::string::npos) << error;
  EXPECT_NE(error.find("nested deeper than"), std::string::npos) << error;
  EXPECT_NO_THROW(parse_json(nested_array(kMaxJsonDepth), "ok"));
  EXPECT_THROW(parse_json(nested_array(kMaxJsonDepth + 1), "deep"), Error);
  EXPECT_THROW(parse_json("{\"a\":" + nested_array(100'000) + "}", "object"), Error);
}

TEST(ParseJson, RefusesByteOrderMarkTrailingBytesAndNamesTheSource) {
  EXPECT_NE(error_of([] { parse_json("\xEF\xBB\xBF{}", "'bom.json'"); }).find("byte order mark"),
            std::string::npos);
  const std::string trailing = error_of([] { parse_json("{} x", "'tail.json'"); });
  EXPECT_NE(trailing.find("'tail.json'"), std::string::npos) << trailing;
  EXPECT_NO_THROW(parse_json(" {\"a\": 1} \n", "whitespace"));
  // nlohmann quotes the token it stopped at; a 10 MB unterminated string must not be echoed.
  const std::string message =
      error_of([] { parse_json("\"" + std::string(10'000'000, 'a'), "'long.json'"); });
  EXPECT_NE(message.find("'long.json'"), std::string::npos);
  EXPECT_LT(message.size(), 1000u);
}

TEST(JsonExcerpt, StaysShortOnHugeAndDeepValues) {
  nlohmann::json big = nlohmann::json::array();
  for (int i = 0; i < 100'000; ++i) big.push_back(i);
  EXPECT_LE(json_excerpt(big).size(), kMaxJsonExcerpt + 3);
  EXPECT_EQ(json_excerpt(big).substr(0, 6), "[0,1,2");
  nlohmann::json deep = nlohmann::json::array();
  for (int i = 0; i < 10'000; ++i) deep = nlohmann::json::array({std::move(deep)});
  EXPECT_LE(json_excerpt(deep).size(), kMaxJsonExcerpt + 3);
  EXPECT_EQ(json_excerpt(nlohmann::json(std::string(1'000'000, 'x'))).size(), kMaxJsonExcerpt + 3);
  EXPECT_EQ(json_excerpt(nlohmann::json({{"a", 1}})), "{\"a\":1}");
}

TEST(JsonInteger, RefusesFloatsBoolsStringsAndOutOfRange) {
  EXPECT_EQ(json_integer(nlohmann::json(8), "bits", 2, 16), 8);
  for (const auto& bad :
       {nlohmann::json(8.9), nlohmann::json(8.0), nlohmann::json(true), nlohmann::json("8"),
        nlohmann::json(17), nlohmann::json(-1), nlohmann::json(UINT64_MAX)}) {
    const std::string error = error_of([&] { json_integer(bad, "'q.safetensors': bits", 2, 16); });
    EXPECT_NE(error.find("'q.safetensors': bits"), std::string::npos) << bad.dump();
  }
}

TEST(SafetensorsHeader, DeepShapeIsRefusedNotACrash) {
  const std::string header =
      "{\"t\":{\"dtype\":\"F32\",\"shape\":" + nested_array(100'000) + ",\"data_offsets\":[0,0]}}";
  const std::string error = error_of([&] { safetensors::parse(safetensors_bytes(header)); });
  EXPECT_NE(error.find("nested deeper"), std::string::npos) << error.substr(0, 200);
  EXPECT_THROW(safetensors::parse(safetensors_bytes("\xEF\xBB\xBF{}")), Error);
}

TEST(SafetensorsHeader, ManyEntriesParseInLinearTimeUpToTheTensorLimit) {
  // kMaxTensors (100k) empty tensors: nlohmann's callback parser took 227 s here, since it
  // rescans the enclosing object after every entry; linear parsing takes about half a second
  // (the bound leaves room for a loaded machine).
  const auto entry = [](uint64_t i) {
    return "\"t" + std::to_string(i) +
           "\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}";
  };
  std::string header = "{";
  for (uint64_t i = 0; i < kMaxTensors; ++i) header += (i > 0 ? "," : "") + entry(i);
  const auto start = std::chrono::steady_clock::now();
  const safetensors::File file = safetensors::parse(safetensors_bytes(header + "}"));
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_EQ(file.tensors.size(), kMaxTensors);
  // Empty tensors share offsets [0, 0]: they keep the header's order.
  EXPECT_EQ(file.tensors[0].first, "t0");
  EXPECT_EQ(file.tensors.back().first, "t" + std::to_string(kMaxTensors - 1));
  EXPECT_LT(seconds, 8.0);
  const std::string error = error_of(
      [&] { safetensors::parse(safetensors_bytes(header + "," + entry(kMaxTensors) + "}")); });
  EXPECT_NE(error.find("more than 100000 tensors"), std::string::npos) << error;
}

TEST(SafetensorsHeader, DuplicateKeysStillRefused) {
  const std::string entry = "{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}";
  const std::string error = error_of(
      [&] { safetensors::parse(safetensors_bytes("{\"a\":" + entry + ",\"a\":" + entry + "}")); });
  EXPECT_NE(error.find("duplicate key"), std::string::npos) << error;
}

TEST(AllocationBudget, RefusesABuildPastItsBudgetAndRestoresTheAllocator) {
  const std::string error = error_of([] {
    AllocationBudget budget(1 << 20, "'vit.safetensors'");
    torch::empty({1 << 28});  // 1 GiB of float32, never allocated
  });
  EXPECT_NE(error.find("'vit.safetensors'"), std::string::npos) << error;
  {
    AllocationBudget budget(1 << 20, "small");
    EXPECT_NO_THROW(torch::ones({1000}));
  }
  // Outside the scope nothing is counted.
  EXPECT_NO_THROW(torch::empty({1 << 22}));
}

TEST(MaxParameters, DefaultAndEnvironment) {
  ASSERT_EQ(std::getenv("TESSERA_MAX_PARAMS"), nullptr);
  EXPECT_EQ(max_parameters(), kDefaultMaxParameters);
  setenv("TESSERA_MAX_PARAMS", "1000", 1);
  EXPECT_EQ(max_parameters(), 1000);
  setenv("TESSERA_MAX_PARAMS", "1e9", 1);
  EXPECT_THROW(max_parameters(), Error);
  unsetenv("TESSERA_MAX_PARAMS");
}

TEST(Report, InvalidUtf8IsReplacedNotThrown) {
  TempDir dir;
  Report report("llm generate", {{"prompt", std::string("caf\xC3", 4)}}, 1);
  report.results()["text"] = std::string("\xFF\xFEok", 4);
  const std::string path = dir.file("r.json");
  ASSERT_NO_THROW(report.write(path));
  const nlohmann::json json = nlohmann::json::parse(read_file(path));
  EXPECT_EQ(json.at("results").at("text"), "\xEF\xBF\xBD\xEF\xBF\xBDok");
}

}  // namespace
}  // namespace tessera
