// LM training, trajectory collection, consistency distillation and quality metrics.
#include "tessera/jacobi/lm.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <numeric>
#include <random>

#include "tessera/core/error.h"
#include "tessera/core/json.h"
#include "tessera/core/progress.h"
#include "tessera/core/random.h"
#include "tessera/core/timer.h"
#include "tessera/train/train.h"

namespace tessera::jacobi {

std::vector<TokenizedExample> tokenize_examples(const std::vector<Example>& examples,
                                                const llm::ModelTokenizer& tokenizer,
                                                int64_t max_len) {
  const int64_t eos = tokenizer.eos_id();
  TESSERA_CHECK(eos >= 0, "tokenize: the {} tokenizer has no EOS token to end targets with",
                tokenizer.kind_name());
  std::vector<TokenizedExample> out;
  for (const auto& e : examples) {
    TokenizedExample t;
    t.prompt = tokenizer.encode_prompt(e.prompt);
    t.target = tokenizer.encode(e.target);
    t.target.push_back(eos);
    if (static_cast<int64_t>(t.prompt.size() + t.target.size()) <= max_len)
      out.push_back(std::move(t));
  }
  return out;
}

void LmTrainOptions::validate() const {
  TESSERA_CHECK(steps > 0, "train: steps must be positive, got {}", steps);
  TESSERA_CHECK(batch_size > 0, "train: batch size must be positive, got {}", batch_size);
  TESSERA_CHECK(lr > 0, "train: lr must be positive, got {}", lr);
  TESSERA_CHECK(label_smoothing >= 0 && label_smoothing < 1,
                "train: label smoothing must be in [0, 1), got {}", label_smoothing);
}

ConsistencyLoss parse_consistency_loss(const std::string& name) {
  if (name == "global") return ConsistencyLoss::kGlobal;
  if (name == "local") return ConsistencyLoss::kLocal;
  TESSERA_CHECK(false, "unknown consistency loss '{}' (expected global or local)", name);
  return ConsistencyLoss::kGlobal;
}

std::string consistency_loss_name(ConsistencyLoss loss) {
  return loss == ConsistencyLoss::kGlobal ? "global" : "local";
}

ArLabels parse_ar_labels(const std::string& name) {
  if (name == "teacher") return ArLabels::kTeacher;
  if (name == "ground-truth") return ArLabels::kGroundTruth;
  TESSERA_CHECK(false, "unknown AR labels '{}' (expected teacher or ground-truth)", name);
  return ArLabels::kTeacher;
}

std::string ar_labels_name(ArLabels labels) {
  return labels == ArLabels::kTeacher ? "teacher" : "ground-truth";
}

void DistillOptions::validate() const {
  TESSERA_CHECK(steps > 0, "distill: steps must be positive, got {}", steps);
  TESSERA_CHECK(batch_size > 0, "distill: batch size must be positive, got {}", batch_size);
  TESSERA_CHECK(lr > 0, "distill: lr must be positive, got {}", lr);
  TESSERA_CHECK(ar_weight >= 0, "distill: AR weight must be >= 0, got {}", ar_weight);
}

nlohmann::json DistillOptions::to_json() const {
  return {{"steps", steps},
          {"batch_size", batch_size},
          {"lr", lr},
          {"warmup_steps", warmup_steps},
          {"ar_weight", ar_weight},
          {"label_smoothing", label_smoothing},
          {"ar_labels", ar_labels_name(ar_labels)},
          {"loss", consistency_loss_name(loss)},
          {"max_seconds", max_seconds},
          {"seed", seed}};
}

Table DistillResult::table() const {
  Table t({"steps", "consistency first", "consistency final", "AR first", "AR final", "seconds"});
  t.add_row({std::to_string(steps), fmt::format("{:.4f}", first_consistency),
             fmt::format("{:.4f}", final_consistency), fmt::format("{:.4f}", first_ar),
             fmt::format("{:.4f}", final_ar), fmt::format("{:.1f}", seconds)});
  return t;
}

nlohmann::json DistillResult::to_json() const {
  return {{"steps", steps},
          {"first_consistency", first_consistency},
          {"final_consistency", final_consistency},
          {"first_ar", first_ar},
          {"final_ar", final_ar},
          {"seconds", seconds}};
}

namespace {

// Right-padded batch of sequences: input = seq[:-1], target = seq[1:], mask = 1 on real targets.
struct Batch {
  torch::Tensor input, target, mask;
};

Batch make_batch(const std::vector<std::vector<int64_t>>& seqs) {
  int64_t T = 0;
  for (const auto& s : seqs) T = std::max<int64_t>(T, static_cast<int64_t>(s.size()));
  const int64_t B = static_cast<int64_t>(seqs.size());
  auto tokens = torch::zeros({B, T}, torch::kInt64);
  auto mask = torch::zeros({B, T - 1});
  for (int64_t b = 0; b < B; ++b) {
    const auto& s = seqs[b];
    auto* p = tokens.data_ptr<int64_t>() + b * T;
    std::copy(s.begin(), s.end(), p);
    auto* m = mask.data_ptr<float>() + b * (T - 1);
    for (size_t i = 0; i + 1 < s.size(); ++i) m[i] = 1.0f;
  }
  return {tokens.narrow(1, 0, T - 1), tokens.narrow(1, 1, T - 1), mask};
}

// Mean over masked positions of label-smoothed cross-entropy. logits [B, T, V].
torch::Tensor masked_ce(const torch::Tensor& logits, const torch::Tensor& target,
                        const torch::Tensor& mask, double smoothing) {
  auto logp = torch::log_softmax(logits, -1);
  auto nll = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1);
  auto loss = nll;
  if (smoothing > 0) loss = (1.0 - smoothing) * nll - smoothing * logp.mean(-1);
  return (loss * mask).sum() / mask.sum().clamp_min(1.0);
}

// Mean of [b, e) (0 for an empty range): the first / last 20 losses of a run.
double mean(std::vector<double>::const_iterator b, std::vector<double>::const_iterator e) {
  return std::accumulate(b, e, 0.0) / static_cast<double>(std::max<ptrdiff_t>(1, e - b));
}

// The optimizer side of both trainings: AdamW (betas 0.9, 0.95), linear warm-up, cosine decay to
// lr * min_lr_ratio, gradient norm clipped to 1, an optional wall-time budget.
train::TrainOptions adamw_steps(int64_t steps, double lr, int64_t warmup_steps, double min_lr_ratio,
                                double weight_decay, double max_seconds, const std::string& label) {
  train::TrainOptions o;
  o.optimizer = "adamw";
  o.beta2 = 0.95;
  o.steps = steps;
  o.lr = lr;
  o.schedule = "cosine";
  o.warmup_steps = warmup_steps;
  o.min_lr_ratio = min_lr_ratio;
  o.weight_decay = weight_decay;
  o.clip_grad_norm = 1.0;
  o.max_seconds = max_seconds;
  o.progress_label = label;
  return o;
}

}  // namespace

