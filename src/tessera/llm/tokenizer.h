// A byte-level BPE tokenizer that Tessera trains on a corpus for its own LLMs: 256 byte tokens,
// learned merges, then special tokens. Text is first split into chunks (a word with its leading
// space, one digit, a punctuation run, a whitespace run) and merges never cross chunks, so
// decode(encode(s)) == s for every byte string.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace tessera::llm {

class Tokenizer {
 public:
  Tokenizer();  ///< bytes only, no merges, no special tokens

  /// Learns merges on `texts` until the vocabulary (bytes + merges + specials) has `vocab_size`
  /// entries or no pair occurs twice. `specials` get the last ids (e.g. "<|eos|>").
  static Tokenizer train(const std::vector<std::string>& texts, int64_t vocab_size,
                         const std::vector<std::string>& specials);

  /// Special tokens are not recognised inside `text` (they are only ever appended by id).
  std::vector<int64_t> encode(const std::string& text) const;
  /// Special tokens decode to their names. Throws on an id outside the vocabulary.
  std::string decode(const std::vector<int64_t>& ids) const;

  int64_t vocab_size() const { return static_cast<int64_t>(pieces_.size()); }
  /// Id of a special token; throws if absent.
  int64_t special_id(const std::string& name) const;
  const std::string& piece(int64_t id) const;

  nlohmann::json to_json() const;
  /// Checks every merge refers to earlier ids; throws tessera::Error on malformed input.
  static Tokenizer from_json(const nlohmann::json& json);

  /// The pre-tokenizer: byte ranges [begin, end) of the chunks of `text`.
  static std::vector<std::pair<size_t, size_t>> split_chunks(const std::string& text);

 private:
  void rebuild_index();
  std::vector<int64_t> encode_chunk(const std::string& chunk) const;

  std::vector<std::string> pieces_;                  ///< id -> bytes (or special name)
  std::vector<std::pair<int64_t, int64_t>> merges_;  ///< merge r creates id 256 + r
  std::vector<std::string> specials_;
  std::map<std::pair<int64_t, int64_t>, int64_t> merge_rank_;
};

}  // namespace tessera::llm
