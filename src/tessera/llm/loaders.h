// Loaders for published Llama-family checkpoints and their tokenizers: a Hugging Face directory
// (config.json + model.safetensors or a sharded index; F32/F16/BF16), llama2.c checkpoints
// (legacy and v1 headers) with tokenizer.bin, and GGUF (F32/F16/BF16/Q8_0) with its tokenizer
// metadata. The RoPE pairing follows the source: NeoX for HF and GGUF qwen2/qwen3, GPT-J for
// llama2.c and GGUF arch llama (whose converter permuted Q and K; research/cllm.md section 4.3).
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "tessera/llm/llama.h"

namespace tessera::llm {

/// A vocabulary tokenizer of a foreign checkpoint.
/// kSentencePiece: llama2.c tokenizer.bin / GGUF "llama": greedy best-score merges, a dummy
/// space prefix, "\xe2\x96\x81" for spaces in GGUF vocabularies, <0xXX> byte fallback.
/// kByteBpe: tokenizer.json / GGUF "gpt2": GPT-2 byte-to-unicode alphabet and ranked merges.
class VocabTokenizer {
 public:
  enum class Kind { kSentencePiece, kByteBpe };

  static VocabTokenizer sentencepiece(std::vector<std::string> pieces, std::vector<float> scores,
                                      bool spaces_as_meta, int64_t bos_id, int64_t eos_id);
  /// `pieces` in the GPT-2 unicode alphabet; merges as "left right".
  static VocabTokenizer byte_bpe(std::vector<std::string> pieces,
                                 const std::vector<std::string>& merges, int64_t bos_id,
                                 int64_t eos_id);

  /// No BOS is added; callers prepend bos_id() when the model expects it.
  std::vector<int64_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t vocab_size() const { return static_cast<int64_t>(pieces_.size()); }
  int64_t bos_id() const { return bos_id_; }
  int64_t eos_id() const { return eos_id_; }
  Kind kind() const { return kind_; }

 private:
  std::vector<int64_t> encode_sentencepiece(const std::string& text) const;
  std::vector<int64_t> encode_byte_bpe(const std::string& text) const;

  Kind kind_ = Kind::kSentencePiece;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::map<std::string, int64_t> index_;
  std::map<std::pair<std::string, std::string>, int64_t> merge_rank_;
  bool spaces_as_meta_ = false;
  int64_t bos_id_ = -1, eos_id_ = -1;
};

/// Largest context a loader allocates a KV cache for (configs may say 128k).
constexpr int64_t kDefaultMaxContext = 2048;

/// Hugging Face directory. config.json keys: hidden_size, intermediate_size, num_hidden_layers,
/// num_attention_heads, num_key_value_heads, head_dim, rms_norm_eps, rope_theta, vocab_size,
/// tie_word_embeddings, max_position_embeddings, attention_bias, model_type (qwen2 implies q/k/v
/// bias, qwen3 q/k norm). rope_scaling other than null is refused.
Llama load_hf_dir(const std::string& dir, int64_t max_context = kDefaultMaxContext);
/// tokenizer.json of type BPE with a ByteLevel pre-tokenizer.
VocabTokenizer load_tokenizer_json(const std::string& path);

/// llama2.c checkpoint: legacy (7 int32 header, negative vocab = untied) or v1 ("ak42" magic).
Llama load_llama2c(const std::string& path, int64_t max_context = kDefaultMaxContext);
/// llama2.c tokenizer.bin (max_token_length, then score/len/bytes per token); BOS 1, EOS 2.
VocabTokenizer load_llama2c_tokenizer(const std::string& path);

/// GGUF v2/v3 with arch llama, qwen2 or qwen3 and tensors in F32, F16, BF16 or Q8_0.
Llama load_gguf(const std::string& path, int64_t max_context = kDefaultMaxContext);
/// The tokenizer in a GGUF's metadata (tokenizer.ggml.model "llama" or "gpt2").
VocabTokenizer load_gguf_tokenizer(const std::string& path);

/// Writes a GGUF v3 file's bytes (used by the tests and for export): string, u32 and f32
/// metadata, string arrays, and tensors stored as F32, or as Q8_0 when `q8` and the tensor is
/// 2-D with rows a multiple of 32. Tensor shapes are given PyTorch-style and written reversed.
std::string write_gguf(
    const std::vector<std::pair<std::string, std::string>>& string_kv,
    const std::vector<std::pair<std::string, uint32_t>>& u32_kv,
    const std::vector<std::pair<std::string, float>>& f32_kv,
    const std::vector<std::pair<std::string, std::vector<std::string>>>& string_arrays,
    const std::vector<std::pair<std::string, torch::Tensor>>& tensors, bool q8);

}  // namespace tessera::llm
