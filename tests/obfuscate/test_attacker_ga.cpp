// CTC greedy decoding and edit distance on fixed cases, the attackers' training on a few random
// traces, the GA's fitness and its determinism under a seed, and its bad-input errors.
#include <gtest/gtest.h>

#include "tessera/obfuscate/attacker.h"
#include "tessera/obfuscate/bench.h"
#include "tessera/obfuscate/ga.h"
#include "test_support.h"

namespace tessera::obfuscate {
namespace {

using testing::error_of;

class AttackerGa : public testing::SeededTest {};

// Log-probabilities whose per-frame argmax is `classes` (0 = blank).
torch::Tensor frames(const std::vector<int>& classes) {
  torch::Tensor lp = torch::full({static_cast<int64_t>(classes.size()), kNumLabels + 1}, -5.0);
  for (size_t t = 0; t < classes.size(); ++t) lp[static_cast<int64_t>(t)][classes[t]] = -0.1;
  return lp;
}

TEST_F(AttackerGa, CtcGreedyDecodingMergesRepeatsAndDropsBlanks) {
  // Frames: blank conv conv blank conv pool pool fc -> labels conv conv pool fc (0, 0, 2, 1).
  EXPECT_EQ(ctc_greedy_decode(frames({0, 1, 1, 0, 1, 3, 3, 2})), (std::vector<int>{0, 0, 2, 1}));
  EXPECT_EQ(ctc_greedy_decode(frames({0, 0, 0})), std::vector<int>{});
  EXPECT_EQ(ctc_greedy_decode(frames({6, 6, 6, 0, 6})), (std::vector<int>{5, 5}));  // add add
  EXPECT_EQ(ctc_greedy_decode(frames({7})), std::vector<int>{6});                   // concat
  EXPECT_NE(error_of([] {
              ctc_greedy_decode(torch::zeros({4, 3}));
            }).find("log-probabilities"),
            std::string::npos);
}

TEST_F(AttackerGa, EditDistanceAndLabelErrorRate) {
  EXPECT_EQ(edit_distance({}, {}), 0);
  EXPECT_EQ(edit_distance({0, 1, 2}, {}), 3);
  EXPECT_EQ(edit_distance({0, 1, 2}, {0, 2}), 1);           // one deletion
  EXPECT_EQ(edit_distance({0, 0, 0, 0}, {1, 1}), 4);        // 2 substitutions + 2 deletions
  EXPECT_EQ(edit_distance({2, 0, 1, 3}, {0, 1, 3, 2}), 2);  // kitten/sitting-style shift
  EXPECT_DOUBLE_EQ(label_error_rate({0, 2}, {0, 1, 2, 3}), 0.5);
  EXPECT_NE(error_of([] { label_error_rate({0}, {}); }).find("non-empty"), std::string::npos);
}

TEST_F(AttackerGa, SequencePredictorEmitsTwoFramesPerStep) {
  AttackerOptions o;
  o.hidden = 8;
  SeqPredictor seq(o);
  EXPECT_EQ(seq->forward(torch::randn({5, 3, kNumFeatures})).sizes(),
            (std::vector<int64_t>{10, 3, kNumLabels + 1}));
}

TEST_F(AttackerGa, AttackerLearnsRandomTracesAndRoundTrips) {
  AttackerRecipe r;
  r.random.max_log2_channels = 5;
  r.random.max_conv_units = 6;
  r.trace_repeats = 1;
  r.attacker.hidden = 32;
  r.attacker.epochs = 25;
  r.attacker.dim_epochs = 20;
  const auto train = random_traces(r, 60, 1);
  Attacker a = train_attacker(train, r.attacker);
  const HeldOutResult fit = evaluate_held_out(a, train);
  EXPECT_LT(fit.mean_ler, 0.6);  // far below predicting nothing (LER 1)
  testing::TempDir dir;
  a.save(dir.file("a.pt"));
  Attacker b = Attacker::load(dir.file("a.pt"), r.attacker);
  EXPECT_EQ(a.predict_sequence(train[0].trace), b.predict_sequence(train[0].trace));
  EXPECT_EQ(a.predict_dims(train[0].trace, 0), b.predict_dims(train[0].trace, 0));
}

TEST_F(AttackerGa, FitnessFollowsSection46) {
  // Within budget: score / (budget/2)^2; over it: score / (rho^2 + offset).
  EXPECT_DOUBLE_EQ(ga_fitness(0.5, 101.0, 100.0, 0.02), 0.5 / 1e-4);
  const double rho = 1.10 - 1.0 - 0.02;
  EXPECT_NEAR(ga_fitness(0.5, 110.0, 100.0, 0.02), 0.5 / (rho * rho + 1e-4), 1e-9);
  EXPECT_GT(ga_fitness(0.5, 101.0, 100.0, 0.02), ga_fitness(0.5, 110.0, 100.0, 0.02));
  EXPECT_NE(error_of([] { ga_fitness(1, 1, 1, 0.0); }).find("budget > 0"), std::string::npos);
}

// A deterministic evaluator: the score rewards dummies, decoys and deepening, the cost grows with
// every gene, with widening and kernels the most expensive.
Evaluation toy(const Genome& g) {
  double score = 0, cost = 100;
  for (const auto& l : g.layers) {
    score += l.dummy + 0.5 * l.decoy + 2.0 * l.deepen + l.branch;
    cost += 0.2 * l.dummy + 0.05 * l.decoy + 0.3 * l.deepen + 0.5 * l.branch + 3.0 * l.widen +
            5.0 * l.kernel;
  }
  return {score, cost};
}

TEST_F(AttackerGa, GaIsDeterministicUnderASeedAndImproves) {
  GaOptions o;
  o.population = 8;
  o.generations = 6;
  o.budget = 0.05;
  o.margin = 0.0;  // exact toy costs: no reserve for timing noise needed
  o.seed = 11;
  const GaResult a = run_ga(10, 100.0, toy, o), b = run_ga(10, 100.0, toy, o);
  EXPECT_EQ(a.best, b.best);
  EXPECT_EQ(a.best_fitness, b.best_fitness);
  ASSERT_EQ(a.history.size(), b.history.size());
  for (size_t i = 0; i < a.history.size(); ++i)
    EXPECT_EQ(a.history[i].best_fitness, b.history[i].best_fitness);
  // Elitism: the best fitness never drops; the GA beats the clean genome (score 0).
  for (size_t i = 1; i < a.history.size(); ++i)
    EXPECT_GE(a.history[i].best_fitness, a.history[i - 1].best_fitness);
  EXPECT_GT(a.best_eval.score, 0);
  o.seed = 12;
  const GaResult c = run_ga(10, 100.0, toy, o);
  EXPECT_FALSE(c.best == a.best && c.history.back().best_fitness == a.history.back().best_fitness);
}

// The winner's curse: the evaluator's cost is the true (toy) cost minus a deterministic "lucky"
// discount of up to 8% per genome (FNV hash of its key); the re-timer returns the true cost.
double luck(const Genome& g) {
  uint64_t h = 1469598103934665603ULL;
  for (char ch : g.key()) h = (h ^ static_cast<unsigned char>(ch)) * 1099511628211ULL;
  return 0.08 * static_cast<double>(h % 1000) / 1000.0;
}
Evaluation noisy_toy(const Genome& g) {
  Evaluation e = toy(g);
  e.cost *= 1.0 - luck(g);
  return e;
}

TEST_F(AttackerGa, RetimingChoosesOnlyOnReTimedCostsWithinTheBudget) {
  GaOptions o;
  o.population = 8;
  o.generations = 6;
  o.budget = 0.05;
  o.seed = 11;
  o.retime_top = 2;
  o.margin = 0.1;
  o.knobs = {"widen", "branch", "deepen", "kernel", "dummy", "decoy"};  // the ones toy() prices
  int64_t calls = 0;
  const Retimer retime = [&](const Genome& g) {
    ++calls;
    return toy(g).cost;
  };
  const GaResult r = run_ga(10, 100.0, noisy_toy, o, retime);
  const double true_overhead = toy(r.best).cost / 100.0 - 1.0;
  EXPECT_LE(true_overhead, o.budget * (1.0 - o.margin));
  EXPECT_DOUBLE_EQ(r.best_eval.cost, toy(r.best).cost);  // the re-timed figure, not the lucky one
  EXPECT_DOUBLE_EQ(r.best_first_cost, noisy_toy(r.best).cost);
  EXPECT_GT(r.best_eval.score, 0);
  EXPECT_GT(r.retimed, 0);
  EXPECT_EQ(r.retimed, calls);  // each genome re-timed at most once
  EXPECT_LE(calls, 3 * o.retime_top * o.generations);
  int64_t per_gen = 0;
  for (const auto& h : r.history) {
    EXPECT_LE(h.best_overhead, o.budget * (1.0 - o.margin) + 1e-12);
    per_gen += h.retimed;
  }
  EXPECT_EQ(per_gen, calls);
  // Deterministic under the seed when the timings are.
  const GaResult again = run_ga(10, 100.0, noisy_toy, o, retime);
  EXPECT_EQ(again.best, r.best);
  EXPECT_EQ(again.best_fitness, r.best_fitness);
  // Without re-timing the GA trusts the lucky figures: its choice costs more than it saw.
  const GaResult cursed = run_ga(10, 100.0, noisy_toy, o);
  EXPECT_GT(toy(cursed.best).cost, cursed.best_eval.cost);
  EXPECT_NE(error_of([&] {
              GaOptions bad = o;
              bad.margin = 1.0;
              bad.validate();
            }).find("margin"),
            std::string::npos);
}

TEST_F(AttackerGa, GaRespectsKnobAndLayerMasks) {
  GaOptions o;
  o.population = 6;
  o.generations = 3;
  o.knobs = {"dummy"};
  o.layers = {2, 3};
  const GaResult r = run_ga(6, 100.0, toy, o);
  for (size_t l = 0; l < r.best.layers.size(); ++l) {
    LayerGenes only = r.best.layers[l];
    if (l != 2 && l != 3) {
      EXPECT_EQ(only, LayerGenes{});
    }
    only.dummy = 0;
    EXPECT_EQ(only, LayerGenes{});
  }
}

TEST_F(AttackerGa, BadBudgetsAndOptionsAreClearErrors) {
  GaOptions o;
  o.budget = 0.0;
  EXPECT_NE(error_of([&] { run_ga(4, 100.0, toy, o); }).find("budget must be > 0"),
            std::string::npos);
  o.budget = -0.1;
  EXPECT_NE(error_of([&] { o.validate(); }).find("budget must be > 0"), std::string::npos);
  o.budget = 0.02;
  o.population = 3;
  EXPECT_NE(error_of([&] { o.validate(); }).find("even"), std::string::npos);
  o.population = 4;
  o.knobs = {"twist"};
  EXPECT_NE(error_of([&] { o.validate(); }).find("unknown knob 'twist'"), std::string::npos);
  o.knobs = {"dummy"};
  o.layers = {9};
  EXPECT_NE(error_of([&] { run_ga(4, 100.0, toy, o); }).find("GA layer 9"), std::string::npos);
}

}  // namespace
}  // namespace tessera::obfuscate
