// Llama-style decoder (RMSNorm, RoPE in both pairings, grouped-query attention, SwiGLU, optional
// q/k/v bias as in Qwen2, optional per-head q/k RMSNorm as in Qwen3, tied or untied head).
// Two paths share the parameters: forward() is LibTorch autograd for training; LlamaEngine is the
// no-grad inference path with a truncatable KV cache and batch-invariant kernels (kernels.h).
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace tessera::llm {

/// Which elements RoPE rotates together. NeoX ("rotate half", Hugging Face layout): i with
/// i + d/2. GPT-J ("adjacent pairs", llama2.c and GGUF arch llama): 2i with 2i + 1.
enum class RopeStyle { kNeox, kGptj };

struct LlamaConfig {
  int64_t vocab_size = 512;
  int64_t dim = 128;     ///< D, the residual width
  int64_t n_layers = 4;  ///< L
  int64_t n_heads = 4;
  int64_t n_kv_heads = 4;     ///< divides n_heads (GQA when smaller)
  int64_t head_dim = 0;       ///< 0: dim / n_heads
  int64_t hidden_dim = 384;   ///< SwiGLU inner width
  int64_t max_seq_len = 512;  ///< RoPE table and KV-cache capacity
  double rms_eps = 1e-5;
  double rope_theta = 10000.0;
  RopeStyle rope_style = RopeStyle::kNeox;
  bool qkv_bias = false;  ///< Qwen2
  bool qk_norm = false;   ///< Qwen3
  bool tie_embeddings = true;

  int64_t resolved_head_dim() const { return head_dim > 0 ? head_dim : dim / n_heads; }
  /// Throws tessera::Error naming the first inconsistent field.
  void validate() const;
  nlohmann::json to_json() const;
  /// Unknown keys and bad values are errors.
  static LlamaConfig from_json(const nlohmann::json& json);
  /// Number of parameters (tied head counted once).
  int64_t n_params() const;
};

std::string rope_style_name(RopeStyle style);
RopeStyle parse_rope_style(const std::string& name);

/// Parameters of one decoder layer. Matrices are [out, in] like torch::nn::Linear.
struct LlamaLayerWeights {
  torch::Tensor attn_norm;             ///< [D]
  torch::Tensor wq, wk, wv, wo;        ///< [H*hd, D], [Hkv*hd, D], [Hkv*hd, D], [D, H*hd]
  torch::Tensor bq, bk, bv;            ///< [H*hd], [Hkv*hd], [Hkv*hd] when qkv_bias
  torch::Tensor q_norm, k_norm;        ///< [hd] when qk_norm
  torch::Tensor ffn_norm;              ///< [D]
  torch::Tensor w_gate, w_up, w_down;  ///< [F, D], [F, D], [D, F]
};

class LlamaImpl : public torch::nn::Module {
 public:
  explicit LlamaImpl(LlamaConfig config);

  /// tokens: [B, T] int64 -> logits [B, T, V] float32 (causal; position p = 0..T-1).
  /// Autograd path for training.
  torch::Tensor forward(const torch::Tensor& tokens);

  const LlamaConfig& config() const { return config_; }
  torch::Tensor& tok_embeddings() { return tok_embeddings_; }
  const torch::Tensor& tok_embeddings() const { return tok_embeddings_; }
  torch::Tensor& final_norm() { return final_norm_; }
  const torch::Tensor& final_norm() const { return final_norm_; }
  /// [V, D]: the embeddings when tied.
  const torch::Tensor& output_weight() const {
    return config_.tie_embeddings ? tok_embeddings_ : output_;
  }
  torch::Tensor& output_weight_mutable() {
    return config_.tie_embeddings ? tok_embeddings_ : output_;
  }
  std::vector<LlamaLayerWeights>& layers() { return layers_; }
  const std::vector<LlamaLayerWeights>& layers() const { return layers_; }
  /// RoPE tables [max_seq_len, hd/2] float32 (not parameters).
  const torch::Tensor& rope_cos() const { return rope_cos_; }
  const torch::Tensor& rope_sin() const { return rope_sin_; }

  /// Parameters by Tessera name ("tok_embeddings", "layers.3.wq", "norm", "output", ...).
  std::vector<std::pair<std::string, torch::Tensor>> named_weights() const;

  /// Moves every parameter (values unchanged) into one arena of 2 MiB-aligned memory marked
  /// MADV_HUGEPAGE, so that decode streams the weights with far fewer TLB misses and page-bounded
  /// prefetch stops (about 6-10% more bandwidth here). Idempotent; a no-op off Linux.
  void move_weights_to_huge_pages();

 private:
  LlamaConfig config_;
  torch::Tensor tok_embeddings_, final_norm_, output_;
  std::vector<LlamaLayerWeights> layers_;
  torch::Tensor rope_cos_, rope_sin_;
  bool in_huge_pages_ = false;
};
TORCH_MODULE(Llama);

/// Statistics of an engine's forwards since construction or reset_stats().
struct EngineStats {
  int64_t n_forwards = 0;  ///< calls to forward()
  int64_t n_tokens = 0;    ///< tokens processed by them
  int64_t t_forward_us = 0;
};

/// No-grad inference over a Llama's parameters (read live, so training updates are seen; the
/// constructor moves them to huge pages, see LlamaImpl::move_weights_to_huge_pages).
/// Holds a KV cache of capacity max_seq_len: forward(tokens) appends positions
/// n_past .. n_past+n-1; truncate(m) drops everything from position m on (Jacobi rollback).
/// Every per-position result is independent of how many tokens one call processes.
class LlamaEngine {
 public:
  explicit LlamaEngine(Llama model);

  /// Runs n tokens; writes logits [n_logits, V] for the last n_logits positions into `logits`
  /// (resized). n_logits = -1 means all n. Throws if the cache would overflow or a token id is
  /// out of range.
  void forward(const int64_t* tokens, int64_t n, std::vector<float>& logits, int64_t n_logits = -1);
  void forward(const std::vector<int64_t>& tokens, std::vector<float>& logits,
               int64_t n_logits = -1) {
    forward(tokens.data(), static_cast<int64_t>(tokens.size()), logits, n_logits);
  }

  int64_t n_past() const { return n_past_; }
  int64_t capacity() const { return capacity_; }
  /// Keeps positions [0, n); n must be <= n_past().
  void truncate(int64_t n);
  void reset() { n_past_ = 0; }
  int64_t vocab_size() const { return config_.vocab_size; }
  const LlamaConfig& config() const { return config_; }
  const EngineStats& stats() const { return stats_; }
  void reset_stats() { stats_ = EngineStats{}; }

 private:
  void ensure_scratch(int64_t n);

  Llama model_;
  LlamaConfig config_;
  int64_t capacity_;
  int64_t n_past_ = 0;
  int64_t kv_width_;
  std::vector<std::vector<float>> k_cache_, v_cache_;  ///< per layer [capacity, Hkv*hd]
  std::vector<float> x_, h_, q_, k_, v_, att_, gate_, up_, scores_;
  EngineStats stats_;
};

/// Index of the largest value in row [V] (first one on ties): greedy token choice.
int64_t argmax_row(const float* row, int64_t n);

}  // namespace tessera::llm
