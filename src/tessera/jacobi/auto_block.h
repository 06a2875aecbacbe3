// `--block auto`: the Jacobi block size that maximizes expected tokens per second, from the
// engine's measured forward-cost curve (cached per model shape and machine) and the acceptance
// rate the decoder observes as it runs; block 1 (plain AR) when no block size pays.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tessera/llm/llama.h"

namespace tessera::jacobi {

/// What an n-token forward costs against a 1-token one, on one model shape and machine.
struct CostCurve {
  std::vector<int64_t> n_tokens;  ///< ascending, the first is 1
  std::vector<double> ratio;      ///< seconds(n) / seconds(1)
  /// Linear interpolation between measured points; past the last, the last slope continues.
  double at(int64_t n) const;
  nlohmann::json to_json() const;
  /// Throws tessera::Error naming the field when the curve is malformed.
  static CostCurve from_json(const nlohmann::json& json);
};

/// Seconds of one forward of each n in `n_tokens`, timed in `rounds` alternating rounds (so a
/// drift of the machine hits every n alike) from the engine's current cache length, restored
/// after each forward; the fastest round of each n counts.
std::vector<double> time_forwards(llm::LlamaEngine& engine, const std::vector<int64_t>& n_tokens,
                                  int64_t rounds);

/// time_forwards over `n_tokens` (ascending, starting at 1), as ratios to the 1-token forward.
CostCurve measure_cost_curve(llm::LlamaEngine& engine,
                             const std::vector<int64_t>& n_tokens = {1, 2, 3, 4, 6, 8, 12, 16},
                             int64_t rounds = 5);

/// The file a curve is cached in: one per model shape, matmul kernel, thread count and CPU.
std::string cost_curve_key(const llm::LlamaEngine& engine);

/// measure_cost_curve once per key, then read from `dir` (created when missing).
CostCurve cached_cost_curve(llm::LlamaEngine& engine, const std::string& dir);

/// Chooses each fresh block's size. Acceptance model: each guessed token after the first is
/// accepted with probability q, so a block of n yields TPF(n) = (1 - q^n) / (1 - q) tokens per
/// forward; q is estimated from what the decoder commits (a Beta(1, 1) prior, old evidence
/// discounted so the estimate follows the text). While AR is the choice, one probe block of 2 is
/// run after an interval of AR tokens that doubles (up to 256) every time AR stays the choice, so
/// the cost of probing stays within noise.
class BlockPolicy {
 public:
  BlockPolicy(CostCurve curve, int64_t max_block);
  /// The block size for the next forward that starts a block (1 = an AR step).
  int64_t next();
  /// After a forward of `block` tokens of which `accepted` (>= 1) were committed.
  void observe(int64_t block, int64_t accepted);
  double acceptance() const;
  /// TPF(n) / cost(n) at the current acceptance estimate; 1 at n = 1.
  double expected_speedup(int64_t n) const;
  /// The n in [1, max_block] with the largest expected speedup.
  int64_t best_block() const;

 private:
  CostCurve curve_;
  int64_t max_block_;
  double accepted_ = 0.0, rejected_ = 0.0;
  int64_t ar_steps_ = 0, probe_interval_ = 16;
};

}  // namespace tessera::jacobi
