// A small SVG line/scatter plot writer (no dependency): axes with ticks, a log or linear x axis,
// one polyline plus markers per series, and a legend. Used wherever a curve is the result (`--svg
// FILE`).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace tessera {

struct SvgSeries {
  std::string name;
  std::vector<std::pair<double, double>> points;  ///< (x, y), drawn in the given order
  bool line = true;                               ///< connect the points
};

class SvgPlot {
 public:
  SvgPlot(std::string title, std::string x_label, std::string y_label);
  void set_log_x(bool log_x) { log_x_ = log_x; }
  void add_series(SvgSeries series);
  /// The whole document. Throws tessera::Error if there are no points, or a log axis gets x <= 0,
  /// or a value is not finite.
  std::string render() const;

 private:
  std::string title_, x_label_, y_label_;
  bool log_x_ = false;
  std::vector<SvgSeries> series_;
};

/// One document holding the rendered plots side by side, left to right.
std::string svg_side_by_side(const std::vector<std::string>& documents);

/// Escapes &, <, >, " for SVG text.
std::string svg_escape(const std::string& text);

}  // namespace tessera
