// SVG plot rendering: fixed 720x480 canvas, nice tick steps, colour cycle per series.
#include "tessera/core/svg.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "tessera/core/error.h"

namespace tessera {

std::string svg_escape(const std::string& text) {
  std::string out;
  for (char ch : text) {
    switch (ch) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += ch;
    }
  }
  return out;
}

SvgPlot::SvgPlot(std::string title, std::string x_label, std::string y_label)
    : title_(std::move(title)), x_label_(std::move(x_label)), y_label_(std::move(y_label)) {}

void SvgPlot::add_series(SvgSeries series) { series_.push_back(std::move(series)); }

namespace {

// Tick positions covering [lo, hi] with a 1-2-5 step giving about `n` ticks.
std::vector<double> nice_ticks(double lo, double hi, int n) {
  const double span = hi - lo;
  const double raw = span / n;
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * magnitude >= raw) {
      step = m * magnitude;
      break;
    }
  }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step) * step; t <= hi + 1e-9 * span; t += step) {
    ticks.push_back(std::abs(t) < 1e-9 * span ? 0.0 : t);  // no "-0" label
  }
  return ticks;
}

}  // namespace

std::string SvgPlot::render() const {
  const double width = 720, height = 480, left = 80, right = 200, top = 40, bottom = 60;
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
  for (const auto& s : series_) {
    for (const auto& [x, y] : s.points) {
      TESSERA_CHECK(std::isfinite(x) && std::isfinite(y),
                    "svg: point ({}, {}) of '{}' is not finite", x, y, s.name);
      TESSERA_CHECK(!log_x_ || x > 0, "svg: x = {} of '{}' cannot go on a log axis", x, s.name);
      const double xv = log_x_ ? std::log10(x) : x;
      x_lo = std::min(x_lo, xv);
      x_hi = std::max(x_hi, xv);
      y_lo = std::min(y_lo, y);
      y_hi = std::max(y_hi, y);
    }
  }
  TESSERA_CHECK(std::isfinite(x_lo), "svg: plot '{}' has no points", title_);
  // Pad the ranges so that single points and flat series still get an axis.
  const double x_pad = x_hi > x_lo ? 0.05 * (x_hi - x_lo) : 0.5;
  const double y_pad = y_hi > y_lo ? 0.08 * (y_hi - y_lo) : 0.5;
  x_lo -= x_pad;
  x_hi += x_pad;
  y_lo -= y_pad;
  y_hi += y_pad;
  const double pw = width - left - right, ph = height - top - bottom;
  auto px = [&](double x) {
    return left + ((log_x_ ? std::log10(x) : x) - x_lo) / (x_hi - x_lo) * pw;
  };
  auto py = [&](double y) { return top + (1.0 - (y - y_lo) / (y_hi - y_lo)) * ph; };

  std::string out = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} {}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" "
      "fill=\"white\"/>\n",
      width, height, width, height);
  out += fmt::format("<text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
                     left + pw / 2, svg_escape(title_));
  out += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>\n", left,
      top, pw, ph);
  // x ticks: decades (and 2x, 5x) on a log axis, 1-2-5 steps otherwise.
  std::vector<double> x_ticks;
  if (log_x_) {
    for (double d = std::floor(x_lo); d <= std::ceil(x_hi); d += 1.0) {
      for (double m : {1.0, 2.0, 5.0}) {
        const double v = std::log10(m) + d;
        if (v >= x_lo && v <= x_hi) x_ticks.push_back(std::pow(10.0, v));
      }
    }
  } else {
    x_ticks = nice_ticks(x_lo, x_hi, 6);
  }
  for (double t : x_ticks) {
    const double x = px(t);
    out += fmt::format("<line x1=\"{:.1f}\" y1=\"{}\" x2=\"{:.1f}\" y2=\"{}\" stroke=\"#ddd\"/>\n",
                       x, top, x, top + ph);
    out += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{:g}</text>\n", x,
                       top + ph + 16, t);
  }
  for (double t : nice_ticks(y_lo, y_hi, 6)) {
    const double y = py(t);
    out += fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"#ddd\"/>\n",
                       left, y, left + pw, y);
    out += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{:g}</text>\n", left - 6,
                       y + 4, t);
  }
  out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", left + pw / 2,
                     height - 16, svg_escape(x_label_));
  out += fmt::format(
      "<text x=\"18\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {})\">{}</text>\n",
      top + ph / 2, top + ph / 2, svg_escape(y_label_));
  const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
                          "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
  for (size_t i = 0; i < series_.size(); ++i) {
    const auto& s = series_[i];
    const char* color = colors[i % 10];
    if (s.line && s.points.size() > 1) {
      std::string pts;
      for (const auto& [x, y] : s.points) pts += fmt::format("{:.1f},{:.1f} ", px(x), py(y));
      out += fmt::format(
          "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\"/>\n", pts,
          color);
    }
    for (const auto& [x, y] : s.points) {
      out += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\" fill=\"{}\"/>\n", px(x),
                         py(y), color);
    }
    const double ly = top + 14 + 18 * static_cast<double>(i);
    out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>\n",
                       left + pw + 12, ly - 10, color);
    out +=
        fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", left + pw + 30, ly, svg_escape(s.name));
  }
  out += "</svg>\n";
  return out;
}

std::string svg_side_by_side(const std::vector<std::string>& documents) {
  TESSERA_CHECK(!documents.empty(), "svg: nothing to place side by side");
  // Every SvgPlot document is 720x480; nested <svg> elements take an x offset.
  constexpr int kWidth = 720, kHeight = 480;
  const int total = kWidth * static_cast<int>(documents.size());
  std::string out = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" viewBox=\"0 0 {} "
      "{}\">\n",
      total, kHeight, total, kHeight);
  for (size_t i = 0; i < documents.size(); ++i) {
    const std::string& doc = documents[i];
    TESSERA_CHECK(doc.rfind("<svg ", 0) == 0, "svg: document {} is not an <svg> element", i);
    out += fmt::format("<svg x=\"{}\" y=\"0\"", static_cast<int>(i) * kWidth);
    out += doc.substr(4);  // drop "<svg": keep its attributes and contents
  }
  out += "</svg>\n";
  return out;
}

}  // namespace tessera
