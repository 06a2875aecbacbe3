// Training a small Llama from scratch on a domain corpus, Jacobi trajectory collection with
// CLLM's augmentation and cleaning (research/cllm.md section 2.1), consistency distillation with
// the global (or local) consistency loss plus the weighted AR loss (section 2.2), and the quality
// metrics of the benchmark (math answer accuracy, SQL exact match, code perplexity).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tessera/core/table.h"
#include "tessera/jacobi/corpus.h"
#include "tessera/jacobi/decode.h"
#include "tessera/llm/llama.h"
#include "tessera/llm/model_tokenizer.h"

namespace tessera::jacobi {

constexpr const char* kEosToken = "<|eos|>";

/// An example as token ids: target ends with EOS.
struct TokenizedExample {
  std::vector<int64_t> prompt, target;
};
/// Prompts as encode_prompt() gives them (BOS first where the model expects it); targets end
/// with the tokenizer's EOS (an error when it has none). Drops examples whose prompt + target
/// exceed max_len tokens.
std::vector<TokenizedExample> tokenize_examples(const std::vector<Example>& examples,
                                                const llm::ModelTokenizer& tokenizer,
                                                int64_t max_len);

struct LmTrainOptions {
  int64_t steps = 600;
  int64_t batch_size = 16;
  double lr = 3e-3;
  double min_lr_ratio = 0.1;  ///< cosine decay to lr * this
  int64_t warmup_steps = 30;
  double weight_decay = 0.0;
  double label_smoothing = 0.0;
  double max_seconds = 0.0;  ///< > 0: stop early after this wall time
  uint64_t seed = 0;
  std::string progress_label = "train";
  void validate() const;
};

struct LmTrainResult {
  int64_t steps = 0;
  double first_loss = 0.0, final_loss = 0.0;  ///< mean over the first / last 20 steps
  double seconds = 0.0;
};

/// Next-token cross-entropy on prompt + target (padding masked), AdamW, warm-up + cosine.
LmTrainResult train_lm(llm::Llama& model, const std::vector<TokenizedExample>& data,
                       const LmTrainOptions& options);

/// exp(mean cross-entropy of the target tokens given prompt and earlier target tokens).
double target_perplexity(llm::Llama& model, const std::vector<TokenizedExample>& data);

// ---- trajectories -----------------------------------------------------------------------------

struct TrajectoryOptions {
  DecodeOptions decode;     ///< block_size (n), max_new_tokens, eos_id, seed
  bool augment = true;      ///< CLLM --use_aug: randomly correct half of the wrong tokens
  int64_t repeat_run = 10;  ///< drop a prompt's entries if its teacher output (up to EOS) has a run
                            ///< of this many equal tokens
};

/// Collects trajectories for every prompt with `model` as teacher, augments and cleans them.
/// `labels` (empty, or one per prompt) become each entry's JacobiTrajectory::label.
std::vector<JacobiTrajectory> collect_trajectory_dataset(
    llm::Llama& model, const std::vector<std::vector<int64_t>>& prompts,
    const TrajectoryOptions& options, int64_t* n_dropped = nullptr,
    const std::vector<std::vector<int64_t>>& labels = {});

nlohmann::json trajectories_to_json(const std::vector<JacobiTrajectory>& data);
/// Validates structure (non-empty states of equal length, ids >= 0); throws tessera::Error.
std::vector<JacobiTrajectory> trajectories_from_json(const nlohmann::json& json);

// ---- consistency distillation -----------------------------------------------------------------

/// What the consistency loss pulls a Jacobi state's logits towards (section 2.2).
enum class ConsistencyLoss {
  kGlobal,  ///< the fixed point y*
  kLocal,   ///< the next state y^(j+1)
};
ConsistencyLoss parse_consistency_loss(const std::string& name);  ///< "global", "local"
std::string consistency_loss_name(ConsistencyLoss loss);

/// What the AR loss of distillation is computed on (research/cllm.md 2.2 step 1).
enum class ArLabels {
  kTeacher,      ///< the entry's prompt and the teacher's fixed point (the reference default)
  kGroundTruth,  ///< the original prompt and the data set's target (`--use_gt_labels`)
};
ArLabels parse_ar_labels(const std::string& name);  ///< "teacher", "ground-truth"
std::string ar_labels_name(ArLabels labels);

struct DistillOptions {
  int64_t steps = 300;
  int64_t batch_size = 16;
  double lr = 1e-3;
  int64_t warmup_steps = 10;
  double ar_weight = 10.0;       ///< w in L = L_consistency + w * L_AR
  double label_smoothing = 0.1;  ///< on the AR loss
  ArLabels ar_labels = ArLabels::kTeacher;
  ConsistencyLoss loss = ConsistencyLoss::kGlobal;
  double max_seconds = 0.0;
  uint64_t seed = 0;
  void validate() const;
  nlohmann::json to_json() const;
};

struct DistillResult {
  int64_t steps = 0;
  double first_consistency = 0.0, final_consistency = 0.0;  ///< mean of the first / last 20 steps
  double first_ar = 0.0, final_ar = 0.0;
  double seconds = 0.0;
  /// steps, consistency first / final, AR first / final, seconds.
  Table table() const;
  nlohmann::json to_json() const;
};

DistillResult distill(llm::Llama& model, const std::vector<JacobiTrajectory>& data,
                      const DistillOptions& options);

// ---- quality ------------------------------------------------------------------------------

/// math: fraction of test prompts whose greedy answer after "####" equals the reference;
/// sql: fraction whose greedy output (up to EOS, trimmed) equals the reference query.
/// Throws for code (scored by target_perplexity).
double greedy_quality(llm::Llama& model, const llm::ModelTokenizer& tokenizer,
                      const std::vector<Example>& test, Domain domain, int64_t max_new_tokens);

}  // namespace tessera::jacobi
