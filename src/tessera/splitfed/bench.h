// The splitfed experiments: every benchmark and protocol of the `tessera sfl` commands as library
// functions (bench_extraction.h, bench_inversion.h, bench_transport.h), the cached reference
// models they use, and the tour step (an SFL run with Train-ME, and plain SFL against ResSFL).
#pragma once

#include <vector>

#include "tessera/core/tour.h"
#include "tessera/splitfed/bench_common.h"
#include "tessera/splitfed/bench_extraction.h"
#include "tessera/splitfed/bench_inversion.h"
#include "tessera/splitfed/bench_sfl.h"
#include "tessera/splitfed/bench_transport.h"
#include "tessera/train/cache.h"

namespace tessera::splitfed {

/// The models the benchmarks train plain-supervised and take from the model cache: the central
/// baseline of `sfl bench-me` and `sfl train --central` with their default options. (SFL targets
/// and defended runs are trained by the protocol under test, so they are not cached.)
std::vector<train::ReferenceModel> reference_models();

/// The tour's two experiments, reduced to about a minute each.
struct TourOptions {
  SflRunOptions me_run;      ///< SFL target: VGG-11 x1/4, 3 clients, 4 epochs, 12000 images
  AttackerOptions attacker;  ///< Train-ME with 5% of the data, 20 surrogate epochs
  int64_t me_server_layers = 5;
  MiBenchOptions mi;  ///< plain SFL against ResSFL, 3000 images per task, 5 epochs
};
TourOptions tour_options(const TourContext& context);
/// The "splitfed" row: the SFL run's accuracy and Train-ME's surrogate against it.
std::vector<TourRow> tour_extraction(const TourOptions& options);
/// The "splitfed MI" row: the strongest MI attack against plain SFL and against ResSFL.
std::vector<TourRow> tour_inversion(const TourOptions& options);
/// Both rows with tour_options(context).
std::vector<TourRow> tour(const TourContext& context);

}  // namespace tessera::splitfed
