// The regex pre-tokenizer of byte-level BPE vocabularies (llm/loaders.h), run with PCRE2 so that
// tokenizer.json's own pattern, Unicode classes and look-ahead included, splits text as the
// reference tokenizer does.
#include <memory>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tessera/core/error.h"
#include "tessera/llm/loaders.h"

namespace tessera::llm {

// The patterns of Hugging Face tokenizers' ByteLevel pre-tokenizer and of the Llama 3 and Qwen2
// tokenizer.json files (their "Split" step).
const char* const kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
const char* const kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

struct PreTokenizer::Compiled {
  std::unique_ptr<pcre2_code, decltype(&pcre2_code_free)> code{nullptr, &pcre2_code_free};
};

PreTokenizer::PreTokenizer(std::vector<std::string> patterns, const std::string& what)
    : patterns_(std::move(patterns)) {
  for (const auto& p : patterns_) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    // MATCH_INVALID_UTF: arbitrary bytes are tokenized too (invalid sequences never match \p{L}).
    pcre2_code* code =
        pcre2_compile(reinterpret_cast<PCRE2_SPTR>(p.data()), p.size(),
                      PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &error, &offset, nullptr);
    if (code == nullptr) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      TESSERA_CHECK(false, "{}: pre-tokenizer regex '{}' does not compile (at offset {}: {})", what,
                    p.substr(0, 200), offset, reinterpret_cast<const char*>(message));
    }
    auto compiled = std::make_shared<Compiled>();
    compiled->code.reset(code);
    // The JIT is only faster; without it (unsupported CPU) the interpreter gives the same matches.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
    compiled_.push_back(std::move(compiled));
  }
}

std::vector<std::pair<size_t, size_t>> PreTokenizer::split(const std::string& text) const {
  std::vector<std::pair<size_t, size_t>> pieces;
  if (text.empty()) return pieces;
  pieces.emplace_back(0, text.size());
  for (const auto& compiled : compiled_) {
    const pcre2_code* code = compiled->code.get();
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
        pcre2_match_data_create_from_pattern(code, nullptr), &pcre2_match_data_free);
    TESSERA_CHECK(match != nullptr, "pre-tokenizer: out of memory for PCRE2 match data");
    std::vector<std::pair<size_t, size_t>> next;
    for (const auto& [begin, end] : pieces) {
      // Each piece is its own subject, as in tokenizers: look-behind does not see past it.
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data() + begin);
      const size_t length = end - begin;
      size_t start = 0, last = 0;
      while (start <= length) {
        const int rc = pcre2_match(code, subject, length, start, 0, match.get(), nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        TESSERA_CHECK(rc >= 0, "pre-tokenizer: PCRE2 match error {}", rc);
        const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
        const size_t s = ovector[0], e = ovector[1];
        if (e == s) {  // an empty match: retry one character further
          start = s + 1;
          while (start < length && (subject[start] & 0xC0) == 0x80) ++start;
          continue;
        }
        if (s > last) next.emplace_back(begin + last, begin + s);  // the gap is a piece too
        next.emplace_back(begin + s, begin + e);
        last = start = e;
      }
      if (last < length) next.emplace_back(begin + last, end);
    }
    pieces = std::move(next);
  }
  return pieces;
}

}  // namespace tessera::llm
