// Progressive sub-net search and Pareto re-selection (see search.h).
#include "tessera/subnet/search.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/seed.h"
#include "tessera/subnet/ranking.h"
#include "tessera/subnet/training.h"

namespace tessera::subnet {
namespace {

/// Validation accuracy of one spec: the net is given it as its only sub-net, BN calibrated.
double evaluate_spec(SlimNet& net, const SubnetSpec& spec, const torch::Tensor& calibration,
                     const data::Dataset& val_set, int64_t batch_size) {
  net->set_subnets({spec});
  calibrate_bn(net, 0, calibration, batch_size);
  return subnet_accuracy(net, 0, val_set);
}

/// The slot whose next group (its last `group` channels in rank order) to remove, or -1.
int64_t pick_slot(SlimNet& net, const SubnetSpec& current,
                  const std::vector<std::vector<double>>& tolerance, const SearchOptions& o) {
  std::vector<int64_t> slots;
  std::vector<double> tol, saved;
  const int64_t macs = net->macs(current);
  for (int64_t slot = 0; slot < net->n_slots(); ++slot) {
    const int64_t w = current.widths[static_cast<size_t>(slot)];
    if (w <= o.group) continue;
    const auto& t = tolerance[static_cast<size_t>(slot)];
    double sum = 0;
    for (int64_t c = w - o.group; c < w; ++c) sum += t[static_cast<size_t>(c)];
    SubnetSpec next = current;
    next.widths[static_cast<size_t>(slot)] -= o.group;
    slots.push_back(slot);
    tol.push_back(sum / static_cast<double>(o.group));
    saved.push_back(static_cast<double>(macs - net->macs(next)));
  }
  if (slots.empty()) return -1;
  const double mean_saved =
      std::accumulate(saved.begin(), saved.end(), 0.0) / static_cast<double>(saved.size());
  size_t best = 0;
  double best_score = -1;
  for (size_t i = 0; i < slots.size(); ++i) {
    const double score = o.flops_weighted ? tol[i] * saved[i] / mean_saved : tol[i];
    if (score > best_score) {
      best_score = score;
      best = i;
    }
  }
  return slots[best];
}

nlohmann::json step_json(const SearchStep& s) {
  return {{"slot", s.slot},         {"widths", s.spec.widths},  {"macs", s.macs},
          {"accuracy", s.accuracy}, {"finetuned", s.finetuned}, {"target", s.target}};
}

}  // namespace

void SearchOptions::validate() const {
  TESSERA_CHECK(group >= 1, "search: group must be >= 1, got {}", group);
  TESSERA_CHECK(!targets.empty(), "search: targets is empty");
  for (size_t i = 0; i < targets.size(); ++i) {
    TESSERA_CHECK(std::isfinite(targets[i]) && targets[i] > 0 && targets[i] < 1,
                  "search: target {} not in (0, 1)", targets[i]);
    TESSERA_CHECK(i == 0 || targets[i] < targets[i - 1],
                  "search: targets must be strictly descending ({} after {})", targets[i],
                  targets[i - 1]);
  }
  TESSERA_CHECK(std::isfinite(threshold) && threshold >= 0, "search: threshold must be >= 0");
  TESSERA_CHECK(finetune_steps >= 0, "search: finetune_steps must be >= 0");
  TESSERA_CHECK(std::isfinite(finetune_lr) && finetune_lr > 0, "search: finetune_lr must be > 0");
  TESSERA_CHECK(batch_size >= 2, "search: batch_size must be >= 2, got {}", batch_size);
  TESSERA_CHECK(calibration_images >= 2, "search: calibration_images must be >= 2");
  TESSERA_CHECK(reselect_window >= 0, "search: reselect_window must be >= 0");
}

nlohmann::json SearchOptions::to_json() const {
  return {{"group", group},
          {"targets", targets},
          {"threshold", threshold},
          {"finetune_steps", finetune_steps},
          {"finetune_lr", finetune_lr},
          {"batch_size", batch_size},
          {"calibration_images", calibration_images},
          {"flops_weighted", flops_weighted},
          {"reselect_window", reselect_window},
          {"seed", seed}};
}

nlohmann::json SearchResult::to_json() const {
  nlohmann::json specs = nlohmann::json::array(), steps = nlohmann::json::array();
  for (const auto& s : subnets) specs.push_back(s.to_json());
  for (const auto& s : path) steps.push_back(step_json(s));
  return {{"subnets", specs}, {"macs", macs},           {"accuracy", accuracy},
          {"path", steps},    {"finetunes", finetunes}, {"finetune_steps", finetune_steps}};
}

SearchResult SearchResult::from_json(const nlohmann::json& json) {
  SearchResult r;
  try {
    for (const auto& s : json.at("subnets")) r.subnets.push_back({s.get<std::vector<int64_t>>()});
    r.macs = json.at("macs").get<std::vector<int64_t>>();
    r.accuracy = json.at("accuracy").get<std::vector<double>>();
    for (const auto& s : json.at("path")) {
      SearchStep step;
      step.slot = s.at("slot").get<int64_t>();
      step.spec.widths = s.at("widths").get<std::vector<int64_t>>();
      step.macs = s.at("macs").get<int64_t>();
      step.accuracy = s.at("accuracy").get<double>();
      step.finetuned = s.at("finetuned").get<bool>();
      step.target = s.at("target").get<int64_t>();
      r.path.push_back(step);
    }
    r.finetunes = json.at("finetunes").get<int64_t>();
    r.finetune_steps = json.at("finetune_steps").get<int64_t>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("bad search record: {}", e.what()));
  }
  return r;
}

