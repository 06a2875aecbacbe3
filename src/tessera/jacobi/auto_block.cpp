// The cost curve of the Llama engine, its cache, and the block-size policy of `--block auto`.
#include "tessera/jacobi/auto_block.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>

#include <ATen/Parallel.h>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/json.h"
#include "tessera/core/runtime.h"
#include "tessera/core/timer.h"
#include "tessera/llm/kernels.h"

namespace tessera::jacobi {

double CostCurve::at(int64_t n) const {
  TESSERA_CHECK(!n_tokens.empty(), "cost curve: empty");
  if (n <= n_tokens.front()) return ratio.front();
  for (size_t i = 1; i < n_tokens.size(); ++i) {
    if (n <= n_tokens[i]) {
      const double f = static_cast<double>(n - n_tokens[i - 1]) / (n_tokens[i] - n_tokens[i - 1]);
      return ratio[i - 1] + f * (ratio[i] - ratio[i - 1]);
    }
  }
  if (n_tokens.size() == 1) return ratio.back() * static_cast<double>(n);
  const size_t k = n_tokens.size() - 1;
  const double slope = (ratio[k] - ratio[k - 1]) / (n_tokens[k] - n_tokens[k - 1]);
  return ratio[k] + slope * static_cast<double>(n - n_tokens[k]);
}

nlohmann::json CostCurve::to_json() const { return {{"n_tokens", n_tokens}, {"ratio", ratio}}; }

CostCurve CostCurve::from_json(const nlohmann::json& json) {
  TESSERA_CHECK(json.is_object() && json.contains("n_tokens") && json.contains("ratio"),
                "cost curve: expected an object with n_tokens and ratio");
  const auto& n = json.at("n_tokens");
  const auto& r = json.at("ratio");
  TESSERA_CHECK(n.is_array() && r.is_array() && n.size() == r.size() && !n.empty(),
                "cost curve: n_tokens and ratio must be arrays of one length");
  CostCurve c;
  for (size_t i = 0; i < n.size(); ++i) {
    TESSERA_CHECK(n[i].is_number_integer() && r[i].is_number(),
                  "cost curve: entry {} is not (integer, number)", i);
    c.n_tokens.push_back(n[i].get<int64_t>());
    c.ratio.push_back(r[i].get<double>());
    TESSERA_CHECK(std::isfinite(c.ratio.back()) && c.ratio.back() > 0,
                  "cost curve: ratio {} is not a positive number", i);
    TESSERA_CHECK(i == 0 ? c.n_tokens[0] == 1 : c.n_tokens[i] > c.n_tokens[i - 1],
                  "cost curve: n_tokens must start at 1 and ascend");
  }
  return c;
}

std::vector<double> time_forwards(llm::LlamaEngine& engine, const std::vector<int64_t>& n_tokens,
                                  int64_t rounds) {
  TESSERA_CHECK(rounds > 0, "forward cost: rounds must be positive, got {}", rounds);
  const int64_t start = engine.n_past();
  for (int64_t n : n_tokens) {
    TESSERA_CHECK(n >= 1 && start + n <= engine.capacity(),
                  "forward cost: {} cached + {} tokens do not fit the context {}", start, n,
                  engine.capacity());
  }
  std::vector<double> best(n_tokens.size(), std::numeric_limits<double>::infinity());
  std::vector<float> logits;
  for (int64_t round = 0; round < rounds; ++round) {
    for (size_t i = 0; i < n_tokens.size(); ++i) {
      const std::vector<int64_t> block(n_tokens[i], 1);
      engine.truncate(start);
      const Timer timer;
      engine.forward(block, logits);
      best[i] = std::min(best[i], timer.elapsed_s());
    }
  }
  engine.truncate(start);
  return best;
}

CostCurve measure_cost_curve(llm::LlamaEngine& engine, const std::vector<int64_t>& n_tokens,
                             int64_t rounds) {
  TESSERA_CHECK(!n_tokens.empty() && n_tokens.front() == 1 &&
                    std::is_sorted(n_tokens.begin(), n_tokens.end()),
                "cost curve: n_tokens must start at 1 and ascend");
  const auto seconds = time_forwards(engine, n_tokens, rounds);
  CostCurve c;
  c.n_tokens = n_tokens;
  for (double s : seconds) c.ratio.push_back(s / seconds[0]);
  return c;
}

std::string cost_curve_key(const llm::LlamaEngine& engine) {
  const auto& c = engine.config();
  std::string key = fmt::format("cost-d{}-l{}-h{}-kv{}-f{}-v{}-{}-t{}-{}", c.dim, c.n_layers,
                                c.n_heads, c.n_kv_heads, c.hidden_dim, c.vocab_size,
                                llm::matmul_kernel_name(), at::get_num_threads(), cpu_model_name());
  for (char& ch : key) {
    if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-') ch = '_';
  }
  return key + ".json";
}

CostCurve cached_cost_curve(llm::LlamaEngine& engine, const std::string& dir) {
  const auto path = std::filesystem::path(dir) / cost_curve_key(engine);
  if (std::filesystem::exists(path)) {
    try {
      return CostCurve::from_json(parse_json(read_file(path.string()), path.string()));
    } catch (const std::exception&) {
      // A damaged cache entry is measured again and replaced.
    }
  }
  // Room for the largest forward: measure from an empty cache when the context is short.
  std::vector<int64_t> ns;
  for (int64_t n : {1, 2, 3, 4, 6, 8, 12, 16}) {
    if (engine.n_past() + n <= engine.capacity()) ns.push_back(n);
  }
  const CostCurve curve = measure_cost_curve(engine, ns);
  std::filesystem::create_directories(dir);
  write_file_atomic(path.string(), curve.to_json().dump(1));
  return curve;
}

BlockPolicy::BlockPolicy(CostCurve curve, int64_t max_block)
    : curve_(std::move(curve)), max_block_(max_block) {
  TESSERA_CHECK(max_block >= 1, "block policy: the largest block must be >= 1, got {}", max_block);
  TESSERA_CHECK(!curve_.n_tokens.empty(), "block policy: empty cost curve");
}

double BlockPolicy::acceptance() const { return (accepted_ + 1.0) / (accepted_ + rejected_ + 2.0); }

double BlockPolicy::expected_speedup(int64_t n) const {
  if (n <= 1) return 1.0;
  const double q = std::min(acceptance(), 1.0 - 1e-9);
  const double tpf = (1.0 - std::pow(q, static_cast<double>(n))) / (1.0 - q);
  return tpf / (curve_.at(n) / curve_.at(1));
}

int64_t BlockPolicy::best_block() const {
  int64_t best = 1;
  double best_speedup = 1.0;
  for (int64_t n = 2; n <= max_block_; ++n) {
    const double s = expected_speedup(n);
    if (s > best_speedup) {
      best = n;
      best_speedup = s;
    }
  }
  return best;
}

int64_t BlockPolicy::next() {
  const int64_t best = best_block();
  if (best > 1) {
    probe_interval_ = 16;
    ar_steps_ = 0;
    return best;
  }
  if (max_block_ == 1 || ++ar_steps_ < probe_interval_) return 1;
  // A probe of the cheapest block, so that a text where guessing starts to pay is noticed.
  ar_steps_ = 0;
  probe_interval_ = std::min<int64_t>(probe_interval_ * 2, 256);
  return 2;
}

void BlockPolicy::observe(int64_t block, int64_t accepted) {
  if (block <= 1) return;  // an AR step says nothing about guesses
  TESSERA_CHECK(accepted >= 1 && accepted <= block, "block policy: accepted {} of a block of {}",
                accepted, block);
  // Old evidence counts less, so the estimate follows the text (about the last 50 forwards).
  constexpr double kDiscount = 0.98;
  accepted_ = accepted_ * kDiscount + static_cast<double>(accepted - 1);
  rejected_ = rejected_ * kDiscount + (accepted < block ? 1.0 : 0.0);
}

}  // namespace tessera::jacobi