LmTrainResult train_lm(llm::Llama& model, const std::vector<TokenizedExample>& data,
                       const LmTrainOptions& options) {
  options.validate();
  TESSERA_CHECK(!data.empty(), "train: no training examples");
  std::mt19937_64 rng(options.seed);
  const train::StepRunResult run = train::run_steps(
      *model,
      adamw_steps(options.steps, options.lr, options.warmup_steps, options.min_lr_ratio,
                  options.weight_decay, options.max_seconds, options.progress_label),
      [&](int64_t) {
        std::vector<std::vector<int64_t>> seqs;
        for (int64_t b = 0; b < options.batch_size; ++b) {
          const auto& e = random::pick(data, rng);
          std::vector<int64_t> s = e.prompt;
          s.insert(s.end(), e.target.begin(), e.target.end());
          seqs.push_back(std::move(s));
        }
        auto batch = make_batch(seqs);
        return masked_ce(model->forward(batch.input), batch.target, batch.mask,
                         options.label_smoothing);
      });
  LmTrainResult result;
  result.steps = run.steps;
  const std::vector<double>& losses = run.losses;
  const size_t k = std::min<size_t>(20, losses.size());
  result.first_loss = mean(losses.begin(), losses.begin() + k);
  result.final_loss = mean(losses.end() - k, losses.end());
  result.seconds = run.seconds;
  return result;
}

