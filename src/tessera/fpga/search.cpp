// The search environment (action decoding, state, reward) and random search.
#include "tessera/fpga/search.h"

#include <algorithm>
#include <cmath>

#include "tessera/core/error.h"
#include "tessera/core/random.h"
#include "tessera/core/seed.h"
#include "tessera/core/timer.h"

namespace tessera::fpga {

namespace {

// The repository's _action_wall2: c * round(vmin + (vmax - vmin) * a), numpy's half-even round.
int64_t resource_value(double action, int64_t c, int64_t vmin, int64_t vmax) {
  return c * static_cast<int64_t>(std::nearbyint(vmin + (vmax - vmin) * action));
}

// The repository's _action_wall: round(lo - 0.5 + (hi - lo + 1) * a), one equal stride per bit.
int bits_value(double action, int lo, int hi) {
  const double v = (hi + 0.5 - (lo - 0.5)) * action + (lo - 0.5);
  return std::clamp(static_cast<int>(std::nearbyint(v)), lo, hi);
}

constexpr double kLowestReward = -10.0;

}  // namespace

void SearchOptions::validate() const {
  TESSERA_CHECK(target_ms >= 0.0 && std::isfinite(target_ms), "fpga search: target_ms {} < 0",
                target_ms);
  TESSERA_CHECK(target_speedup > 0.0, "fpga search: target_speedup {} must be > 0", target_speedup);
  TESSERA_CHECK(min_weight_bits >= 1 && min_weight_bits <= max_weight_bits && max_weight_bits <= 8,
                "fpga search: weight bits {}..{} must satisfy 1 <= min <= max <= 8",
                min_weight_bits, max_weight_bits);
  TESSERA_CHECK(min_activation_bits >= 1 && min_activation_bits <= max_activation_bits &&
                    max_activation_bits <= 8,
                "fpga search: activation bits {}..{} must satisfy 1 <= min <= max <= 8",
                min_activation_bits, max_activation_bits);
  TESSERA_CHECK(proxy_scale >= 0.0, "fpga search: proxy_scale {} < 0", proxy_scale);
  TESSERA_CHECK(evaluations >= 1, "fpga search: evaluations {} must be >= 1", evaluations);
}

nlohmann::json SearchOptions::to_json() const {
  return {{"target_ms", target_ms},
          {"target_speedup", target_speedup},
          {"weight_bits", {min_weight_bits, max_weight_bits}},
          {"activation_bits", {min_activation_bits, max_activation_bits}},
          {"search_dsp_cols", search_dsp_cols},
          {"proxy_scale", proxy_scale},
          {"float_accuracy", float_accuracy},
          {"evaluations", evaluations},
          {"seed", seed}};
}

SearchProblem::SearchProblem(std::vector<GemmShape> gemms, AcceleratorSpec base,
                             SearchOptions options, AccuracyEstimate accuracy)
    : gemms_(std::move(gemms)),
      base_(std::move(base)),
      options_(std::move(options)),
      accuracy_(std::move(accuracy)) {
  options_.validate();
  base_.validate();
  TESSERA_CHECK(!gemms_.empty(), "fpga search: the network has no layers");
  base_.dsp.enabled = base_.lut.enabled = true;
  max_dsp_cols_ =
      std::max<int64_t>(1, (base_.device.dsp - base_.resources.shell_dsp) / base_.dsp.rows);
  target_ms_ = options_.target_ms;
  if (target_ms_ == 0.0) {
    const Design dsp_only = dsp_only_design(gemms_, base_);
    target_ms_ = evaluate_design(gemms_, dsp_only).latency.ms / options_.target_speedup;
  }
  // Static features per step: [layer step, layer index, K, N, M, K*N, edge, weight step, 0, 0],
  // zero for the resource steps (as in the repository), then min-max normalised per feature.
  const int64_t n = n_steps();
  static_features_.assign(static_cast<size_t>(n), std::vector<float>(10, 0.0f));
  for (int64_t s = n_resource_steps(); s < n; ++s) {
    const int64_t i = (s - n_resource_steps()) / 2;
    const GemmShape& g = gemms_[static_cast<size_t>(i)];
    static_features_[static_cast<size_t>(s)] = {1.0f,
                                                static_cast<float>(i),
                                                static_cast<float>(g.k),
                                                static_cast<float>(g.n),
                                                static_cast<float>(g.m),
                                                static_cast<float>(g.k * g.n),
                                                g.edge ? 1.0f : 0.0f,
                                                (s - n_resource_steps()) % 2 == 0 ? 1.0f : 0.0f,
                                                0.0f,
                                                0.0f};
  }
  for (size_t f = 0; f < 10; ++f) {
    float lo = static_features_[0][f], hi = lo;
    for (const auto& row : static_features_) lo = std::min(lo, row[f]), hi = std::max(hi, row[f]);
    if (hi > lo)
      for (auto& row : static_features_) row[f] = (row[f] - lo) / (hi - lo);
  }
}

int64_t SearchProblem::n_steps() const {
  return n_resource_steps() + 2 * static_cast<int64_t>(gemms_.size());
}

Design SearchProblem::decode(const std::vector<double>& actions) const {
  TESSERA_CHECK(static_cast<int64_t>(actions.size()) == n_steps(),
                "fpga search: {} actions for an episode of {} steps", actions.size(), n_steps());
  for (double a : actions)
    TESSERA_CHECK(a >= 0.0 && a <= 1.0, "fpga search: action {} not in [0, 1]", a);
  Design d;
  d.name = "N3H-Core (searched)";
  d.spec = base_;
  d.spec.lut.dk = resource_value(actions[0], 64, 1, 4);
  d.spec.lut.dm = resource_value(actions[1], 1, 1, 50);
  d.spec.lut.dn = resource_value(actions[2], 1, 1, 50);
  d.spec.lut.bm = resource_value(actions[3], 1024, 1, 50);
  d.spec.dsp.lmem = resource_value(actions[4], 1024, 1, 25);
  d.spec.dsp.rmem = resource_value(actions[5], 1024, 1, 4);
  if (options_.search_dsp_cols) d.spec.dsp.cols = resource_value(actions[6], 1, 1, max_dsp_cols_);
  const size_t first = static_cast<size_t>(n_resource_steps());
  for (size_t i = 0; i < gemms_.size(); ++i) {
    LayerPrecision p;
    p.weight_bits =
        bits_value(actions[first + 2 * i], options_.min_weight_bits, options_.max_weight_bits);
    p.activation_bits = bits_value(actions[first + 2 * i + 1], options_.min_activation_bits,
                                   options_.max_activation_bits);
    if (gemms_[i].edge) p = LayerPrecision{8, 8};  // first and last layers stay 8-bit
    d.precisions.push_back(p);
  }
  return d;
}

double SearchProblem::proxy_accuracy(const Design& design,
                                     const DesignEvaluation& evaluation) const {
  double noise = 0.0;
  for (size_t i = 0; i < gemms_.size(); ++i) {
    const double r = evaluation.latency.layers[i].ratio;
    const LayerPrecision& p = design.precisions[i];
    const int b_dsp = dsp_share_bits(gemms_[i], design.spec.dsp);
    noise += r * (std::pow(4.0, -(p.weight_bits - 1)) + std::pow(4.0, -(p.activation_bits - 1))) +
             (1 - r) * 2 * std::pow(4.0, -(b_dsp - 1));
  }
  return options_.float_accuracy -
         options_.proxy_scale * noise / static_cast<double>(gemms_.size());
}

double SearchProblem::reward(const DesignEvaluation& evaluation, double accuracy) const {
  const double ms = evaluation.latency.ms;
  if (!evaluation.latency.feasible()) return kLowestReward;
  const double over = std::max(1.0, ms / target_ms_);
  if (!evaluation.resources.fits)
    return std::max(kLowestReward, -(1.0 + evaluation.resources.max_utilization) * over);
  if (ms > target_ms_) return std::max(kLowestReward, -ms / target_ms_);
  return 0.01 * (accuracy - options_.float_accuracy);
}

SearchOutcome SearchProblem::evaluate(const std::vector<double>& actions) const {
  SearchOutcome o;
  o.design = decode(actions);
  o.evaluation = evaluate_design(gemms_, o.design);
  o.rejected = !o.evaluation.valid();
  o.accuracy = accuracy_ ? accuracy_(gemms_, o.design, o.evaluation)
                         : proxy_accuracy(o.design, o.evaluation);
  o.reward = reward(o.evaluation, o.accuracy);
  return o;
}

std::vector<float> SearchProblem::state(int64_t step, const std::vector<double>& actions) const {
  TESSERA_CHECK(step >= 0 && step < n_steps(), "fpga search: step {} outside the episode", step);
  std::vector<float> s = static_features_[static_cast<size_t>(step)];
  for (int64_t r = 0; r < 7; ++r) {
    s.push_back(r < n_resource_steps() && r < static_cast<int64_t>(actions.size())
                    ? static_cast<float>(actions[static_cast<size_t>(r)])
                    : 0.0f);
  }
  // The last layer's balanced split, once its bits are chosen (the repository's state).
  float last_ratio = 0.0f;
  const int64_t layer_steps_done = step - n_resource_steps();
  if (layer_steps_done >= 2 && layer_steps_done % 2 == 0) {
    std::vector<double> padded(actions.begin(), actions.begin() + step);
    padded.resize(static_cast<size_t>(n_steps()), 0.5);
    const Design d = decode(padded);
    const size_t i = static_cast<size_t>(layer_steps_done / 2 - 1);
    last_ratio =
        static_cast<float>(balanced_split(gemms_[i], d.precisions[i], d.spec.dsp, d.spec.lut));
  }
  s.push_back(last_ratio);
  s.push_back(step > 0 ? static_cast<float>(actions[static_cast<size_t>(step - 1)]) : 0.0f);
  return s;
}

nlohmann::json SearchResult::to_json() const {
  return {{"searcher", searcher},
          {"best_reward", best.reward},
          {"best_accuracy_estimate", best.accuracy},
          {"best_latency_ms", best.evaluation.latency.ms},
          {"best_design", best.design.to_json()},
          {"best_resources", best.evaluation.resources.to_json()},
          {"best_reward_curve", best_reward_curve},
          {"seconds", seconds}};
}

SearchResult random_search(const SearchProblem& problem, const SearchOptions& options) {
  options.validate();
  Timer timer;
  SearchResult result;
  result.searcher = "random";
  std::mt19937_64 rng = make_rng(options.seed, 1);
  std::vector<double> actions(static_cast<size_t>(problem.n_steps()));
  for (int64_t e = 0; e < options.evaluations; ++e) {
    for (double& a : actions) a = random::uniform01(rng);
    SearchOutcome o = problem.evaluate(actions);
    if (e == 0 || o.reward > result.best.reward) result.best = std::move(o);
    result.best_reward_curve.push_back(result.best.reward);
  }
  result.seconds = timer.elapsed_s();
  return result;
}

}  // namespace tessera::fpga
