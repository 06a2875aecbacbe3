// The jacobi system's experiments as library calls: training a small Llama on a domain corpus,
// collecting a corpus's trajectories, generation, the AR-vs-Jacobi benchmark (prompt-by-prompt
// interleaving, TPF, speed, quality), the decode-bandwidth experiment with the n-token forward
// cost, and the tour step. The `tessera llm` commands only bind flags to these options.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "tessera/core/progress.h"
#include "tessera/core/table.h"
#include "tessera/core/tour.h"
#include "tessera/jacobi/corpus.h"
#include "tessera/jacobi/decode.h"
#include "tessera/jacobi/lm.h"
#include "tessera/llm/io.h"
#include "tessera/llm/llama.h"
#include "tessera/train/cache.h"

namespace tessera::jacobi {

// ---- corpora and models ------------------------------------------------------------------------

/// Which corpus and how much of it. Train, trajectories and bench must use the same values (the
/// test split is generated from the seed, so a different seed means different test prompts).
struct CorpusOptions {
  Domain domain = Domain::kMath;
  int64_t n_train = 4000;  ///< training examples generated / read
  int64_t n_test = 100;    ///< test examples
  uint64_t data_seed = 0;  ///< corpus generator seed
  void validate() const;
  nlohmann::json to_json() const;
  Corpus make() const;
};

/// The shape of a Llama trained from scratch; the vocabulary is the trained tokenizer's.
struct LmArchOptions {
  int64_t vocab = 512;  ///< BPE vocabulary to train (256 bytes, merges, EOS)
  int64_t dim = 128;    ///< D
  int64_t layers = 4;   ///< L
  int64_t heads = 4;
  int64_t kv_heads = 2;  ///< GQA
  int64_t hidden = 384;  ///< SwiGLU width
  int64_t seq_len = 256;
  void validate() const;
  llm::LlamaConfig config(int64_t vocab_size) const;
};

struct TrainModelOptions {
  CorpusOptions corpus;
  LmArchOptions arch;
  LmTrainOptions train;
  int64_t tokenizer_texts = 2000;  ///< training examples the BPE merges are learned on
  int64_t quality_max_new = 160;   ///< tokens generated per test prompt when scoring; 0: no score
  void validate() const;
  nlohmann::json to_json() const;
};

struct TrainModelResult {
  llm::LlmBundle bundle;
  Corpus corpus;
  LmTrainResult train;
  bool scored = false;
  double quality = 0.0;  ///< quality(bundle, corpus) when scored
  /// domain, params, steps, loss first, loss final, seconds, quality.
  Table table() const;
  nlohmann::json to_json() const;
};

/// Trains a BPE tokenizer on the corpus, then the model (train_lm), then scores it.
TrainModelResult train_model(const TrainModelOptions& options);

/// math: answer accuracy in percent; sql: exact match in percent; code: test perplexity.
double quality(llm::LlmBundle& bundle, const Corpus& corpus, int64_t max_new_tokens);
/// "accuracy %", "exact match %" or "test ppl".
std::string quality_name(Domain domain);

/// The encoded prompts of the first examples that fit the model's context, at most n of them.
/// `labels` (optional) gets one ground truth per prompt: prompt, target and EOS (empty where
/// that exceeds the context, and no labels when the tokenizer has no EOS).
std::vector<std::vector<int64_t>> encode_prompts(
    const llm::LlmBundle& bundle, const std::vector<Example>& examples, int64_t n,
    std::vector<std::vector<int64_t>>* labels = nullptr);

/// An independent copy of a model (same weights) with the same tokenizer.
llm::LlmBundle copy_bundle(const llm::LlmBundle& bundle);

// ---- trajectories ------------------------------------------------------------------------------

struct CorpusTrajectoryOptions {
  CorpusOptions corpus;
  int64_t n_prompts = 400;       ///< training prompts the teacher decodes
  TrajectoryOptions trajectory;  ///< block size, max_new_tokens (160 here), augmentation, seed
  CorpusTrajectoryOptions();
  void validate() const;
  nlohmann::json to_json() const;
};

struct CorpusTrajectoryResult {
  std::vector<JacobiTrajectory> data;
  int64_t n_prompts = 0;  ///< prompts decoded
  int64_t n_states = 0;   ///< states over all entries
  int64_t n_dropped = 0;  ///< entries dropped as repetitive
  double seconds = 0.0;
  /// "E entries (S states, D dropped as repetitive) in T s"
  std::string summary() const;
  nlohmann::json to_json() const;  ///< the counts (not the trajectories)
};

/// The teacher's trajectories on the corpus's first training prompts (EOS from its tokenizer).
CorpusTrajectoryResult collect_corpus_trajectories(llm::LlmBundle& teacher,
                                                   const CorpusTrajectoryOptions& options);

// ---- generation --------------------------------------------------------------------------------

struct GenerateResult {
  std::string text;             ///< the continuation, without EOS
  std::vector<int64_t> prompt;  ///< the ids fed to the model (BOS first where it expects one)
  std::vector<int64_t> tokens;  ///< the generated ids (EOS included when produced)
  DecodeStats stats;
  /// "decoder D block N: T tokens, F forwards, ... (X tok/s)"
  std::string summary(DecoderKind decoder, const DecodeOptions& options) const;
};

/// With `auto_block` set and no policy: a BlockPolicy over the engine's cost curve, measured once
/// per model shape and machine and cached under the model cache (train::cache_dir()/cost-curves).
DecodeOptions with_block_policy(llm::LlamaEngine& engine, DecodeOptions options);

/// Decodes `prompt` (encode_prompt: BOS first where the model expects it) with `decoder`;
/// options.eos_id is taken from the tokenizer. `on_text`, when set, receives the continuation as
/// the decoder accepts tokens, cut at whole UTF-8 characters (its pieces concatenate to text).
GenerateResult generate(llm::LlmBundle& bundle, const std::string& prompt, DecoderKind decoder,
                        DecodeOptions options,
                        const std::function<void(const std::string&)>& on_text = {});

// ---- AR vs Jacobi ------------------------------------------------------------------------------

/// One decoder's totals over a list of prompts.
struct SpeedRow {
  double seconds = 0.0, tokens_per_second = 0.0, tpf = 0.0;  ///< tpf: tokens per forward
  int64_t n_tokens = 0, n_forwards = 0, n_fast_forwarded = 0, n_stationary = 0;
  bool identical = true;                      ///< Jacobi row: every output equals AR's
  std::vector<std::vector<int64_t>> outputs;  ///< per prompt
  std::vector<DecodeStats> per_prompt;
  nlohmann::json to_json() const;
};

struct SpeedPair {
  SpeedRow ar, jacobi;
  double speedup() const;  ///< Jacobi tokens/s over AR tokens/s (0 when AR measured nothing)
};

/// Greedy AR and Jacobi on every prompt. They alternate prompt by prompt on one engine, so a
/// drift in the machine's speed hits both alike; Jacobi's output is compared token for token.
/// Prompt i is decoded with seed options.seed + i + 1. `progress` gets one update per decode.
SpeedPair measure_speed(llm::Llama& model, const std::vector<std::vector<int64_t>>& prompts,
                        const DecodeOptions& options, ProgressBar* progress = nullptr);

struct JacobiBenchOptions {
  int64_t n_prompts = 20;  ///< test prompts decoded per decoder and model
  DecodeOptions decode;    ///< block size, max_new_tokens (also for the quality), init, seed
  void validate() const;
  nlohmann::json to_json() const;
};

struct JacobiBenchResult {
  Domain domain = Domain::kMath;
  JacobiBenchOptions options;
  SpeedPair base, distilled;
  double quality_base = 0.0, quality_distilled = 0.0;  ///< quality() of each model
  int64_t threads = 0;                                 ///< LibTorch threads of the run
  std::string kernel;                                  ///< llm::matmul_kernel_name()
  /// One row: tokens/s, TPF, speedups, identical to AR, quality of both models.
  Table table() const;
  /// "threads T, kernel K, block N, init I, P prompts, max-new M"
  std::string setup() const;
  nlohmann::json to_json() const;
  /// Jacobi TPF per prompt of both models, beside tokens/s per prompt of all four runs.
  std::string svg() const;
};

/// AR vs Jacobi on the base and the distilled model over the corpus's first test prompts, then
/// the quality of both, with a progress bar over the decodes.
JacobiBenchResult run_bench(llm::LlmBundle& base, llm::LlmBundle& distilled, const Corpus& corpus,
                            const JacobiBenchOptions& options);

/// run_bench at several block sizes on the same prompts (the quality of a model does not depend on
/// the block: it is measured once).
struct BlockSweepResult {
  std::vector<JacobiBenchResult> runs;  ///< one per block size, in the order asked
  /// One row per block: TPF and speedup of both models, identical to AR.
  Table table() const;
  nlohmann::json to_json() const;
  /// TPF and wall-clock speedup over AR against the block size, for both models.
  std::string svg() const;
};

BlockSweepResult run_block_sweep(llm::LlmBundle& base, llm::LlmBundle& distilled,
                                 const Corpus& corpus, const JacobiBenchOptions& options,
                                 const std::vector<int64_t>& block_sizes);

/// Several distilled copies of one base (distilled with other AR weights, labels, steps) on the
/// same prompts at one block size: the trade between TPF and quality.
struct DistilledComparison {
  std::vector<std::string> names;       ///< one per distilled model (e.g. its file)
  std::vector<JacobiBenchResult> runs;  ///< one per distilled model; the base measured once
  /// One row per model (the base first): TPF, speedup, quality and its change from the base.
  Table table() const;
  nlohmann::json to_json() const;
  /// Quality against TPF, one point per model.
  std::string svg() const;
};

DistilledComparison run_comparison(llm::LlmBundle& base, std::vector<llm::LlmBundle>& distilled,
                                   const std::vector<std::string>& names, const Corpus& corpus,
                                   const JacobiBenchOptions& options);

// ---- memory bandwidth and the n-token forward cost ---------------------------------------------

struct BandwidthOptions {
  int64_t dim = 768, layers = 12, hidden = 2048, vocab = 32000;  ///< a model larger than L3
  int64_t tokens = 8;                                            ///< decoded tokens timed per round
  int64_t rounds = 7;      ///< alternating decode and triad rounds (the best of each is kept)
  int64_t triad_mb = 512;  ///< size of each triad array in MB
  std::vector<int64_t> forward_tokens = {1, 2, 4, 8, 16};  ///< n of the forward-cost table
  int64_t forward_repeats = 5;                             ///< forwards per n (the fastest counts)
  uint64_t seed = 0;                                       ///< the random weights
  void validate() const;
  /// 64-wide heads, untied head, room for the decoded tokens and the largest forward.
  llm::LlamaConfig config() const;
  nlohmann::json to_json() const;
};

/// Decode against the triad, measured in alternating rounds.
struct DecodeBandwidth {
  double weight_bytes = 0.0;         ///< bytes streamed per decoded token (every matrix once)
  double best_decode = 0.0;          ///< bytes per second, best round
  double best_triad = 0.0;           ///< bytes per second, best round
  std::vector<double> round_ratios;  ///< decode / triad per round, in round order
  double median_ratio() const;
};

/// The machine's bandwidth drifts (shared hosts), so decode and triad alternate, round by round,
/// and each keeps its best round as STREAM does. Decodes greedily from the engine's cache.
DecodeBandwidth measure_decode_bandwidth(llm::LlamaEngine& engine, const BandwidthOptions& options);

/// What one n-token forward costs.
struct ForwardCost {
  int64_t n_tokens = 0;
  double seconds = 0.0;  ///< fastest of the repeats
  double ratio = 0.0;  ///< over a 1-token forward: the TPF Jacobi with block n needs to break even
};

/// One n-token forward (one Jacobi iteration) against a 1-token one (one AR step), every one
/// from the engine's current cache length, which is restored after each forward; timed in
/// alternating rounds with jacobi::time_forwards.
std::vector<ForwardCost> measure_forward_cost(llm::LlamaEngine& engine,
                                              const std::vector<int64_t>& n_tokens,
                                              int64_t repeats);

struct BandwidthResult {
  llm::LlamaConfig config;
  int64_t threads = 0;
  DecodeBandwidth bandwidth;
  std::vector<ForwardCost> forward_cost;
  /// params, weights MB, threads, decode tok/s, decode GB/s, triad GB/s, ratios.
  Table bandwidth_table() const;
  /// n, ms per forward, cost against 1 token.
  Table forward_cost_table() const;
  nlohmann::json to_json() const;
  /// Forward cost against n, beside the linear cost n (a compute-bound forward).
  std::string svg() const;
};

/// Builds a random model of options.config(), then measures bandwidth and forward cost.
BandwidthResult run_bandwidth(const BandwidthOptions& options);

// ---- reference models --------------------------------------------------------------------------

/// How a reference pair is made: a base model trained on a domain corpus, its Jacobi
/// trajectories, and its consistency-distilled copy (the commands of docs/systems/jacobi.md).
struct ReferencePipeline {
  TrainModelOptions train;
  CorpusTrajectoryOptions trajectories;
  DistillOptions distill;
  ReferencePipeline();  ///< SQL: 1500 training steps, 800 trajectories of 64 tokens, 1500 steps
  nlohmann::json to_json() const;
  std::string base_file() const;       ///< "jacobi-sql-base-<hash of train>.safetensors"
  std::string distilled_file() const;  ///< "jacobi-sql-cllm-<hash of all>.safetensors"
};

/// The base and distilled files of the pipeline, made (trained, collected, distilled) and cached
/// when missing; returns {base path, distilled path}.
std::pair<std::string, std::string> reference_pair(const ReferencePipeline& pipeline);

/// The cached LLM files the tour uses (`tessera models train-reference` builds them).
std::vector<train::ReferenceFile> reference_files();

// ---- tour --------------------------------------------------------------------------------------

/// AR against Jacobi decoding on 10 SQL test prompts with the cached reference pair (trained on
/// first use); prints the bench table.
std::vector<TourRow> tour(const TourContext& context);

}  // namespace tessera::jacobi
