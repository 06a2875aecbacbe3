// The SVG plot writer: series, escaping, and refusal of unplottable values.
#include "tessera/core/svg.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <set>

#include "tessera/core/error.h"
#include "tessera/core/random.h"

namespace tessera {
namespace {

TEST(SvgPlot, HasSeriesAndEscapesText) {
  SvgPlot plot("a < b", "crossbars", "accuracy (%)");
  plot.set_log_x(true);
  plot.add_series({"128x128 & 1-bit", {{100, 90.0}, {1000, 91.0}}, true});
  const std::string svg = plot.render();
  EXPECT_NE(svg.find("<svg"), std::string::npos);
  EXPECT_NE(svg.find("<polyline"), std::string::npos);
  EXPECT_NE(svg.find("a &lt; b"), std::string::npos);
  EXPECT_NE(svg.find("128x128 &amp; 1-bit"), std::string::npos);
  SvgPlot bad("t", "x", "y");
  bad.set_log_x(true);
  bad.add_series({"s", {{0.0, 1.0}}, false});
  EXPECT_THROW(bad.render(), Error);
  EXPECT_THROW(SvgPlot("t", "x", "y").render(), Error);
}

TEST(SvgPlot, SideBySideNestsEveryDocumentAtItsOffset) {
  SvgPlot a("left", "x", "y"), b("right", "x", "y");
  a.add_series({"s", {{0, 1}, {1, 2}}, true});
  b.add_series({"t", {{0, 3}, {1, 4}}, true});
  const std::string svg = svg_side_by_side({a.render(), b.render()});
  EXPECT_EQ(svg.rfind("<svg xmlns", 0), 0u);
  EXPECT_NE(svg.find("width=\"1440\""), std::string::npos);
  EXPECT_NE(svg.find("<svg x=\"720\" y=\"0\""), std::string::npos);
  EXPECT_NE(svg.find(">right<"), std::string::npos);
  size_t opened = 0, closed = 0;
  for (size_t p = svg.find("<svg"); p != std::string::npos; p = svg.find("<svg", p + 1)) ++opened;
  for (size_t p = svg.find("</svg>"); p != std::string::npos; p = svg.find("</svg>", p + 1))
    ++closed;
  EXPECT_EQ(opened, 3u);
  EXPECT_EQ(closed, 3u);
  EXPECT_THROW(svg_side_by_side({}), Error);
  EXPECT_THROW(svg_side_by_side({"<g/>"}), Error);
}

// The draws are fixed by the engine alone: these values hold on every standard library.
TEST(Random, DrawsArePortableAndInRange) {
  std::mt19937_64 rng(42);
  std::vector<int> counts(6, 0);
  for (int i = 0; i < 60000; ++i) ++counts[random::uniform_below(rng, 6)];
  for (int c : counts) EXPECT_NEAR(c, 10000, 400);
  for (int i = 0; i < 1000; ++i) {
    const int64_t v = random::uniform_int(rng, -3, 3);
    EXPECT_GE(v, -3);
    EXPECT_LE(v, 3);
    const double u = random::uniform01(rng);
    EXPECT_GE(u, 0.0);
    EXPECT_LT(u, 1.0);
  }
  std::mt19937_64 a(7), b(7);
  EXPECT_EQ(random::permutation(50, a), random::permutation(50, b));
  auto perm = random::permutation(50, a);
  std::sort(perm.begin(), perm.end());
  for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(perm[static_cast<size_t>(i)], i);
  const auto pick = random::subset(100, 10, a);
  ASSERT_EQ(pick.size(), 10u);
  std::set<int64_t> distinct(pick.begin(), pick.end());
  EXPECT_EQ(distinct.size(), 10u);
  EXPECT_EQ(random::subset(5, 9, a).size(), 5u);
}

}  // namespace
}  // namespace tessera
