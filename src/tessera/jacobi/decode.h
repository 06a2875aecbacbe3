// Greedy autoregressive and Jacobi decoding over the batch-invariant Llama engine (CLLM,
// arXiv 2403.00835; research/cllm.md sections 1.2 and 1.3). Every decoder returns exactly the
// greedy AR tokens: Jacobi only changes how many forwards it takes to find them.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tessera/jacobi/auto_block.h"
#include "tessera/llm/llama.h"

namespace tessera::jacobi {

enum class DecoderKind {
  kAr,            ///< one token per forward
  kJacobi,        ///< CLLM's shrinking block with KV rollback (section 1.2)
  kJacobiWindow,  ///< fixed window refilled after every forward (section 1.3)
};
DecoderKind parse_decoder(const std::string& name);  ///< "ar", "jacobi", "jacobi-window"
std::string decoder_name(DecoderKind kind);

/// How the n-1 unknown tokens of a fresh Jacobi block are first guessed.
enum class InitKind {
  kRandomPrompt,  ///< uniform draws, with replacement, from prompt + generated tokens (CLLM)
  kNgramPool,     ///< continuation of the latest earlier match of the current suffix (prompt
                  ///< lookup); positions it cannot fill fall back to random prompt tokens
};
InitKind parse_init(const std::string& name);  ///< "random-prompt", "ngram"
std::string init_name(InitKind kind);

struct DecodeOptions {
  int64_t block_size = 16;       ///< n: Jacobi block / window length (>= 1)
  int64_t max_new_tokens = 128;  ///< stop after this many generated tokens
  int64_t eos_id = -1;           ///< stop after this token (< 0: no EOS)
  InitKind init = InitKind::kRandomPrompt;
  int64_t ngram_max = 3;  ///< longest suffix the n-gram pool matches
  uint64_t seed = 0;      ///< for the random initial guesses
  /// `--block auto`: each fresh block's size is chosen by `block_policy` (over this engine's cost
  /// curve; block_size is then the largest tried, 1 means AR). The policy is shared by every
  /// decode on the engine, so what it learns and its probe interval carry over between prompts.
  bool auto_block = false;
  std::shared_ptr<BlockPolicy> block_policy;
  /// When set, called with the tokens accepted since the last call, before each forward and at
  /// the end (their concatenation is DecodeResult::tokens): how `llm generate` streams text.
  std::function<void(const std::vector<int64_t>& accepted)> on_accept;
  /// Throws tessera::Error naming the bad field (block size 0, negative max_new_tokens...).
  void validate() const;
  nlohmann::json to_json() const;
  /// "16", or "auto (at most 16)".
  std::string block_label() const;
};

/// Per-run statistics (research/cllm.md section 2.5).
struct DecodeStats {
  int64_t n_forwards = 0;        ///< engine forwards, prefill included
  int64_t n_generated = 0;       ///< tokens returned
  int64_t n_forward_tokens = 0;  ///< tokens fed through the engine (prompt included)
  int64_t n_fast_forwarded = 0;  ///< tokens accepted beyond the first in one forward
  int64_t n_stationary = 0;      ///< accepted guesses that already held their value one forward
                                 ///< earlier while an earlier token was still wrong
  double wall_seconds = 0.0;
  double tokens_per_forward() const {
    return n_forwards > 0 ? static_cast<double>(n_generated) / n_forwards : 0.0;
  }
  double tokens_per_second() const {
    return wall_seconds > 0 ? static_cast<double>(n_generated) / wall_seconds : 0.0;
  }
  nlohmann::json to_json() const;
};

struct DecodeResult {
  std::vector<int64_t> tokens;  ///< generated tokens only; ends with EOS if EOS was produced
  DecodeStats stats;
};

/// Decodes from `prompt` (non-empty, shorter than the engine's context). The engine's cache is
/// reset first. At most min(max_new_tokens, context - prompt length) tokens are generated.
DecodeResult decode(llm::LlamaEngine& engine, const std::vector<int64_t>& prompt, DecoderKind kind,
                    const DecodeOptions& options);
DecodeResult decode_greedy(llm::LlamaEngine& engine, const std::vector<int64_t>& prompt,
                           const DecodeOptions& options);
DecodeResult decode_jacobi(llm::LlamaEngine& engine, const std::vector<int64_t>& prompt,
                           const DecodeOptions& options);
DecodeResult decode_jacobi_window(llm::LlamaEngine& engine, const std::vector<int64_t>& prompt,
                                  const DecodeOptions& options);

/// One block's Jacobi trajectory as CLLM's trajectory collection records it (section 2.1):
/// states y^(0) .. y^(k), each of n tokens, y^(0) the initial guess and y^(k) the fixed point.
struct JacobiTrajectory {
  std::vector<int64_t> prompt;               ///< prompt plus all earlier fixed points
  std::vector<std::vector<int64_t>> states;  ///< y^(0) .. y^(k)
  /// The data set's ground truth for the entry's original prompt: that prompt, the reference
  /// target and EOS (research/cllm.md 2.1 `labels_ids`); empty when the collector had none.
  std::vector<int64_t> label;
};

/// Runs fixed-length n-token Jacobi iterations block after block (full recompute of the block
/// each iteration, prompt cached), as the teacher does when collecting trajectories, until EOS,
/// max_new_tokens or the context end. Returns one trajectory per block; the concatenated fixed
/// points equal the greedy output (up to the final block's tail past EOS / max length).
std::vector<JacobiTrajectory> collect_trajectories(llm::LlamaEngine& engine,
                                                   const std::vector<int64_t>& prompt,
                                                   const DecodeOptions& options);

}  // namespace tessera::jacobi