SubnetSpec smallest_spec(const SlimNetImpl& net, int64_t group) {
  TESSERA_CHECK(group >= 1, "search: group must be >= 1, got {}", group);
  SubnetSpec spec;
  for (int64_t slot = 0; slot < net.n_slots(); ++slot)
    spec.widths.push_back((net.slot_max(slot) - 1) % group + 1);
  return spec;
}

SearchResult progressive_search(SlimNet& net, const data::Dataset& train_set,
                                const data::Dataset& val_set, const SearchOptions& o) {
  o.validate();
  TESSERA_CHECK(val_set.size() > 0 && train_set.size() > 0, "search: empty data set");
  const SubnetSpec full = net->full_spec();
  const int64_t full_macs = net->macs(full);
  const int64_t min_macs = net->macs(smallest_spec(*net, o.group));
  for (const double t : o.targets)
    TESSERA_CHECK(t * static_cast<double>(full_macs) >= static_cast<double>(min_macs),
                  "search: target FLOPs {} x full ({:.0f} MACs) is below the smallest sub-net "
                  "reachable with groups of {} ({} MACs, {:.4f} x full)",
                  t, t * static_cast<double>(full_macs), o.group, min_macs,
                  static_cast<double>(min_macs) / static_cast<double>(full_macs));
  seed_everything(o.seed);
  const torch::Tensor calibration = train_set.images.slice(0, 0, o.calibration_images);
  const auto tolerance = normalized_tolerance(net);
  SearchResult result;
  SubnetSpec current = full;
  double accuracy = evaluate_spec(net, current, calibration, val_set, o.batch_size);
  result.path.push_back({-1, current, full_macs, accuracy, false, -1});
  result.subnets.push_back(current);
  result.macs.push_back(full_macs);
  result.accuracy.push_back(accuracy);
  double last_finetuned = accuracy;
  size_t target = 0;
  while (target < o.targets.size()) {
    const int64_t slot = pick_slot(net, current, tolerance, o);
    TESSERA_CHECK(slot >= 0, "search: no slot left to shrink");  // excluded by the check above
    current.widths[static_cast<size_t>(slot)] -= o.group;
    SearchStep step{slot, current, net->macs(current), 0.0, false, -1};
    step.accuracy = evaluate_spec(net, current, calibration, val_set, o.batch_size);
    if (last_finetuned - step.accuracy > o.threshold && o.finetune_steps > 0) {
      // Selective fine-tuning: the sub-nets recorded so far and the current one, sum of CEs.
      std::vector<SubnetSpec> specs = result.subnets;
      specs.push_back(current);
      MultiTermOptions mo;
      mo.switchable_bn = false;
      mo.train.steps = o.finetune_steps;
      mo.train.batch_size = o.batch_size;
      mo.train.lr = o.finetune_lr;
      mo.train.per_step_schedule = true;
      mo.train.seed = o.seed + 1000 + static_cast<uint64_t>(result.finetunes);
      mo.train.progress_label = "subnet search fine-tune";
      train_multiterm(net, specs, train_set, mo);
      const double before = step.accuracy;
      step.accuracy = evaluate_spec(net, current, calibration, val_set, o.batch_size);
      log::info("subnet search: fine-tuned at {:.3f} x MACs: {:.2f}% -> {:.2f}%",
                static_cast<double>(step.macs) / static_cast<double>(full_macs), 100 * before,
                100 * step.accuracy);
      step.finetuned = true;
      last_finetuned = step.accuracy;
      ++result.finetunes;
      result.finetune_steps += o.finetune_steps;
    }
    if (static_cast<double>(step.macs) <= o.targets[target] * static_cast<double>(full_macs)) {
      step.target = static_cast<int64_t>(target++);
      result.subnets.push_back(current);
      result.macs.push_back(step.macs);
      result.accuracy.push_back(step.accuracy);
    }
    result.path.push_back(step);
  }
  net->set_subnets(result.subnets);
  return result;
}

