// The tokenizer that came with an LLM, whichever kind: Tessera's trained byte-level BPE
// (llm/tokenizer.h) or a foreign checkpoint's vocabulary tokenizer (llm/loaders.h). Every `llm`
// command decodes through it; its JSON is the Tessera LLM file's "tessera.tokenizer" metadata.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "tessera/llm/loaders.h"
#include "tessera/llm/tokenizer.h"

namespace tessera::llm {

class ModelTokenizer {
 public:
  ModelTokenizer() = default;  ///< Tessera's bytes-only tokenizer
  /// Implicit: the models Tessera trains keep handing their Tokenizer around.
  ModelTokenizer(Tokenizer tokenizer);       // NOLINT(google-explicit-constructor)
  ModelTokenizer(VocabTokenizer tokenizer);  // NOLINT(google-explicit-constructor)

  std::vector<int64_t> encode(const std::string& text) const;
  /// encode() with bos_id() in front when the model expects it (add_bos()): what a decoding
  /// command feeds the model.
  std::vector<int64_t> encode_prompt(const std::string& text) const;
  /// Throws on an id outside the vocabulary. Tessera's specials decode to their names.
  std::string decode(const std::vector<int64_t>& ids) const;
  int64_t vocab_size() const;
  int64_t eos_id() const;  ///< -1: none
  int64_t bos_id() const;  ///< -1: none (Tessera's tokenizers have none)
  bool add_bos() const;
  /// "tessera-bpe", "sentencepiece" or "byte-bpe".
  std::string kind_name() const;
  /// The Tessera tokenizer, or nullptr for a foreign one.
  const Tokenizer* tessera() const { return std::get_if<Tokenizer>(&impl_); }

  /// {"type": kind_name(), ...}; Tessera's form is unchanged, so older files still load.
  nlohmann::json to_json() const;
  /// A JSON without "type" is refused; throws tessera::Error on malformed input.
  static ModelTokenizer from_json(const nlohmann::json& json);

 private:
  std::variant<Tokenizer, VocabTokenizer> impl_;
};

/// The text of generated ids as it grows, cut at complete UTF-8 characters so that streaming it
/// never prints half a character. The continuation is decode(prompt + generated) past
/// decode(prompt), so a SentencePiece word keeps its leading space.
class TextStream {
 public:
  /// `prompt` as fed to the model (a leading BOS is dropped before decoding).
  TextStream(const ModelTokenizer& tokenizer, std::vector<int64_t> prompt);
  /// Adds generated ids and returns the text that became complete. EOS is not decoded, nor are
  /// ids past the tokenizer's vocabulary (a model's padded embedding rows; Hugging Face's decoder
  /// skips them too).
  std::string push(const std::vector<int64_t>& ids);
  /// The rest (an incomplete character at the very end), once generation is over.
  std::string finish();
  /// The whole continuation so far, complete or not.
  const std::string& text() const { return text_; }

 private:
  const ModelTokenizer& tokenizer_;
  std::vector<int64_t> ids_;  ///< prompt (without BOS) + generated (without EOS)
  std::string prompt_text_, text_;
  size_t emitted_ = 0;  ///< bytes of text_ returned so far
};

}  // namespace tessera::llm
