// Byte-level BPE: training by repeated most-frequent-pair merging over chunk counts, and
// encoding by applying the lowest-ranked merge first, as in GPT-2's BPE.
#include "tessera/llm/tokenizer.h"

#include <algorithm>
#include <cctype>

#include "tessera/core/error.h"
#include "tessera/core/json.h"

namespace tessera::llm {

namespace {

// Limits on a tokenizer read from a file (docs/reliability.md): real BPE vocabularies have
// pieces of at most a few hundred bytes and a few hundred thousand merges.
constexpr size_t kMaxMerges = 1'000'000;
constexpr size_t kMaxPieceBytes = 1024;
constexpr size_t kMaxVocabBytes = size_t{64} << 20;

enum class CharClass { kLetter, kDigit, kSpace, kNewline, kOther };

CharClass classify(unsigned char c) {
  if (std::isalpha(c) || c == '_' || c >= 0x80) return CharClass::kLetter;
  if (std::isdigit(c)) return CharClass::kDigit;
  if (c == '\n') return CharClass::kNewline;
  if (c == ' ' || c == '\t' || c == '\r') return CharClass::kSpace;
  return CharClass::kOther;
}

}  // namespace

Tokenizer::Tokenizer() {
  for (int b = 0; b < 256; ++b) pieces_.push_back(std::string(1, static_cast<char>(b)));
}

std::vector<std::pair<size_t, size_t>> Tokenizer::split_chunks(const std::string& text) {
  // Chunks: [one space] + letters | one digit | [one space] + punctuation run | spaces | newlines.
  std::vector<std::pair<size_t, size_t>> out;
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const size_t begin = i;
    CharClass c = classify(static_cast<unsigned char>(text[i]));
    if (c == CharClass::kSpace && text[i] == ' ' && i + 1 < n) {
      const CharClass next = classify(static_cast<unsigned char>(text[i + 1]));
      if (next == CharClass::kLetter || next == CharClass::kOther) {
        ++i;
        c = next;
      }
    }
    if (c == CharClass::kDigit) {
      ++i;
    } else {
      while (i < n && classify(static_cast<unsigned char>(text[i])) == c) ++i;
    }
    out.emplace_back(begin, i);
  }
  return out;
}

Tokenizer Tokenizer::train(const std::vector<std::string>& texts, int64_t vocab_size,
                           const std::vector<std::string>& specials) {
  const int64_t n_special = static_cast<int64_t>(specials.size());
  TESSERA_CHECK(vocab_size >= 256 + n_special,
                "tokenizer: vocab_size {} must be >= 256 bytes + {} special tokens", vocab_size,
                n_special);
  std::map<std::string, int64_t> chunk_counts;
  for (const auto& text : texts) {
    for (const auto& [b, e] : split_chunks(text)) chunk_counts[text.substr(b, e - b)] += 1;
  }
  std::vector<std::vector<int64_t>> words;
  std::vector<int64_t> counts;
  for (const auto& [chunk, count] : chunk_counts) {
    std::vector<int64_t> ids;
    for (unsigned char c : chunk) ids.push_back(c);
    if (ids.size() >= 2) {
      words.push_back(std::move(ids));
      counts.push_back(count);
    }
  }
  Tokenizer tok;
  const int64_t n_merges = vocab_size - 256 - n_special;
  for (int64_t r = 0; r < n_merges; ++r) {
    std::map<std::pair<int64_t, int64_t>, int64_t> pair_counts;
    for (size_t w = 0; w < words.size(); ++w) {
      for (size_t i = 0; i + 1 < words[w].size(); ++i) {
        pair_counts[{words[w][i], words[w][i + 1]}] += counts[w];
      }
    }
    std::pair<int64_t, int64_t> best{-1, -1};
    int64_t best_count = 1;  // a merge must occur at least twice
    for (const auto& [pair, count] : pair_counts) {
      if (count > best_count) {  // ties: the smallest pair wins (map order), deterministic
        best = pair;
        best_count = count;
      }
    }
    if (best.first < 0) break;
    const int64_t id = 256 + r;
    tok.merges_.push_back(best);
    tok.pieces_.push_back(tok.pieces_[best.first] + tok.pieces_[best.second]);
    for (auto& word : words) {
      std::vector<int64_t> merged;
      for (size_t i = 0; i < word.size(); ++i) {
        if (i + 1 < word.size() && word[i] == best.first && word[i + 1] == best.second) {
          merged.push_back(id);
          ++i;
        } else {
          merged.push_back(word[i]);
        }
      }
      word = std::move(merged);
    }
  }
  for (const auto& s : specials) {
    tok.pieces_.push_back(s);
    tok.specials_.push_back(s);
  }
  tok.rebuild_index();
  return tok;
}

