// Table rendering.
#include "tessera/core/table.h"

#include <fmt/format.h>

#include <algorithm>
#include <sstream>

#include "tessera/core/error.h"

namespace tessera {

Table::Table(std::vector<std::string> header) : header_(std::move(header)) {
  TESSERA_CHECK(!header_.empty(), "a table needs at least one column");
}

void Table::add_row(std::vector<std::string> row) {
  TESSERA_CHECK(row.size() == header_.size(), "table row has {} cells, expected {}", row.size(),
                header_.size());
  rows_.push_back(std::move(row));
}

std::string Table::to_string() const {
  std::vector<size_t> width(header_.size());
  for (size_t c = 0; c < header_.size(); ++c) {
    width[c] = std::max<size_t>(3, header_[c].size());
    for (const auto& row : rows_) width[c] = std::max(width[c], row[c].size());
  }
  std::ostringstream out;
  auto line = [&](const std::vector<std::string>& cells) {
    out << '|';
    for (size_t c = 0; c < cells.size(); ++c)
      out << ' ' << cells[c] << std::string(width[c] - cells[c].size(), ' ') << " |";
    out << '\n';
  };
  line(header_);
  out << '|';
  for (size_t c = 0; c < header_.size(); ++c) out << std::string(width[c] + 2, '-') << '|';
  out << '\n';
  for (const auto& row : rows_) line(row);
  return out.str();
}

nlohmann::json Table::to_json() const {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : rows_) {
    nlohmann::json object;
    for (size_t c = 0; c < header_.size(); ++c) object[header_[c]] = row[c];
    rows.push_back(object);
  }
  return rows;
}

std::string percent(double fraction, int decimals) {
  return fmt::format("{:.{}f}", 100.0 * fraction, decimals);
}

}  // namespace tessera
