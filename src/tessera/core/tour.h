// What `tessera tour` hands each system's quick demo, and the row each demo returns. Every
// system's tour step is a library function in <system>/bench.h: TourContext in, rows out.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

struct TourContext {
  std::string data_dir;  ///< Fashion-MNIST directory (--data)
  std::string work_dir;  ///< scratch directory for the model files and reports of this run
  uint64_t seed = 0;
};

/// One row of the tour's closing table: system, what was measured here, the paper's figure.
struct TourRow {
  std::string system;
  std::string measured;
  std::string paper;
};

}  // namespace tessera