void Tokenizer::rebuild_index() {
  merge_rank_.clear();
  for (size_t r = 0; r < merges_.size(); ++r) merge_rank_[merges_[r]] = static_cast<int64_t>(r);
}

std::vector<int64_t> Tokenizer::encode_chunk(const std::string& chunk) const {
  std::vector<int64_t> ids;
  for (unsigned char c : chunk) ids.push_back(c);
  while (ids.size() >= 2) {
    int64_t best_rank = -1;
    size_t best_i = 0;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      auto it = merge_rank_.find({ids[i], ids[i + 1]});
      if (it != merge_rank_.end() && (best_rank < 0 || it->second < best_rank)) {
        best_rank = it->second;
        best_i = i;
      }
    }
    if (best_rank < 0) break;
    const auto pair = merges_[best_rank];
    std::vector<int64_t> merged;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i >= best_i && i + 1 < ids.size() && ids[i] == pair.first && ids[i + 1] == pair.second) {
        merged.push_back(256 + best_rank);
        ++i;
      } else {
        merged.push_back(ids[i]);
      }
    }
    ids = std::move(merged);
  }
  return ids;
}

std::vector<int64_t> Tokenizer::encode(const std::string& text) const {
  std::vector<int64_t> out;
  for (const auto& [b, e] : split_chunks(text)) {
    auto ids = encode_chunk(text.substr(b, e - b));
    out.insert(out.end(), ids.begin(), ids.end());
  }
  return out;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) out += piece(id);
  return out;
}

const std::string& Tokenizer::piece(int64_t id) const {
  TESSERA_CHECK(id >= 0 && id < vocab_size(), "tokenizer: id {} outside the vocabulary [0, {})", id,
                vocab_size());
  return pieces_[id];
}

int64_t Tokenizer::special_id(const std::string& name) const {
  for (size_t i = 0; i < specials_.size(); ++i) {
    if (specials_[i] == name) {
      return 256 + static_cast<int64_t>(merges_.size()) + static_cast<int64_t>(i);
    }
  }
  TESSERA_CHECK(false, "tokenizer: no special token '{}'", name);
  return -1;
}

nlohmann::json Tokenizer::to_json() const {
  nlohmann::json merges = nlohmann::json::array();
  for (const auto& [a, b] : merges_) merges.push_back({a, b});
  return {{"type", "tessera-bpe"}, {"merges", merges}, {"specials", specials_}};
}

Tokenizer Tokenizer::from_json(const nlohmann::json& json) {
  TESSERA_CHECK(json.is_object() && json.value("type", "") == "tessera-bpe",
                "tokenizer: expected a JSON object with type 'tessera-bpe'");
  Tokenizer tok;
  try {
    const auto& merges = json.at("merges");
    TESSERA_CHECK(merges.is_array() && merges.size() <= kMaxMerges,
                  "tokenizer: 'merges' must be an array of at most {} pairs", kMaxMerges);
    // Each merge concatenates two pieces, so 36 self-doubling merges would ask for 2^36 bytes:
    // piece lengths and their total are bounded as the pieces are built.
    size_t total_bytes = 0;
    for (const auto& m : merges) {
      TESSERA_CHECK(m.is_array() && m.size() == 2, "tokenizer: merge {} is not a pair",
                    json_excerpt(m));
      const int64_t next = static_cast<int64_t>(tok.pieces_.size());
      const int64_t a = json_integer(m[0], "tokenizer: merge id", 0, next - 1);
      const int64_t b = json_integer(m[1], "tokenizer: merge id", 0, next - 1);
      const size_t length = tok.pieces_[a].size() + tok.pieces_[b].size();
      total_bytes += length;
      TESSERA_CHECK(length <= kMaxPieceBytes && total_bytes <= kMaxVocabBytes,
                    "tokenizer: merge {} ({}, {}) makes a piece of {} bytes (at most {}; all "
                    "pieces at most {} bytes)",
                    next, a, b, length, kMaxPieceBytes, kMaxVocabBytes);
      tok.merges_.emplace_back(a, b);
      tok.pieces_.push_back(tok.pieces_[a] + tok.pieces_[b]);
    }
    for (const auto& s : json.at("specials")) {
      TESSERA_CHECK(s.is_string() && s.get_ref<const std::string&>().size() <= kMaxPieceBytes,
                    "tokenizer: special {} must be a string of at most {} bytes", json_excerpt(s),
                    kMaxPieceBytes);
      tok.specials_.push_back(s.get<std::string>());
      tok.pieces_.push_back(tok.specials_.back());
    }
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "tokenizer: malformed JSON: {}", e.what());
  }
  tok.rebuild_index();
  return tok;
}

}  // namespace tessera::llm
