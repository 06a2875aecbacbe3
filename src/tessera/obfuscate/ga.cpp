// The genetic algorithm over obfuscation knobs (see ga.h).
#include "tessera/obfuscate/ga.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>

#include "tessera/core/error.h"
#include "tessera/core/random.h"
#include "tessera/core/seed.h"

namespace tessera::obfuscate {

namespace {

// Box-Muller on core/random draws (std::normal_distribution differs between libraries).
double normal(std::mt19937_64& rng) {
  const double u1 = 1.0 - random::uniform01(rng);  // (0, 1]
  const double u2 = random::uniform01(rng);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

// Mutation noise scale per knob, as a multiple of sigma (section 4.6's table; our fuse gene is
// binary, so it takes the binary scale 1/4).
double noise_scale(Knob knob) {
  switch (knob) {
    case Knob::widen:
    case Knob::deepen:
    case Knob::skip:
    case Knob::fuse:
      return 0.25;
    case Knob::branch:
    case Knob::schedule:
      return 0.5;
    case Knob::dummy:
    case Knob::decoy:
      return 1.0;
    case Knob::kernel:
      return 1.0 / 16.0;
  }
  return 0.25;
}

struct Mask {
  std::vector<bool> knob = std::vector<bool>(kNumKnobs, false);
  std::vector<bool> layer;
  bool on(size_t l, int k) const { return layer[l] && knob[static_cast<size_t>(k)]; }
};

Mask make_mask(int64_t n_layers, const GaOptions& o) {
  Mask m;
  for (const auto& name : o.knobs) m.knob[static_cast<size_t>(parse_knob(name))] = true;
  m.layer.assign(static_cast<size_t>(n_layers), o.layers.empty());
  for (int64_t l : o.layers) {
    TESSERA_CHECK(l >= 0 && l < n_layers, "GA layer {} is outside the network's {} layers", l,
                  n_layers);
    m.layer[static_cast<size_t>(l)] = true;
  }
  return m;
}

Genome initial(int64_t n_layers, const Mask& mask, const GaOptions& o, std::mt19937_64& rng) {
  Genome g;
  g.layers.resize(static_cast<size_t>(n_layers));
  for (size_t l = 0; l < g.layers.size(); ++l) {
    for (int k = 0; k < kNumKnobs; ++k) {
      if (!mask.on(l, k) || random::uniform01(rng) >= o.init_p[static_cast<size_t>(k)]) continue;
      const Knob knob = static_cast<Knob>(k);
      // widen 1/8..4/8, branch 1..2, dummy 1..4, decoy 1..8, schedule 1..2, binary genes 1.
      const int hi = knob == Knob::widen ? 4 : LayerGenes::max_value(knob);
      g.layers[l].set(knob, static_cast<int>(random::uniform_int(rng, 1, hi)));
    }
  }
  return g;
}

void mutate(Genome& g, const Mask& mask, double sigma, std::mt19937_64& rng) {
  for (size_t l = 0; l < g.layers.size(); ++l) {
    for (int k = 0; k < kNumKnobs; ++k) {
      if (!mask.on(l, k)) continue;
      const Knob knob = static_cast<Knob>(k);
      const double noise = sigma * noise_scale(knob) * normal(rng);
      g.layers[l].set(knob, static_cast<int>(std::floor(g.layers[l].get(knob) + noise)));
    }
  }
}

}  // namespace

void GaOptions::validate() const {
  TESSERA_CHECK(budget > 0.0 && std::isfinite(budget),
                "the latency budget must be > 0 (a fraction, e.g. 0.02 for 2%), got {}", budget);
  TESSERA_CHECK(population >= 2 && population % 2 == 0,
                "the GA population must be even and >= 2, got {}", population);
  TESSERA_CHECK(generations >= 1, "the GA needs >= 1 generation, got {}", generations);
  TESSERA_CHECK(sigma >= 0.0 && halve_every >= 1, "GA sigma must be >= 0 and halve_every >= 1");
  TESSERA_CHECK(!knobs.empty(), "the GA needs at least one knob");
  for (const auto& k : knobs) parse_knob(k);
  TESSERA_CHECK(init_p.size() == kNumKnobs, "init_p needs {} probabilities, got {}", kNumKnobs,
                init_p.size());
  for (double p : init_p) TESSERA_CHECK(p >= 0.0 && p <= 1.0, "init_p {} is not in [0, 1]", p);
  TESSERA_CHECK(retime_top >= 0, "retime_top must be >= 0, got {}", retime_top);
  TESSERA_CHECK(margin >= 0.0 && margin < 1.0, "the budget margin must be in [0, 1), got {}",
                margin);
}

nlohmann::json GaOptions::to_json() const {
  return {{"population", population},
          {"generations", generations},
          {"sigma", sigma},
          {"halve_every", halve_every},
          {"budget", budget},
          {"knobs", knobs},
          {"layers", layers},
          {"init_p", init_p},
          {"seed", seed},
          {"retime_top", retime_top},
          {"margin", margin}};
}

double ga_fitness(double score, double cost, double clean_cost, double budget) {
  TESSERA_CHECK(clean_cost > 0 && budget > 0, "fitness needs clean_cost > 0 and budget > 0");
  const double offset = (budget / 2.0) * (budget / 2.0);
  const double rho = cost / clean_cost - 1.0 - budget;
  return rho > 0 ? score / (rho * rho + offset) : score / offset;
}

nlohmann::json GaResult::to_json() const {
  nlohmann::json h = nlohmann::json::array();
  for (const auto& g : history)
    h.push_back({{"generation", g.generation},
                 {"best_fitness", g.best_fitness},
                 {"best_score", g.best_score},
                 {"best_overhead", g.best_overhead},
                 {"retimed", g.retimed}});
  return {{"best_genome", best.to_json()},
          {"best_score", best_eval.score},
          {"best_cost", best_eval.cost},
          {"best_first_cost", best_first_cost},
          {"best_fitness", best_fitness},
          {"evaluations", evaluations},
          {"retimed", retimed},
          {"history", h}};
}

namespace {

struct Entry {
  Evaluation eval;        ///< cost: re-timed once `retimed`
  double first_cost = 0;  ///< the evaluator's cost
  bool retimed = false;
};

}  // namespace

GaResult run_ga(int64_t n_layers, double clean_cost, const Evaluator& evaluate, const GaOptions& o,
                const Retimer& retime) {
  o.validate();
  TESSERA_CHECK(n_layers >= 1, "the GA needs a network with >= 1 layer");
  TESSERA_CHECK(clean_cost > 0, "the clean latency must be > 0, got {}", clean_cost);
  const Mask mask = make_mask(n_layers, o);
  auto rng = make_rng(o.seed, 0x6a);
  const bool retiming = retime && o.retime_top > 0;
  const Genome clean{std::vector<LayerGenes>(static_cast<size_t>(n_layers))};
  std::map<std::string, Entry> cache;
  const auto entry = [&](const Genome& g) -> Entry& {
    const auto it = cache.find(g.key());
    if (it != cache.end()) return it->second;
    Entry e;
    e.eval = evaluate(g);
    e.first_cost = e.eval.cost;
    e.retimed = !retiming;
    if (g == clean) {  // the clean model's cost by definition
      e.eval.cost = clean_cost;
      e.retimed = true;
    }
    return cache[g.key()] = e;
  };
  const auto fitness = [&](const Entry& e) {
    return ga_fitness(e.eval.score, e.eval.cost, clean_cost, o.budget);
  };
  const double limit = o.budget * (1.0 - o.margin);
  std::vector<Genome> pop{clean};
  while (static_cast<int64_t>(pop.size()) < o.population)
    pop.push_back(initial(n_layers, mask, o, rng));
  GaResult result;
  double sigma = o.sigma;
  const int64_t half = o.population / 2;
  const size_t top = std::min(pop.size(), static_cast<size_t>(std::max<int64_t>(0, o.retime_top)));
  for (int64_t gen = 0; gen < o.generations; ++gen) {
    if (gen > 0 && gen % o.halve_every == 0) sigma /= 2.0;
    std::vector<double> fit(pop.size());
    std::vector<size_t> order(pop.size());
    int64_t retimed_now = 0;
    for (bool again = true; again;) {  // re-time until the top candidates all carry re-timings
      for (size_t i = 0; i < pop.size(); ++i) fit[i] = fitness(entry(pop[i]));
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t a, size_t b) { return fit[a] > fit[b]; });
      again = false;
      for (size_t k = 0; retiming && k < top && retimed_now < 3 * o.retime_top; ++k) {
        Entry& e = entry(pop[order[k]]);
        if (e.retimed) continue;
        e.eval.cost = retime(pop[order[k]]);
        e.retimed = true;
        ++retimed_now;
        again = true;
      }
    }
    // The best genome: chosen only among re-timed genomes within budget * (1 - margin).
    for (size_t idx : order) {
      const Entry& e = entry(pop[idx]);
      if (!e.retimed || e.eval.cost / clean_cost - 1.0 > limit) continue;
      if (gen == 0 || fit[idx] > result.best_fitness) {
        result.best = pop[idx];
        result.best_eval = e.eval;
        result.best_first_cost = e.first_cost;
        result.best_fitness = fit[idx];
      }
      break;
    }
    result.retimed += retimed_now;
    result.history.push_back({gen, result.best_fitness, result.best_eval.score,
                              result.best_eval.cost / clean_cost - 1.0, retimed_now});
    if (gen + 1 == o.generations) break;
    std::vector<Genome> elite;
    for (int64_t k = 0; k < half; ++k) elite.push_back(pop[order[static_cast<size_t>(k)]]);
    // One cut point per generation for the per-layer lists; parents (k, k + 1 mod half).
    const auto cut = static_cast<size_t>(random::uniform_int(rng, 0, n_layers));
    pop = elite;
    for (int64_t k = 0; k < half; ++k) {
      const Genome& a = elite[static_cast<size_t>(k)];
      const Genome& b = elite[static_cast<size_t>((k + 1) % half)];
      Genome child = a;
      for (size_t l = cut; l < child.layers.size(); ++l) child.layers[l] = b.layers[l];
      mutate(child, mask, sigma, rng);
      pop.push_back(child);
    }
  }
  result.evaluations = static_cast<int64_t>(cache.size());
  return result;
}

}  // namespace tessera::obfuscate