double target_perplexity(llm::Llama& model, const std::vector<TokenizedExample>& data) {
  TESSERA_CHECK(!data.empty(), "perplexity: no examples");
  torch::NoGradGuard no_grad;
  double nll = 0.0;
  int64_t count = 0;
  for (const auto& e : data) {
    std::vector<int64_t> s = e.prompt;
    s.insert(s.end(), e.target.begin(), e.target.end());
    auto batch = make_batch({s});
    auto mask = batch.mask.clone();
    mask.narrow(1, 0, static_cast<int64_t>(e.prompt.size()) - 1).zero_();  // target tokens only
    auto logp = torch::log_softmax(model->forward(batch.input), -1);
    auto tok_nll = -logp.gather(-1, batch.target.unsqueeze(-1)).squeeze(-1);
    nll += (tok_nll * mask).sum().item<double>();
    count += static_cast<int64_t>(e.target.size());
  }
  return std::exp(nll / static_cast<double>(count));
}

// ---- trajectories -----------------------------------------------------------------------------

std::vector<JacobiTrajectory> collect_trajectory_dataset(
    llm::Llama& model, const std::vector<std::vector<int64_t>>& prompts,
    const TrajectoryOptions& options, int64_t* n_dropped,
    const std::vector<std::vector<int64_t>>& labels) {
  options.decode.validate();
  TESSERA_CHECK(labels.empty() || labels.size() == prompts.size(),
                "trajectories: {} labels for {} prompts", labels.size(), prompts.size());
  llm::LlamaEngine engine(model);
  std::mt19937_64 rng(options.decode.seed ^ 0xa06u);
  std::vector<JacobiTrajectory> out;
  int64_t dropped = 0;
  ProgressBar bar("trajectories", static_cast<int64_t>(prompts.size()));
  for (size_t p = 0; p < prompts.size(); ++p) {
    DecodeOptions d = options.decode;
    d.seed = options.decode.seed + p;
    auto trajs = collect_trajectories(engine, prompts[p], d);
    bar.update();
    // Cleaning (section 2.1): drop the prompt's entries if the teacher output repeats a token
    // repeat_run times in a row.
    std::vector<int64_t> output;
    for (const auto& t : trajs) {
      output.insert(output.end(), t.states.back().begin(), t.states.back().end());
    }
    // Only the response counts: the last block runs on past EOS.
    const auto eos = std::find(output.begin(), output.end(), options.decode.eos_id);
    if (eos != output.end()) output.erase(eos, output.end());
    int64_t run = 1;
    bool repetitive = false;
    for (size_t i = 1; i < output.size() && !repetitive; ++i) {
      run = output[i] == output[i - 1] ? run + 1 : 1;
      repetitive = run >= options.repeat_run;
    }
    if (repetitive) {
      dropped += static_cast<int64_t>(trajs.size());
      continue;
    }
    for (auto& t : trajs) {
      if (options.augment && t.states.size() >= 3) {
        // Augmentation: from state len-3 down to 0, correct a random half (with replacement) of
        // the wrong positions other than the first wrong one.
        const auto& fixed = t.states.back();
        std::vector<std::vector<int64_t>> extra;
        for (int64_t j = static_cast<int64_t>(t.states.size()) - 3; j >= 0; --j) {
          std::vector<int64_t> wrong;
          for (size_t i = 0; i < fixed.size(); ++i) {
            if (t.states[j][i] != fixed[i]) wrong.push_back(static_cast<int64_t>(i));
          }
          if (wrong.size() < 3) continue;
          auto state = t.states[j];
          for (size_t k = 0; k < wrong.size() / 2; ++k) {
            const int64_t i = wrong[1 + random::uniform_below(rng, wrong.size() - 1)];
            state[i] = fixed[i];
          }
          extra.push_back(std::move(state));
        }
        t.states.insert(t.states.end() - 1, extra.begin(), extra.end());
      }
      if (!labels.empty()) t.label = labels[p];
      out.push_back(std::move(t));
    }
  }
  bar.finish();
  if (n_dropped != nullptr) *n_dropped = dropped;
  return out;
}

