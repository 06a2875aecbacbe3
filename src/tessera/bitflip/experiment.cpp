// The attack-and-defense trial, the check-overhead timing and the evasion experiment.
#include "tessera/bitflip/experiment.h"

#include <algorithm>
#include <map>

#include "tessera/bitflip/crc_guard.h"
#include "tessera/bitflip/guard.h"
#include "tessera/core/error.h"
#include "tessera/core/random.h"
#include "tessera/core/stats.h"
#include "tessera/core/timer.h"
#include "tessera/train/train.h"

namespace tessera::bitflip {

namespace {

/// The RADAR part of a trial at one G (run_trial).
RadarOutcome radar_outcome(const QuantizedModel& clean, const RadarKey& key, int64_t g_size,
                           const TrialOptions& options, const std::vector<BitFlip>& dumped,
                           const data::Dataset& eval_set) {
  RadarOptions radar_options{g_size, options.check_bits};
  radar_options.small_layer_weights = options.small_layer_weights;
  const Radar radar(key, radar_options, clean.weights);
  DeployedModel deployed = DeployedModel::deploy(clean, &radar);
  const GoldenSignatures golden = radar.sign(deployed);
  deployed.apply_flips(dumped);
  const torch::Tensor attacked = deployed.snapshot();
  RadarOutcome outcome;
  outcome.group_size = g_size;
  outcome.n_flips = static_cast<int64_t>(dumped.size());
  outcome.storage_fraction = static_cast<double>(golden.storage_bits()) /
                             static_cast<double>(clean.n_weights() * clean.bits);
  // Detection: the check over the deployed memory, as the guard's first read sees it.
  const CheckResult check = radar.check(deployed, golden);
  outcome.n_flagged_groups = check.n_flagged_groups();
  std::map<std::pair<size_t, int64_t>, int64_t> per_group;
  for (const auto& flip : dumped) {
    const size_t layer = deployed.layer_index(flip.layer);
    ++per_group[{layer, radar.layout(layer).group_of(flip.index)}];
  }
  for (const auto& [group, count] : per_group) outcome.n_shared += count > 1 ? count : 0;
  std::vector<BitFlip> detected;
  for (const auto& flip : dumped) {
    const size_t layer = deployed.layer_index(flip.layer);
    if (check.is_flagged(layer, radar.layout(layer).group_of(flip.index))) {
      ++outcome.n_detected;
      detected.push_back(flip);
    }
  }
  // Both recoveries run inside the guarded inference: the first batch's read finds the flips
  // and repairs the memory before the unit runs.
  auto guarded_accuracy = [&](RecoveryMode mode, int64_t& zeroed) {
    deployed.restore(attacked);
    RadarGuard guard(deployed, radar, golden, GuardOptions{1, true, mode});
    const double accuracy =
        train::evaluate([&](const torch::Tensor& x) { return guard.forward(x); }, eval_set, 512)
            .accuracy;
    zeroed = guard.stats().n_weights_zeroed;
    return accuracy;
  };
  outcome.recovered_accuracy = guarded_accuracy(RecoveryMode::zero_group, outcome.n_weights_zeroed);
  outcome.marked_accuracy = guarded_accuracy(RecoveryMode::zero_marked, outcome.n_marked_zeroed);
  outcome.restored_accuracy =
      guarded_accuracy(RecoveryMode::restore_marked, outcome.n_restore_changed);
  // The diagnostic: zero only the detected flipped weights (knows the flip list).
  deployed.restore(attacked);
  for (const auto& flip : detected)
    deployed.codes(deployed.layer_index(flip.layer))[flip.index] = 0;
  outcome.oracle_accuracy = evaluate_deployed(deployed, eval_set).accuracy;
  return outcome;
}

}  // namespace

torch::Tensor sample_attack_batch(const data::Dataset& pool, int64_t n, uint64_t seed) {
  TESSERA_CHECK(pool.size() > 0, "the attack pool is empty");
  std::mt19937_64 rng(seed);
  return pool.subset(random::subset(pool.size(), n, rng)).images;
}

void TrialOptions::validate() const {
  TESSERA_CHECK(n_flips >= 1, "trial: n_flips must be >= 1, got {}", n_flips);
  TESSERA_CHECK(n_defended_flips >= 1 && n_defended_flips <= n_flips,
                "trial: n_defended_flips must be in [1, n_flips = {}], got {}", n_flips,
                n_defended_flips);
  TESSERA_CHECK(n_random_flips >= 0, "trial: n_random_flips must be >= 0, got {}", n_random_flips);
  TESSERA_CHECK(attack_batch >= 1, "trial: attack_batch must be >= 1, got {}", attack_batch);
  TESSERA_CHECK(small_layer_weights >= 0, "trial: small_layer_weights must be >= 0, got {}",
                small_layer_weights);
  for (const int64_t g : group_sizes)
    TESSERA_CHECK(g >= 1, "trial: group_sizes must be >= 1, got {}", g);
}

TrialResult run_trial(const QuantizedModel& clean, const data::Dataset& attack_pool,
                      const data::Dataset& eval_set, const TrialOptions& options, uint64_t seed) {
  options.validate();
  Timer timer;
  TrialResult result;
  // PBFA on an unprotected copy.
  {
    QuantizedModel victim = clean.clone();
    AttackOptions attack;
    attack.method = AttackMethod::pbfa;
    attack.n_flips = options.n_flips;
    attack.pbfa = options.pbfa;
    const auto out = run_attack(
        victim, sample_attack_batch(attack_pool, options.attack_batch, seed), &eval_set, attack);
    result.flips = out.flips;
    result.pbfa_accuracy = out.accuracy_after;
    result.pbfa_steps = out.steps;
    result.batch_agreement = out.batch_agreement;
  }
  // Random flips.
  {
    QuantizedModel victim = clean.clone();
    std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
    for (int64_t i = 0; i < options.n_random_flips; ++i) {
      random_flip(victim, rng);
      result.random_accuracy.push_back(evaluate(victim, eval_set).accuracy);
    }
  }
  const std::vector<BitFlip> dumped(result.flips.begin(),
                                    result.flips.begin() + options.n_defended_flips);
  result.defended_attack_accuracy =
      result.pbfa_accuracy[static_cast<size_t>(options.n_defended_flips - 1)];
  // RADAR, one deployed copy per G: sign the clean memory, XOR the flips into the deployed
  // int8 memory, let the guarded inference find and repair them.
  const RadarKey key = RadarKey::from_seed(seed);
  for (const int64_t g_size : options.group_sizes)
    result.radar.push_back(radar_outcome(clean, key, g_size, options, dumped, eval_set));
  // CRC32 per layer: detects the layers, recovers only whole layers.
  {
    const CrcSignatures golden = crc_sign(clean.weights);
    QuantizedModel zeroed = clean.clone();
    apply_flips(zeroed, dumped);
    QuantizedModel reloaded = zeroed.clone();
    const auto bad = crc_check(zeroed.weights, golden);
    result.crc.n_layers_flagged = static_cast<int64_t>(bad.size());
    result.crc.n_weights_zeroed = crc_recover_zero(zeroed.weights, bad);
    zeroed.sync();
    result.crc.zeroed_accuracy = evaluate(zeroed, eval_set).accuracy;
    crc_recover_reload(reloaded.weights, clean.weights, bad);
    reloaded.sync();
    result.crc.reload_accuracy = evaluate(reloaded, eval_set).accuracy;
  }
  result.seconds = timer.elapsed_s();
  return result;
}

std::vector<OverheadResult> measure_check_overhead(DeployedModel& model, const Radar& radar,
                                                   const GoldenSignatures& golden,
                                                   const torch::Tensor& batch, int64_t n_reps,
                                                   const std::vector<CheckKernel>& kernels) {
  TESSERA_CHECK(n_reps >= 1, "n_reps must be >= 1, got {}", n_reps);
  TESSERA_CHECK(!kernels.empty(), "measure_check_overhead: no kernel to time");
  RadarGuard guard(model, radar, golden, GuardOptions{1, true, RecoveryMode::zero_group});
  // The reads alone take tens of microseconds: time `inner` of them per repetition.
  constexpr int kInner = 20;
  auto time_reads = [&](WeightReader* reader) {
    Timer t;
    for (int i = 0; i < kInner; ++i) model.read_all(reader);
    return static_cast<double>(t.elapsed_us()) / kInner;
  };
  // The check alone (fused_read without an output buffer), to split the fused read's cost.
  std::vector<uint32_t> a, b;
  auto time_check_only = [&] {
    Timer t;
    for (int i = 0; i < kInner; ++i) {
      for (size_t l = 0; l < radar.n_layers(); ++l) {
        const LayerLayout& layout = radar.layout(l);
        a.resize(static_cast<size_t>(layout.n_slots()));
        b.resize(a.size());
        fused_read(layout, model.codes(l), nullptr, 0.0f, a.data(), b.data());
      }
    }
    return static_cast<double>(t.elapsed_us()) / kInner;
  };
  const CheckKernel before = check_kernel();
  struct Samples {
    std::vector<double> plain, guarded, read, fused, check_only;
  };
  std::vector<Samples> samples(kernels.size());
  // Warm-up (allocator, thread pool, caches), then every kernel in turn within each repetition,
  // so that a slow spell of the machine touches all of them alike.
  for (int64_t rep = -2; rep < n_reps; ++rep) {
    for (size_t k = 0; k < kernels.size(); ++k) {
      set_check_kernel(kernels[k]);
      Timer t1;
      model.forward(batch);
      const auto plain = static_cast<double>(t1.elapsed_us());
      Timer t2;
      guard.forward(batch);
      const auto guarded = static_cast<double>(t2.elapsed_us());
      const double read = time_reads(nullptr);
      const double fused = time_reads(&guard);
      const double check_only = time_check_only();
      if (rep < 0) continue;
      samples[k].plain.push_back(plain);
      samples[k].guarded.push_back(guarded);
      samples[k].read.push_back(read);
      samples[k].fused.push_back(fused);
      samples[k].check_only.push_back(check_only);
    }
  }
  set_check_kernel(before);
  std::vector<OverheadResult> results;
  for (const auto& s : samples) {
    OverheadResult out;
    out.t_inference_us = median(s.plain);
    out.t_guarded_us = median(s.guarded);
    out.t_read_us = median(s.read);
    out.t_fused_us = median(s.fused);
    out.t_check_only_us = median(s.check_only);
    out.t_check_us = std::max(0.0, out.t_fused_us - out.t_read_us);
    if (out.t_inference_us > 0) {
      out.overhead_fraction = out.t_check_us / out.t_inference_us;
      out.end_to_end_fraction = (out.t_guarded_us - out.t_inference_us) / out.t_inference_us;
    }
    results.push_back(out);
  }
  return results;
}

EvasionResult measure_evasion(const QuantizedModel& clean, int64_t group_size, int64_t n_trials,
                              uint64_t seed) {
  TESSERA_CHECK(n_trials >= 1, "n_trials must be >= 1, got {}", n_trials);
  const Radar radar(RadarKey::from_seed(seed), RadarOptions{group_size, 2}, clean.weights);
  std::mt19937_64 rng(seed + 1);
  EvasionResult out;
  out.group_size = group_size;
  double predicted_sum = 0.0;
  const int bits = clean.bits;
  auto flip_msb = [bits](int32_t v) {
    return quant::from_twos_complement(quant::to_twos_complement(v, bits) ^ (1u << (bits - 1)),
                                       bits);
  };
  // The checksum of one group, with optional replacement values for up to two elements.
  auto group_sig = [&](const LayerLayout& layout, const int32_t* values, int64_t group, int64_t a,
                       int32_t va, int64_t b, int32_t vb) {
    std::vector<int32_t> w;
    std::vector<int8_t> k;
    for (int64_t j = 0; j < layout.group_size; ++j) {
      const int64_t flat = layout.element(group, j);
      w.push_back(flat >= layout.numel ? 0 : flat == a ? va : flat == b ? vb : values[flat]);
      k.push_back(static_cast<int8_t>(layout.key(j)));
    }
    return group_checksum(w.data(), k.data(), static_cast<int64_t>(w.size()), bits).signature();
  };
  while (out.n_trials < n_trials) {
    const size_t layer = static_cast<size_t>(random::uniform_below(rng, clean.weights.size()));
    const auto& q = clean.weights[layer];
    const LayerLayout& layout = radar.layout(layer);
    const int32_t* values = q.values.data_ptr<int32_t>();
    const int64_t n = q.numel();
    if (n < 2) continue;
    const auto a = static_cast<int64_t>(random::uniform_below(rng, static_cast<uint64_t>(n)));
    if (values[a] == 0) continue;
    // The partner: a random other weight of the same (strict) sign, found by rejection.
    int64_t b = -1;
    for (int attempt = 0; attempt < 1000 && b < 0; ++attempt) {
      const auto c = static_cast<int64_t>(random::uniform_below(rng, static_cast<uint64_t>(n)));
      if (c != a && values[c] != 0 && (values[c] > 0) == (values[a] > 0)) b = c;
    }
    if (b < 0) continue;
    const int32_t va = flip_msb(values[a]);
    const int32_t vb = flip_msb(values[b]);
    const int64_t ga = layout.group_of(a);
    const int64_t gb = layout.group_of(b);
    bool detected =
        group_sig(layout, values, ga, -1, 0, -1, 0) != group_sig(layout, values, ga, a, va, b, vb);
    if (gb != ga) {
      detected = detected || group_sig(layout, values, gb, -1, 0, -1, 0) !=
                                 group_sig(layout, values, gb, a, va, b, vb);
    }
    ++out.n_trials;
    if (!detected) ++out.n_undetected;
    // Key-space prediction for this a: a uniformly chosen partner lands in a's group with the
    // opposite key with probability (real members of a's group with the other key) / (n - 1).
    int a_key = 0;
    int64_t other_key = 0;
    for (int64_t j = 0; j < layout.group_size; ++j) {
      const int64_t flat = layout.element(ga, j);
      if (flat == a) a_key = layout.key(j);
    }
    for (int64_t j = 0; j < layout.group_size; ++j) {
      const int64_t flat = layout.element(ga, j);
      if (flat >= n || flat == a) continue;
      if (layout.key(j) != a_key) ++other_key;
    }
    predicted_sum += static_cast<double>(other_key) / static_cast<double>(n - 1);
  }
  out.measured_rate = static_cast<double>(out.n_undetected) / static_cast<double>(out.n_trials);
  out.predicted_rate = predicted_sum / static_cast<double>(out.n_trials);
  return out;
}

}  // namespace tessera::bitflip
