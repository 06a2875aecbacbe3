// core/table (markdown rendering with aligned columns, row checks, JSON rows) and core/stats.
#include <gtest/gtest.h>

#include <string>

#include "tessera/core/error.h"
#include "tessera/core/stats.h"
#include "tessera/core/table.h"

namespace tessera {
namespace {

TEST(Table, RendersAlignedMarkdown) {
  Table t({"system", "measured", "paper"});
  t.add_row({"bitflip", "11", "13"});
  t.add_row({"reram", "8.7x", "8.7x"});
  const std::string expected =
      "| system  | measured | paper |\n"
      "|---------|----------|-------|\n"
      "| bitflip | 11       | 13    |\n"
      "| reram   | 8.7x     | 8.7x  |\n";
  EXPECT_EQ(t.to_string(), expected);
  EXPECT_EQ(t.n_rows(), 2u);
}

TEST(Table, NarrowColumnsAreAtLeastThreeWide) {
  Table t({"a"});
  t.add_row({""});
  EXPECT_EQ(t.to_string(), "| a   |\n|-----|\n|     |\n");
}

TEST(Table, HeaderOnlyTable) {
  Table t({"x", "y"});
  EXPECT_EQ(t.to_string(), "| x   | y   |\n|-----|-----|\n");
  EXPECT_EQ(t.to_json(), nlohmann::json::array());
}

TEST(Table, RowsWithTheWrongCellCountAreRejected) {
  Table t({"a", "b"});
  EXPECT_THROW(t.add_row({"1"}), Error);
  EXPECT_THROW(t.add_row({"1", "2", "3"}), Error);
  EXPECT_EQ(t.n_rows(), 0u);
  EXPECT_THROW(Table(std::vector<std::string>{}), Error);
}

TEST(Table, JsonHasOneObjectPerRow) {
  Table t({"name", "value"});
  t.add_row({"acc", "0.91"});
  t.add_row({"loss", "0.3"});
  const nlohmann::json expected = nlohmann::json::parse(
      R"([{"name": "acc", "value": "0.91"}, {"name": "loss", "value": "0.3"}])");
  EXPECT_EQ(t.to_json(), expected);
}

TEST(Percent, FormatsAFractionWithTheGivenDecimals) {
  EXPECT_EQ(percent(0.93125), "93.12");  // round-half-even of the binary value
  EXPECT_EQ(percent(1.0), "100.00");
  EXPECT_EQ(percent(0.5, 0), "50");
  EXPECT_EQ(percent(0.123456, 3), "12.346");
}

TEST(Stats, MedianOfOddEvenAndEmptyLists) {
  EXPECT_DOUBLE_EQ(median({3.0, 1.0, 2.0}), 2.0);
  EXPECT_DOUBLE_EQ(median({4.0, 1.0, 3.0, 2.0}), 2.5);
  EXPECT_THROW(median({}), Error);
}

}  // namespace
}  // namespace tessera