nlohmann::json trajectories_to_json(const std::vector<JacobiTrajectory>& data) {
  nlohmann::json out = nlohmann::json::array();
  for (const auto& t : data) {
    nlohmann::json e = {{"prompt", t.prompt}, {"states", t.states}};
    if (!t.label.empty()) e["label"] = t.label;
    out.push_back(std::move(e));
  }
  return out;
}

// Larger than any vocabulary: the model's own range check names a bad id later.
constexpr int64_t kMaxTokenId = int64_t{1} << 40;

std::vector<JacobiTrajectory> trajectories_from_json(const nlohmann::json& json) {
  TESSERA_CHECK(json.is_array(), "trajectories: expected a JSON array");
  std::vector<JacobiTrajectory> out;
  try {
    for (const auto& e : json) {
      JacobiTrajectory t;
      const std::string what = fmt::format("trajectories: entry {}", out.size());
      t.prompt = json_integer_array(e.at("prompt"), what + " prompt", 0, kMaxTokenId);
      TESSERA_CHECK(e.at("states").is_array(), "{}: states must be an array", what);
      for (const auto& state : e.at("states")) {
        t.states.push_back(json_integer_array(state, what + " state", 0, kMaxTokenId));
      }
      if (e.contains("label"))
        t.label = json_integer_array(e["label"], what + " label", 0, kMaxTokenId);
      TESSERA_CHECK(!t.prompt.empty() && !t.states.empty(),
                    "trajectories: entry {} has an empty prompt or no states", out.size());
      for (const auto& s : t.states) {
        TESSERA_CHECK(!s.empty() && s.size() == t.states[0].size(),
                      "trajectories: entry {} has states of unequal length", out.size());
        for (int64_t id : s) TESSERA_CHECK(id >= 0, "trajectories: negative token id {}", id);
      }
      for (int64_t id : t.prompt) TESSERA_CHECK(id >= 0, "trajectories: negative token id {}", id);
      out.push_back(std::move(t));
    }
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "trajectories: malformed entry {}: {}", out.size(), e.what());
  }
  return out;
}

// ---- distillation -----------------------------------------------------------------------------

