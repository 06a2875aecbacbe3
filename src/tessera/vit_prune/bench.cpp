// The CP-ViT bench (see bench.h): the sweep, side-by-side latency, equal-FLOPs comparison, goals,
// plots, the ImageNet-size FLOPs table, the fine-tune, the reference model and the tour step.
#include "tessera/vit_prune/bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <memory>

#include "tessera/core/error.h"
#include "tessera/core/log.h"
#include "tessera/core/progress.h"
#include "tessera/core/seed.h"
#include "tessera/core/stats.h"
#include "tessera/core/timer.h"
#include "tessera/models/registry.h"
#include "tessera/train/train.h"

namespace tessera::vit_prune {
namespace {

constexpr int64_t kEvalBatch = 500;
constexpr const char* kReferenceName = "vit-fmnist";

data::Dataset first(const data::Dataset& set, int64_t n) {
  return n > 0 && n < set.size() ? set.head(n) : set;
}

/// One configuration of the sweep: an engine and its reducer (null: the model's own forward).
struct Candidate {
  std::shared_ptr<ReducedVit> engine;
  std::shared_ptr<TokenReducer> reducer;
  models::Model model{nullptr};  ///< set for the unpruned row: timed through model->forward
  void run(const torch::Tensor& images) {
    if (engine) {
      engine->forward(images, reducer.get());
    } else {
      model->forward(images);
    }
  }
};

/// Median latency (ms) of every candidate at each batch size, timed round-robin (one forward of
/// each candidate per round) so that a load change on the machine hits all of them alike.
std::vector<std::vector<double>> measure_latency(std::vector<Candidate>& candidates,
                                                 const torch::Tensor& images,
                                                 const VitBenchOptions& o) {
  torch::NoGradGuard no_grad;
  std::vector<std::vector<double>> out(candidates.size());
  ProgressBar bar("vit latency", static_cast<int64_t>(o.latency_batches.size()) * o.latency_reps);
  for (const int64_t batch : o.latency_batches) {
    const torch::Tensor x = images.slice(0, 0, batch).contiguous();
    for (auto& c : candidates)
      for (int i = 0; i < 3; ++i) c.run(x);  // warm-up
    std::vector<std::vector<double>> times(candidates.size());
    for (int64_t rep = 0; rep < o.latency_reps; ++rep) {
      for (size_t i = 0; i < candidates.size(); ++i) {
        const Timer timer;
        candidates[i].run(x);
        times[i].push_back(static_cast<double>(timer.elapsed_us()) / 1000.0);
      }
      bar.update();
    }
    for (size_t i = 0; i < candidates.size(); ++i) out[i].push_back(median(times[i]));
  }
  bar.finish();
  return out;
}

std::vector<int64_t> head_counts(const CascadeSchedule& schedule) {
  std::vector<int64_t> counts;
  for (const auto& heads : schedule.kept_heads)
    counts.push_back(static_cast<int64_t>(heads.size()));
  return counts;
}

/// Checks that the forward ran the tokens and heads the analytic plan counts.
void check_trace(const ForwardTrace& trace, const TokenPlan& plan, const std::string& what) {
  TESSERA_CHECK(trace.attention_tokens == plan.attention_tokens &&
                    trace.mlp_tokens == plan.mlp_tokens && trace.heads == plan.heads,
                "vit bench: {} ran other token counts than its FLOPs plan", what);
}

VitBenchRow make_row(const std::string& method, const MethodSetting& setting, double accuracy,
                     const MacCount& macs, const MacCount& full, const TokenPlan& plan) {
  VitBenchRow row;
  row.method = method;
  row.target_keep = setting.target_keep;
  row.setting = setting.describe();
  row.accuracy = accuracy;
  row.macs = macs;
  row.macs_saved = 1.0 - static_cast<double>(macs.total) / static_cast<double>(full.total);
  row.final_tokens = plan.mlp_tokens.back();
  row.detail["attention_tokens"] = plan.attention_tokens;
  row.detail["mlp_tokens"] = plan.mlp_tokens;
  row.detail["heads"] = plan.heads;
  return row;
}

/// Linear interpolation of accuracy at `macs` along one method's curve; NaN outside it.
double interpolate(std::vector<std::pair<double, double>> curve, double macs) {
  std::sort(curve.begin(), curve.end());
  for (size_t i = 0; i + 1 < curve.size(); ++i) {
    const auto [x0, y0] = curve[i];
    const auto [x1, y1] = curve[i + 1];
    if (macs >= x0 && macs <= x1)
      return x1 == x0 ? std::max(y0, y1) : y0 + (y1 - y0) * (macs - x0) / (x1 - x0);
  }
  if (curve.size() == 1 && curve.front().first == macs) return curve.front().second;
  return std::numeric_limits<double>::quiet_NaN();
}

std::vector<std::pair<double, double>> curve_of(const std::vector<VitBenchRow>& rows,
                                                const std::string& method) {
  std::vector<std::pair<double, double>> curve;
  for (const auto& r : rows)
    if (r.method == method) curve.emplace_back(static_cast<double>(r.macs.total), r.accuracy);
  return curve;
}

/// CP-ViT's rows against each baseline's curve; `suffix` "+ft" compares the fine-tuned rows.
void compare_equal_flops(const std::vector<VitBenchRow>& rows,
                         const std::vector<std::string>& methods, const std::string& suffix,
                         std::vector<EqualFlopsRow>& out) {
  for (const auto& r : rows) {
    if (r.method != "cp-vit" + suffix || r.target_keep >= 1.0) continue;
    EqualFlopsRow e{r.target_keep, r.macs_saved, r.accuracy, !suffix.empty(), {}, {}};
    for (const auto& m : methods) {
      if (m == "cp-vit") continue;
      e.baselines.push_back(m + suffix);
      e.baseline_accuracy.push_back(
          interpolate(curve_of(rows, m + suffix), static_cast<double>(r.macs.total)));
    }
    out.push_back(e);
  }
}

/// One method at one setting on `model`: its engine and reducer, and the plan it must run.
struct Configured {
  Candidate candidate;
  TokenPlan plan;
  nlohmann::json detail;
  std::vector<std::vector<int64_t>> kept_heads;
};

Configured configure(const MethodSetting& s, const VitShape& shape, models::Model& model,
                     const torch::Tensor& calibration) {
  Configured c;
  switch (s.method) {
    case Method::cpvit: {
      const CascadeSchedule schedule = calibrate_cascade(model, calibration, s.cascade);
      c.kept_heads = schedule.kept_heads;
      c.candidate.reducer = std::make_shared<CascadePruner>(schedule, s.cascade.patch_score);
      c.plan = cascade_plan(shape, schedule.kept_patches, head_counts(schedule));
      c.detail = schedule.to_json();
      break;
    }
    case Method::evit:
      c.candidate.reducer = std::make_shared<EvitPruner>(s.evit, shape.depth);
      c.plan = evit_plan(shape, s.evit);
      break;
    case Method::tome:
      c.candidate.reducer = std::make_shared<TomeMerger>(s.tome);
      c.plan = tome_plan(shape, s.tome);
      break;
  }
  c.candidate.engine = std::make_shared<ReducedVit>(model, c.kept_heads);
  return c;
}

}  // namespace

Method parse_method(const std::string& name) {
  if (name == "cp-vit") return Method::cpvit;
  if (name == "evit") return Method::evit;
  if (name == "tome") return Method::tome;
  throw Error(fmt::format("unknown vit pruning method '{}' (cp-vit, evit, tome)", name));
}

std::string method_name(Method method) {
  switch (method) {
    case Method::cpvit:
      return "cp-vit";
    case Method::evit:
      return "evit";
    case Method::tome:
      return "tome";
  }
  return "?";
}

std::string MethodSetting::describe() const {
  switch (method) {
    case Method::cpvit:
      return cascade.head_keep_ratio < 1.0
                 ? fmt::format("keep {:.2f}, heads {:.2f}", cascade.keep_ratio,
                               cascade.head_keep_ratio)
                 : fmt::format("keep {:.2f}", cascade.keep_ratio);
    case Method::evit:
      return fmt::format("keep_rate {:.3f}{}", evit.keep_rate, evit.fuse ? " +fuse" : "");
    case Method::tome:
      return fmt::format("r {}", tome.r);
  }
  return "?";
}

MethodSetting method_setting(Method method, double target_keep, const VitShape& shape,
                             const CascadeOptions& cascade, bool evit_fuse,
                             bool tome_proportional) {
  TESSERA_CHECK(std::isfinite(target_keep) && target_keep > 0 && target_keep <= 1,
                "keep ratio must be in (0, 1], got {}", target_keep);
  MethodSetting s;
  s.method = method;
  s.target_keep = target_keep;
  s.cascade = cascade;
  s.cascade.keep_ratio = target_keep;
  s.evit.keep_rate = std::min(1.0, std::cbrt(target_keep));
  s.evit.fuse = evit_fuse;
  s.tome.r = std::llround((1.0 - target_keep) * static_cast<double>(shape.patches()) /
                          static_cast<double>(shape.depth));
  s.tome.proportional_attention = tome_proportional;
  return s;
}

void VitBenchOptions::validate() const {
  TESSERA_CHECK(!keep_ratios.empty(), "vit bench: keep_ratios is empty");
  for (const double k : keep_ratios)
    TESSERA_CHECK(std::isfinite(k) && k > 0 && k <= 1, "vit bench: keep ratio {} not in (0, 1]", k);
  TESSERA_CHECK(!methods.empty(), "vit bench: methods is empty");
  for (const auto& m : methods) parse_method(m);
  cascade.validate();
  TESSERA_CHECK(calibration_images >= 1, "vit bench: calibration_images must be >= 1, got {}",
                calibration_images);
  TESSERA_CHECK(eval_size >= 0, "vit bench: eval_size must be >= 0, got {}", eval_size);
  TESSERA_CHECK(!latency_batches.empty(), "vit bench: latency_batches is empty");
  for (const int64_t b : latency_batches)
    TESSERA_CHECK(b >= 1 && b <= 4096, "vit bench: latency batch {} not in [1, 4096]", b);
  TESSERA_CHECK(latency_reps >= 1, "vit bench: latency_reps must be >= 1, got {}", latency_reps);
  TESSERA_CHECK(finetune_steps >= 0, "vit bench: finetune_steps must be >= 0, got {}",
                finetune_steps);
  TESSERA_CHECK(std::isfinite(finetune_lr) && finetune_lr > 0,
                "vit bench: finetune_lr must be > 0, got {}", finetune_lr);
  TESSERA_CHECK(finetune_distill >= 0 && finetune_distill <= 1,
                "vit bench: finetune_distill must be in [0, 1], got {}", finetune_distill);
}

nlohmann::json VitBenchOptions::to_json() const {
  return {{"keep_ratios", keep_ratios},
          {"methods", methods},
          {"cascade", cascade.to_json()},
          {"evit_fuse", evit_fuse},
          {"tome_proportional", tome_proportional},
          {"calibration_images", calibration_images},
          {"eval_size", eval_size},
          {"latency_batches", latency_batches},
          {"latency_reps", latency_reps},
          {"finetune_steps", finetune_steps},
          {"finetune_lr", finetune_lr},
          {"finetune_distill", finetune_distill},
          {"seed", seed}};
}

double reduced_accuracy(ReducedVit& engine, TokenReducer* reducer, const data::Dataset& set) {
  TESSERA_CHECK(set.size() > 0, "reduced_accuracy: empty data set");
  torch::NoGradGuard no_grad;
  models::Model model = engine.model();
  const bool was_training = model->is_training();
  model->eval();
  int64_t correct = 0;
  for (int64_t begin = 0; begin < set.size(); begin += kEvalBatch) {
    const auto logits =
        engine.forward(set.images.slice(0, begin, begin + kEvalBatch), reducer).logits;
    correct +=
        logits.argmax(1).eq(set.labels.slice(0, begin, begin + kEvalBatch)).sum().item<int64_t>();
  }
  model->train(was_training);
  return static_cast<double>(correct) / static_cast<double>(set.size());
}

void FinetuneOptions::validate() const {
  TESSERA_CHECK(steps >= 1, "finetune: steps must be >= 1, got {}", steps);
  TESSERA_CHECK(std::isfinite(lr) && lr > 0, "finetune: lr must be > 0, got {}", lr);
  TESSERA_CHECK(batch_size >= 1, "finetune: batch_size must be >= 1, got {}", batch_size);
  TESSERA_CHECK(distill_weight >= 0 && distill_weight <= 1,
                "finetune: distill_weight must be in [0, 1], got {}", distill_weight);
}

double finetune_reduced(models::Model& model, const std::vector<std::vector<int64_t>>& kept_heads,
                        TokenReducer& reducer, const data::Dataset& train_set,
                        const FinetuneOptions& options) {
  options.validate();
  models::Model teacher{nullptr};
  if (options.distill_weight > 0) {
    teacher = models::clone(model);
    teacher->eval();
    for (auto& p : teacher->parameters()) p.requires_grad_(false);
  }
  ReducedVit engine(model, kept_heads);
  const train::TrainOptions& recipe = reference_recipe().options;
  train::TrainOptions o;
  o.steps = options.steps;
  o.batch_size = options.batch_size;
  o.optimizer = "adamw";
  o.lr = options.lr;
  o.weight_decay = 0.01;
  o.schedule = "cosine";
  o.per_step_schedule = true;
  o.warmup_steps = std::max<int64_t>(1, options.steps / 10);
  o.clip_grad_norm = 1.0;
  o.augment_pad = recipe.augment_pad;
  o.augment_flip = recipe.augment_flip;
  o.label_smoothing = recipe.label_smoothing;
  o.seed = options.seed;
  o.progress_label = "vit finetune (pruned)";
  auto pruned = [&](const torch::Tensor& x) { return engine.forward(x, &reducer).logits; };
  const double w = options.distill_weight;
  train::TrainHooks hooks;
  hooks.loss = [&](const torch::Tensor& images, const torch::Tensor& labels) {
    const auto logits = pruned(images);
    namespace F = torch::nn::functional;
    auto loss = F::cross_entropy(logits, labels,
                                 F::CrossEntropyFuncOptions().label_smoothing(o.label_smoothing));
    if (w > 0) {
      torch::Tensor target;
      {
        torch::NoGradGuard no_grad;
        target = torch::log_softmax(teacher->forward(images), 1);
      }
      const auto kl =
          F::kl_div(torch::log_softmax(logits, 1), target,
                    F::KLDivFuncOptions().reduction(torch::kBatchMean).log_target(true));
      loss = (1 - w) * loss + w * kl;
    }
    return train::StepLoss{loss, logits};
  };
  const auto epochs = train::fit(*model, pruned, train_set, nullptr, o, hooks);
  model->eval();
  return epochs.empty() ? 0.0 : epochs.back().train_loss;
}

VitBenchResult run_vit_bench(models::Model& model, const data::Dataset& train_set,
                             const data::Dataset& test_set, const VitBenchOptions& o) {
  o.validate();
  models::VitImpl& vit = as_vit(model);
  o.cascade.validate_for(vit.options().heads);
  model->eval();
  const VitShape shape = VitShape::of(vit);
  const MacCount full = vit_macs(shape, full_plan(shape));
  const data::Dataset eval_set = first(test_set, o.eval_size);
  const torch::Tensor calibration = train_set.images.slice(0, 0, o.calibration_images);
  const torch::Tensor probe = eval_set.images.slice(0, 0, 8);
  VitBenchResult result;
  result.options = o;
  result.eval_images = eval_set.size();
  result.model_description =
      fmt::format("ViT {}x{} px, patch {} ({} patches), D {}, {} blocks, {} heads, MLP {}",
                  shape.image_size, shape.image_size, shape.patch_size, shape.patches(), shape.dim,
                  shape.depth, shape.heads, shape.mlp_hidden);
  std::vector<Candidate> candidates;
  MethodSetting none;
  result.rows.push_back(make_row("unpruned", none, train::evaluate(model, eval_set).accuracy, full,
                                 full, full_plan(shape)));
  result.rows.back().setting = "";
  candidates.push_back({nullptr, nullptr, model});
  ProgressBar bar("vit bench sweep", static_cast<int64_t>(o.methods.size() * o.keep_ratios.size()));
  for (const auto& name : o.methods) {
    const Method method = parse_method(name);
    std::vector<std::string> seen;  // ratios that map to the same setting (ToMe's r) run once
    for (const double keep : o.keep_ratios) {
      const MethodSetting s =
          method_setting(method, keep, shape, o.cascade, o.evit_fuse, o.tome_proportional);
      if (std::find(seen.begin(), seen.end(), s.describe()) != seen.end()) {
        bar.update();
        continue;
      }
      seen.push_back(s.describe());
      Configured c = configure(s, shape, model, calibration);
      {
        torch::NoGradGuard no_grad;
        check_trace(c.candidate.engine->forward(probe, c.candidate.reducer.get()).trace, c.plan,
                    s.describe());
      }
      const MacCount macs = vit_macs(shape, c.plan);
      const double accuracy =
          reduced_accuracy(*c.candidate.engine, c.candidate.reducer.get(), eval_set);
      result.rows.push_back(make_row(name, s, accuracy, macs, full, c.plan));
      result.rows.back().detail["schedule"] = c.detail;
      candidates.push_back(c.candidate);
      log::info("vit bench: {} {}: {:.2f}% at {:.1f}% MACs saved", name, s.describe(),
                100 * accuracy, 100 * result.rows.back().macs_saved);
      if (o.finetune_steps > 0 && keep < 1.0) {
        // A copy of the model, tuned with the same reducer (CP-ViT: the schedule calibrated on
        // the original weights).
        models::Model copy = models::clone(model);
        FinetuneOptions fo;
        fo.steps = o.finetune_steps;
        fo.lr = o.finetune_lr;
        fo.distill_weight = o.finetune_distill;
        fo.seed = o.seed;
        finetune_reduced(copy, c.kept_heads, *c.candidate.reducer, train_set, fo);
        Candidate tuned{std::make_shared<ReducedVit>(copy, c.kept_heads), c.candidate.reducer,
                        nullptr};
        const double tuned_acc = reduced_accuracy(*tuned.engine, tuned.reducer.get(), eval_set);
        result.rows.push_back(make_row(name + "+ft", s, tuned_acc, macs, full, c.plan));
        candidates.push_back(tuned);
        log::info("vit bench: {}+ft {}: {:.2f}%", name, s.describe(), 100 * tuned_acc);
      }
      bar.update();
    }
  }
  bar.finish();
  const auto latency = measure_latency(candidates, eval_set.images, o);
  for (size_t i = 0; i < result.rows.size(); ++i) {
    result.rows[i].latency_ms = latency[i];
    for (size_t b = 0; b < latency[i].size(); ++b)
      result.rows[i].speedup.push_back(latency[0][b] / latency[i][b]);
  }
  compare_equal_flops(result.rows, o.methods, "", result.equal_flops);
  compare_equal_flops(result.rows, o.methods, "+ft", result.equal_flops);
  return result;
}

VitBenchResult run_vit_bench(const VitBenchOptions& options) {
  options.validate();
  models::Model model = reference_model(options.data_dir);
  const int64_t image_size = model->config().image_size;
  const auto train_set = data::load_fashion_mnist("train", options.data_dir, image_size);
  const auto test_set = data::load_fashion_mnist("test", options.data_dir, image_size);
  VitBenchResult result = run_vit_bench(model, train_set, test_set, options);
  result.model_description += " (reference model " + std::string(kReferenceName) + ")";
  return result;
}

// ---------------------------------------------------------------------------------------------
// Tables, goals, plots

Table VitBenchResult::table() const {
  std::vector<std::string> header = {"method", "setting", "acc %",
                                     "MMACs",  "saved %", "final tokens"};
  for (const int64_t b : options.latency_batches) {
    header.push_back(fmt::format("ms @ batch {}", b));
    header.push_back(fmt::format("speed-up @ {}", b));
  }
  Table t(header);
  for (const auto& r : rows) {
    std::vector<std::string> cells = {
        r.method,
        r.setting.empty() ? "-" : r.setting,
        percent(r.accuracy),
        fmt::format("{:.2f}", static_cast<double>(r.macs.total) / 1e6),
        fmt::format("{:.1f}", 100 * r.macs_saved),
        std::to_string(r.final_tokens)};
    for (size_t b = 0; b < r.latency_ms.size(); ++b) {
      cells.push_back(fmt::format("{:.3f}", r.latency_ms[b]));
      cells.push_back(fmt::format("{:.2f}x", r.speedup[b]));
    }
    t.add_row(cells);
  }
  return t;
}

Table VitBenchResult::equal_flops_table() const {
  std::vector<std::string> header = {"cp-vit keep", "MACs saved %", "cp-vit acc %"};
  // The baselines by method name; a fine-tuned row compares with the baseline's "+ft" curve.
  if (!equal_flops.empty())
    for (const auto& b : equal_flops.front().baselines) header.push_back(b + " acc % (interp.)");
  Table t(header);
  for (const auto& e : equal_flops) {
    std::vector<std::string> cells = {
        fmt::format("{:.2f}{}", e.target_keep, e.fine_tuned ? " +ft" : ""),
        fmt::format("{:.1f}", 100 * e.macs_saved), percent(e.cpvit_accuracy)};
    for (const double a : e.baseline_accuracy)
      cells.push_back(std::isnan(a) ? "outside curve" : percent(a));
    t.add_row(cells);
  }
  return t;
}

Table VitBenchResult::goals_table() const {
  Table t({"goal", "measured", "verdict"});
  const VitBenchRow& base = rows.front();
  const VitBenchRow* forty = nullptr;
  for (const auto& r : rows) {
    if (r.method != "cp-vit" && r.method != "cp-vit+ft") continue;
    if (std::abs(r.target_keep - 0.5) < 1e-9) {
      const double loss = 100 * (base.accuracy - r.accuracy);
      t.add_row({fmt::format("50% patches pruned: MACs cut > 40%, accuracy loss < 1 point{}",
                             r.method == "cp-vit" ? "" : " (fine-tuned)"),
                 fmt::format("MACs -{:.1f}%, accuracy {:.2f}% -> {:.2f}% ({:+.2f} points)",
                             100 * r.macs_saved, 100 * base.accuracy, 100 * r.accuracy, -loss),
                 r.macs_saved > 0.40 && loss < 1.0 ? "met" : "missed"});
    }
    if (r.method == "cp-vit" && r.macs_saved >= 0.40 &&
        (forty == nullptr || r.macs_saved < forty->macs_saved))
      forty = &r;
  }
  if (forty != nullptr) {
    std::string measured =
        fmt::format("cp-vit {} ({:.1f}% saved):", forty->setting, 100 * forty->macs_saved);
    bool met = true;
    for (size_t b = 0; b < forty->speedup.size(); ++b) {
      measured +=
          fmt::format(" {:.2f}x at batch {}", forty->speedup[b], options.latency_batches[b]);
      met = met && forty->speedup[b] >= 1.5;
    }
    t.add_row({">= 1.5x faster at the 40%-MACs-saved point", measured, met ? "met" : "missed"});
  }
  for (const bool tuned : {false, true}) {
    std::vector<const EqualFlopsRow*> mode;
    for (const auto& e : equal_flops)
      if (e.fine_tuned == tuned) mode.push_back(&e);
    for (size_t m = 0; !mode.empty() && m < mode.front()->baselines.size(); ++m) {
      int64_t n = 0, wins = 0;
      double worst = std::numeric_limits<double>::infinity();
      for (const EqualFlopsRow* e : mode) {
        if (std::isnan(e->baseline_accuracy[m])) continue;
        ++n;
        const double gap = 100 * (e->cpvit_accuracy - e->baseline_accuracy[m]);
        wins += gap >= 0 ? 1 : 0;
        worst = std::min(worst, gap);
      }
      if (n == 0) continue;
      t.add_row({fmt::format("equal MACs: cp-vit{} accuracy >= {}", tuned ? "+ft" : "",
                             mode.front()->baselines[m]),
                 fmt::format("{}/{} points at or above; worst gap {:+.2f} points", wins, n, worst),
                 wins == n ? "met" : "missed"});
    }
  }
  return t;
}

std::string VitBenchResult::to_string() const {
  return fmt::format(
      "\n{}; accuracy on {} test images; latency = median of {} forwards, timed round-robin\n{}"
      "\nCP-ViT against the baselines at equal MACs (baseline accuracy interpolated along its "
      "curve)\n{}\nGoals\n{}",
      model_description, eval_images, options.latency_reps, table().to_string(),
      equal_flops_table().to_string(), goals_table().to_string());
}

nlohmann::json VitBenchResult::to_json() const {
  nlohmann::json out_rows = nlohmann::json::array();
  for (const auto& r : rows) {
    out_rows.push_back({{"method", r.method},
                        {"target_keep", r.target_keep},
                        {"setting", r.setting},
                        {"accuracy", r.accuracy},
                        {"macs", r.macs.total},
                        {"macs_extra", r.macs.extra},
                        {"macs_saved", r.macs_saved},
                        {"final_tokens", r.final_tokens},
                        {"latency_ms", r.latency_ms},
                        {"speedup", r.speedup},
                        {"detail", r.detail}});
  }
  return {{"model", model_description},
          {"eval_images", eval_images},
          {"rows", out_rows},
          {"table", table().to_json()},
          {"equal_flops", equal_flops_table().to_json()},
          {"goals", goals_table().to_json()}};
}

namespace {
SvgPlot method_plot(const std::vector<VitBenchRow>& rows, const std::string& title,
                    const std::string& x_label,
                    const std::function<double(const VitBenchRow&)>& x_of) {
  SvgPlot plot(title, x_label, "accuracy %");
  std::vector<std::string> names;
  for (const auto& r : rows)
    if (r.method != "unpruned" && std::find(names.begin(), names.end(), r.method) == names.end())
      names.push_back(r.method);
  for (const auto& name : names) {
    SvgSeries s{name, {}, true};
    for (const auto& r : rows)
      if (r.method == name) s.points.emplace_back(x_of(r), 100 * r.accuracy);
    std::sort(s.points.begin(), s.points.end());
    plot.add_series(s);
  }
  plot.add_series({"unpruned", {{x_of(rows.front()), 100 * rows.front().accuracy}}, false});
  return plot;
}
}  // namespace

SvgPlot VitBenchResult::accuracy_flops_plot() const {
  return method_plot(rows, "Accuracy against analytic MACs per image", "MMACs per image",
                     [](const VitBenchRow& r) { return static_cast<double>(r.macs.total) / 1e6; });
}

SvgPlot VitBenchResult::accuracy_latency_plot(size_t batch_index) const {
  TESSERA_CHECK(batch_index < options.latency_batches.size(), "no latency batch {}", batch_index);
  return method_plot(rows,
                     fmt::format("Accuracy against measured latency at batch {}",
                                 options.latency_batches[batch_index]),
                     "ms per batch",
                     [batch_index](const VitBenchRow& r) { return r.latency_ms[batch_index]; });
}

std::string VitBenchResult::svg() const {
  std::vector<std::string> documents = {accuracy_flops_plot().render()};
  for (size_t b = 0; b < options.latency_batches.size(); ++b)
    documents.push_back(accuracy_latency_plot(b).render());
  return svg_side_by_side(documents);
}

// ---------------------------------------------------------------------------------------------
// ImageNet-size FLOPs model

nlohmann::json ImagenetFlopsResult::to_json() const {
  return {{"shape", shape.to_json()}, {"table", table.to_json()}};
}

ImagenetFlopsResult imagenet_flops(const std::vector<double>& keep_ratios,
                                   const CascadeOptions& cascade) {
  ImagenetFlopsResult out;
  out.shape = VitShape::deit_small();
  const VitShape& s = out.shape;
  const double full = static_cast<double>(vit_macs(s, full_plan(s)).total);
  auto add = [&](const std::string& method, const std::string& setting, const TokenPlan& plan) {
    const double macs = static_cast<double>(vit_macs(s, plan).total);
    out.table.add_row({method, setting, fmt::format("{:.3f}", macs / 1e9),
                       fmt::format("{:.1f}", 100 * (1 - macs / full))});
  };
  add("unpruned", "DeiT-S 224 px", full_plan(s));
  for (const double keep : keep_ratios) {
    if (keep >= 1.0) continue;
    for (const Method m : {Method::cpvit, Method::evit, Method::tome}) {
      const MethodSetting ms = method_setting(m, keep, s, cascade, true, true);
      if (m == Method::cpvit) {
        CascadeOptions equal = ms.cascade;
        equal.layer_aware = false;
        add("cp-vit", ms.describe() + " (equal shares)",
            cascade_plan(s, cascade_kept_patches(s.patches(), s.depth, equal)));
      } else if (m == Method::evit) {
        add("evit", ms.describe(), evit_plan(s, ms.evit));
      } else {
        add("tome", ms.describe(), tome_plan(s, ms.tome));
      }
    }
  }
  EvitOptions published_evit;
  published_evit.keep_rate = 0.7;
  published_evit.fuse = false;
  add("evit (published setting)", "keep_rate 0.7 at 3/6/9", evit_plan(s, published_evit));
  add("tome (published setting)", "r 13", tome_plan(s, TomeOptions{13, true}));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reference model and the tour

train::TrainRecipe reference_recipe() {
  train::TrainRecipe recipe;
  recipe.arch.name = "vit";
  recipe.arch.in_channels = 1;
  recipe.arch.image_size = 28;
  recipe.arch.num_classes = 10;
  recipe.arch.extra = {
      {"patch_size", 4}, {"dim", 64}, {"depth", 6}, {"heads", 4}, {"mlp_ratio", 2.0}};
  train::TrainOptions& o = recipe.options;
  o.epochs = 8;  // 6 epochs reached 87.54%
  o.label_smoothing = 0.1;
  o.batch_size = 64;
  o.optimizer = "adamw";
  o.lr = 1e-3;
  o.weight_decay = 0.05;
  o.schedule = "cosine";
  o.per_step_schedule = true;
  o.warmup_steps = 300;
  o.clip_grad_norm = 1.0;
  // No random crops: the short budget underfits (a trial with crops, batch 128, lr 2e-3 was at
  // 80.7% after 3 of 6 epochs).
  o.augment_pad = 0;
  o.augment_flip = true;
  o.progress_label = "train vit";
  return recipe;
}

models::Model reference_model(const std::string& data_dir) {
  const train::TrainRecipe recipe = reference_recipe();
  return train::cached_model(recipe, [&] {
    seed_everything(recipe.options.seed);
    models::Model model = models::create(recipe.arch);
    const auto train_set = data::load_fashion_mnist("train", data_dir, recipe.arch.image_size);
    const auto test_set = data::load_fashion_mnist("test", data_dir, recipe.arch.image_size);
    train::TrainHooks hooks;
    hooks.on_epoch = [](const train::EpochStats& s) {
      log::info("vit-fmnist epoch {}: test accuracy {:.2f}% ({:.0f} s)", s.epoch,
                100 * s.test_accuracy, s.seconds);
      return true;
    };
    train::fit(model, train_set, &test_set, recipe.options, hooks);
    return model;
  });
}

std::vector<train::ReferenceModel> reference_models() {
  train::ReferenceModel m;
  m.name = kReferenceName;
  m.description =
      "ViT 28 px, patch 4 (49 patches), D 64, 6 blocks, 4 heads, MLP x2; Fashion-MNIST, 8 epochs "
      "AdamW (`vit bench`, tour)";
  m.recipe = [] { return reference_recipe(); };
  m.build = [](const std::string& data_dir) { return reference_model(data_dir); };
  return {m};
}

std::vector<TourRow> tour(const TourContext& context) {
  models::Model model = reference_model(context.data_dir);
  const auto train_set = data::load_fashion_mnist("train", context.data_dir, 28).head(512);
  const auto test_set = data::load_fashion_mnist("test", context.data_dir, 28).head(2000);
  VitBenchOptions o;
  o.keep_ratios = {0.5};
  o.methods = {"cp-vit"};
  o.calibration_images = 512;
  o.latency_batches = {64};
  o.latency_reps = 10;
  o.seed = context.seed;
  const VitBenchResult r = run_vit_bench(model, train_set, test_set, o);
  const VitBenchRow& base = r.rows.front();
  const VitBenchRow& cut = r.rows.back();
  return {{"vit_prune: CP-ViT, 50% of patches pruned (reference ViT vit-fmnist)",
           fmt::format("acc {}% -> {}% ({} test images), MACs -{:.1f}%, batch-64 latency "
                       "{:.2f}x faster",
                       percent(base.accuracy), percent(cut.accuracy), r.eval_images,
                       100 * cut.macs_saved, cut.speedup.front()),
           "50% patches pruned: > 40% FLOPs cut, < 1% accuracy loss (ViT-B/16, CIFAR)"}};
}

}  // namespace tessera::vit_prune
