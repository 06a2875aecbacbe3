// Plain-text tables for command output (aligned columns, markdown-compatible).
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace tessera {

/// Table t({"system", "measured", "paper"}); t.add_row({...}); std::cout << t.to_string();
/// Renders as a markdown table so the same text can be pasted into docs/.
class Table {
 public:
  explicit Table(std::vector<std::string> header);
  /// Throws tessera::Error if the row does not have one cell per column.
  void add_row(std::vector<std::string> row);
  std::string to_string() const;
  /// [{column: cell, ...}, ...] for JSON reports.
  nlohmann::json to_json() const;
  size_t n_rows() const { return rows_.size(); }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

/// A fraction as a percentage cell: percent(0.9312) == "93.12" (two decimals by default).
std::string percent(double fraction, int decimals = 2);

}  // namespace tessera