DistillResult distill(llm::Llama& model, const std::vector<JacobiTrajectory>& data,
                      const DistillOptions& options) {
  options.validate();
  const int64_t max_len = model->config().max_seq_len;
  const int64_t V = model->config().vocab_size;
  TESSERA_CHECK(!data.empty(),
                "distill: no trajectories (none collected, or all dropped by cleaning)");
  std::vector<const JacobiTrajectory*> usable;
  const bool ground_truth = options.ar_labels == ArLabels::kGroundTruth;
  for (const auto& t : data) {
    for (const auto& s : t.states) {
      for (int64_t id : s) TESSERA_CHECK(id < V, "distill: token id {} >= vocab size {}", id, V);
    }
    for (int64_t id : t.label)
      TESSERA_CHECK(id < V, "distill: label id {} >= vocab size {}", id, V);
    TESSERA_CHECK(!ground_truth || t.label.size() >= 2,
                  "distill: --ar-labels ground-truth needs trajectories with labels; entry {} has "
                  "none (collect them again with `tessera llm trajectories`)",
                  &t - data.data());
    const bool fits = static_cast<int64_t>(t.prompt.size() + t.states[0].size()) <= max_len &&
                      (!ground_truth || static_cast<int64_t>(t.label.size()) <= max_len);
    if (fits) usable.push_back(&t);
  }
  TESSERA_CHECK(!usable.empty(), "distill: no trajectory fits the context length {}", max_len);
  std::mt19937_64 rng(options.seed);
  std::vector<double> cons, ars;
  const train::StepRunResult run = train::run_steps(
      *model,
      adamw_steps(options.steps, options.lr, options.warmup_steps, /*min_lr_ratio=*/0.1,
                  /*weight_decay=*/0.0, options.max_seconds, "distill"),
      [&](int64_t) {
        std::vector<std::vector<int64_t>> student, teacher, ar;
        std::vector<std::pair<int64_t, int64_t>> spans;  // per row: [first, end) of loss positions
        for (int64_t b = 0; b < options.batch_size; ++b) {
          const auto& t = *random::pick(usable, rng);
          const auto& fixed = t.states.back();
          const int64_t P = static_cast<int64_t>(t.prompt.size());
          const int64_t n = static_cast<int64_t>(fixed.size());
          if (ground_truth) {
            ar.push_back(t.label);
          } else {
            std::vector<int64_t> a = t.prompt;
            a.insert(a.end(), fixed.begin(), fixed.end());
            ar.push_back(std::move(a));
          }
          if (t.states.size() < 2) continue;
          const size_t j = random::uniform_below(rng, t.states.size() - 1);
          const auto& y = t.states[j];
          const auto& target = options.loss == ConsistencyLoss::kGlobal ? fixed : t.states[j + 1];
          int64_t d = 0;
          while (d < n && y[d] == target[d]) ++d;
          if (d >= n - 1) continue;  // identical contexts everywhere: nothing to learn
          std::vector<int64_t> s = t.prompt, u = t.prompt;
          s.insert(s.end(), y.begin(), y.end());
          u.insert(u.end(), target.begin(), target.end());
          student.push_back(std::move(s));
          teacher.push_back(std::move(u));
          // The logit at sequence position P-1+i predicts state token i from state tokens < i;
          // positions i > d see different contexts (section 2.2's mask).
          spans.emplace_back(P - 1 + d + 1, P - 1 + n);
        }
        auto ar_batch = make_batch(ar);
        auto ar_loss = masked_ce(model->forward(ar_batch.input), ar_batch.target, ar_batch.mask,
                                 options.label_smoothing);
        torch::Tensor cons_loss = torch::zeros({});
        if (!student.empty()) {
          auto sb = make_batch(student);
          auto tb = make_batch(teacher);
          auto mask = torch::zeros_like(sb.mask);
          for (size_t r = 0; r < spans.size(); ++r)
            mask[r].narrow(0, spans[r].first, spans[r].second - spans[r].first).fill_(1.0);
          torch::Tensor t_logp;
          {
            torch::NoGradGuard no_grad;
            t_logp = torch::log_softmax(model->forward(tb.input), -1);
          }
          auto s_logp = torch::log_softmax(model->forward(sb.input), -1);
          // Forward KL(teacher || student); the teacher is detached (theta^-).
          auto kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1);
          cons_loss = (kl * mask).sum() / mask.sum().clamp_min(1.0);
        }
        cons.push_back(cons_loss.item<double>());
        ars.push_back(ar_loss.item<double>());
        return cons_loss + options.ar_weight * ar_loss;
      });
  DistillResult result;
  result.steps = run.steps;
  const size_t k = std::min<size_t>(20, cons.size());
  result.first_consistency = mean(cons.begin(), cons.begin() + k);
  result.final_consistency = mean(cons.end() - k, cons.end());
  result.first_ar = mean(ars.begin(), ars.begin() + k);
  result.final_ar = mean(ars.end() - k, ars.end());
  result.seconds = run.seconds;
  return result;
}

// ---- quality ------------------------------------------------------------------------------

double greedy_quality(llm::Llama& model, const llm::ModelTokenizer& tokenizer,
                      const std::vector<Example>& test, Domain domain, int64_t max_new_tokens) {
  TESSERA_CHECK(domain == Domain::kMath || domain == Domain::kSql,
                "greedy quality is defined for math and sql, not '{}'", domain_name(domain));
  TESSERA_CHECK(!test.empty(), "quality: no test examples");
  llm::LlamaEngine engine(model);
  DecodeOptions o;
  o.max_new_tokens = max_new_tokens;
  o.eos_id = tokenizer.eos_id();
  int64_t correct = 0;
  ProgressBar bar("quality", static_cast<int64_t>(test.size()));
  for (const auto& e : test) {
    auto out = decode_greedy(engine, tokenizer.encode_prompt(e.prompt), o);
    if (!out.tokens.empty() && out.tokens.back() == o.eos_id) out.tokens.pop_back();
    std::string text = tokenizer.decode(out.tokens);
    while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
    const bool ok =
        domain == Domain::kMath ? extract_math_answer(text) == e.answer : text == e.answer;
    correct += ok;
    bar.update();
  }
  bar.finish();
  return static_cast<double>(correct) / static_cast<double>(test.size());
}

}  // namespace tessera::jacobi