nlohmann::json ReselectResult::to_json() const {
  nlohmann::json specs = nlohmann::json::array();
  for (const auto& s : subnets) specs.push_back(s.to_json());
  return {{"subnets", specs}, {"accuracy", accuracy}, {"notes", notes}};
}

ReselectResult reselect(SlimNet& net, const SearchResult& search, const data::Dataset& train_set,
                        const data::Dataset& val_set, const SearchOptions& o) {
  o.validate();
  TESSERA_CHECK(!search.subnets.empty(), "reselect: the search recorded no sub-net");
  const torch::Tensor calibration = train_set.images.slice(0, 0, o.calibration_images);
  std::vector<SubnetSpec> chosen = {search.subnets[0]};
  std::vector<double> accuracy = {
      evaluate_spec(net, search.subnets[0], calibration, val_set, o.batch_size)};
  ReselectResult out;
  for (size_t i = 0; i < search.path.size(); ++i) {
    if (search.path[i].target < 0) continue;
    size_t best = i;
    double best_acc = -1;
    for (size_t j = i; j < search.path.size() && j <= i + static_cast<size_t>(o.reselect_window);
         ++j) {
      if (j > i && search.path[j].target >= 0) break;  // the next target's sub-net
      const double acc =
          evaluate_spec(net, search.path[j].spec, calibration, val_set, o.batch_size);
      if (acc > best_acc) {
        best_acc = acc;
        best = j;
      }
    }
    if (best != i)
      out.notes.push_back(fmt::format("target {}: path point {} ({:.2f}%) replaces point {}",
                                      search.path[i].target, best, 100 * best_acc, i));
    chosen.push_back(search.path[best].spec);
    accuracy.push_back(best_acc);
  }
  // Pareto front: a sub-net stays only when it beats every cheaper one (the full net stays).
  std::vector<bool> keep(chosen.size(), true);
  double best_cheaper = -1;
  for (size_t k = chosen.size(); k-- > 1;) {
    if (accuracy[k] <= best_cheaper) {
      keep[k] = false;
      out.notes.push_back(fmt::format("sub-net {} ({:.2f}%) dropped: a cheaper one is at {:.2f}%",
                                      k, 100 * accuracy[k], 100 * best_cheaper));
    }
    best_cheaper = std::max(best_cheaper, accuracy[k]);
  }
  for (size_t k = 0; k < chosen.size(); ++k) {
    if (!keep[k]) continue;
    out.subnets.push_back(chosen[k]);
    out.accuracy.push_back(accuracy[k]);
  }
  net->set_subnets(out.subnets);
  calibrate_all(net, calibration, o.batch_size);
  return out;
}

}  // namespace tessera::subnet
