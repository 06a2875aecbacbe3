// Small summary statistics for measurements (latencies, repeated runs).
#pragma once

#include <algorithm>
#include <vector>

#include "tessera/core/error.h"

namespace tessera {

/// The middle value (the mean of the two middle values for an even count). Throws on an empty
/// list.
inline double median(std::vector<double> values) {
  TESSERA_CHECK(!values.empty(), "median of an empty list");
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

}  // namespace tessera
