// Loaders for published Llama-family checkpoints and their tokenizers: a Hugging Face directory
// (config.json + model.safetensors or a sharded index; F32/F16/BF16), llama2.c checkpoints
// (legacy and v1 headers) with tokenizer.bin, and GGUF (F32/F16/BF16/Q8_0) with its tokenizer
// metadata. The RoPE pairing follows the source: NeoX for HF and GGUF qwen2/qwen3, GPT-J for
// llama2.c and GGUF arch llama (whose converter permuted Q and K; research/cllm.md section 4.3).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tessera/llm/llama.h"

namespace tessera::llm {

/// The pre-tokenizer regexes of Hugging Face's tokenizers (tokenizer.json "Split" patterns):
/// GPT-2's (also ByteLevel's with use_regex), Llama 3's and Qwen2's.
extern const char* const kGpt2Pattern;
extern const char* const kLlama3Pattern;
extern const char* const kQwen2Pattern;

/// A regex pre-tokenizer run with PCRE2 (UTF, Unicode properties): the text is cut into the
/// pattern's matches and the gaps between them (tokenizers' Split with behavior "Isolated");
/// each pattern in turn splits every piece of the previous one. No patterns: one piece.
class PreTokenizer {
 public:
  PreTokenizer() = default;
  /// Throws tessera::Error naming `what` and the offset when a pattern does not compile.
  PreTokenizer(std::vector<std::string> patterns, const std::string& what);
  /// Byte ranges [begin, end) of the pieces of `text` (invalid UTF-8 is matched as bytes).
  std::vector<std::pair<size_t, size_t>> split(const std::string& text) const;
  const std::vector<std::string>& patterns() const { return patterns_; }

 private:
  struct Compiled;
  std::vector<std::string> patterns_;
  std::vector<std::shared_ptr<const Compiled>> compiled_;
};

/// A vocabulary tokenizer of a foreign checkpoint.
/// kSentencePiece: llama2.c tokenizer.bin / GGUF "llama": greedy best-score merges, a dummy
/// space prefix, "\xe2\x96\x81" for spaces in GGUF vocabularies, <0xXX> byte fallback.
/// kByteBpe: tokenizer.json / GGUF "gpt2": the pre-tokenizer's pieces, each mapped to GPT-2's
/// byte-to-unicode alphabet and merged by rank.
class VocabTokenizer {
 public:
  enum class Kind { kSentencePiece, kByteBpe };

  static VocabTokenizer sentencepiece(std::vector<std::string> pieces, std::vector<float> scores,
                                      bool spaces_as_meta, int64_t bos_id, int64_t eos_id);
  /// `pieces` in the GPT-2 unicode alphabet; merges as "left right".
  static VocabTokenizer byte_bpe(std::vector<std::string> pieces,
                                 const std::vector<std::string>& merges, int64_t bos_id,
                                 int64_t eos_id, PreTokenizer pre_tokenizer = {});

  /// No BOS is added; callers prepend bos_id() when the model expects it.
  std::vector<int64_t> encode(const std::string& text) const;
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t vocab_size() const { return static_cast<int64_t>(pieces_.size()); }
  int64_t bos_id() const { return bos_id_; }
  int64_t eos_id() const { return eos_id_; }
  /// Whether the model expects bos_id() before a prompt (llama2.c, GGUF add_bos_token,
  /// tokenizer.json's post-processor template).
  bool add_bos() const { return add_bos_; }
  void set_add_bos(bool add) { add_bos_ = add; }
  Kind kind() const { return kind_; }
  const PreTokenizer& pre_tokenizer() const { return pre_tokenizer_; }

  /// {"type": "sentencepiece" | "byte-bpe", "pieces", "scores" | "merges", ...}: what the
  /// Tessera LLM file stores for a foreign tokenizer. Pieces that are not UTF-8 are stored as
  /// {"hex": ...}.
  nlohmann::json to_json() const;
  /// Throws tessera::Error on malformed input (bad ids, lengths, patterns).
  static VocabTokenizer from_json(const nlohmann::json& json);

 private:
  std::vector<int64_t> encode_sentencepiece(const std::string& text) const;
  std::vector<int64_t> encode_byte_bpe(const std::string& text) const;

  Kind kind_ = Kind::kSentencePiece;
  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::map<std::string, int64_t> index_;
  std::map<std::pair<std::string, std::string>, int64_t> merge_rank_;
  PreTokenizer pre_tokenizer_;
  bool spaces_as_meta_ = false;
  bool add_bos_ = false;
  int64_t bos_id_ = -1, eos_id_ = -1;
};

/// Largest context a loader allocates a KV cache for (configs may say 128k).
constexpr int64_t kDefaultMaxContext = 2048;

/// Hugging Face directory. config.json keys: hidden_size, intermediate_size, num_hidden_layers,
/// num_attention_heads, num_key_value_heads, head_dim, rms_norm_eps, rope_theta, vocab_size,
/// tie_word_embeddings, max_position_embeddings, attention_bias, model_type (qwen2 implies q/k/v
/// bias, qwen3 q/k norm). rope_scaling other than null is refused.
/// `dtypes`, when given, counts the stored dtypes of the tensors used ("BF16": 12, ...); so do
/// the other loaders'.
Llama load_hf_dir(const std::string& dir, int64_t max_context = kDefaultMaxContext,
                  std::map<std::string, int64_t>* dtypes = nullptr);
/// tokenizer.json of type BPE with a ByteLevel decoder. Its pre_tokenizer (null, ByteLevel, Split
/// with a Regex or String pattern and behavior Isolated, or a Sequence of these) runs as written;
/// any other pre-tokenizer is refused, so the ids equal the reference tokenizer's.
VocabTokenizer load_tokenizer_json(const std::string& path);

/// llama2.c checkpoint: legacy (7 int32 header, negative vocab = untied) or v1 ("ak42" magic).
Llama load_llama2c(const std::string& path, int64_t max_context = kDefaultMaxContext,
                   std::map<std::string, int64_t>* dtypes = nullptr);
/// llama2.c tokenizer.bin (max_token_length, then score/len/bytes per token); BOS 1, EOS 2.
VocabTokenizer load_llama2c_tokenizer(const std::string& path);

/// GGUF v2/v3 with arch llama, qwen2 or qwen3 and tensors in F32, F16, BF16 or Q8_0.
Llama load_gguf(const std::string& path, int64_t max_context = kDefaultMaxContext,
                std::map<std::string, int64_t>* dtypes = nullptr);
/// The tokenizer in a GGUF's metadata (tokenizer.ggml.model "llama" or "gpt2"; for gpt2,
/// tokenizer.ggml.pre picks the regex: llama-bpe/llama3, qwen2, else GPT-2's).
VocabTokenizer load_gguf_tokenizer(const std::string& path);

/// The name a Tessera Llama weight ("layers.3.wq", "tok_embeddings", ...) has in a Hugging Face
/// checkpoint ("model.layers.3.self_attn.q_proj.weight") and in a GGUF file
/// ("blk.3.attn_q.weight"): the tables the loaders read by, and what an exporter writes. Throws for
/// an unknown weight.
std::string hf_tensor_name(const std::string& tessera_name);
std::string gguf_tensor_name(const std::string& tessera_name);

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
