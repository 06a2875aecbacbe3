// ModelTokenizer: one interface over Tessera's and foreign tokenizers; TextStream.
#include "tessera/llm/model_tokenizer.h"

#include "tessera/core/error.h"
#include "tessera/core/json.h"

namespace tessera::llm {

ModelTokenizer::ModelTokenizer(Tokenizer tokenizer) : impl_(std::move(tokenizer)) {}
ModelTokenizer::ModelTokenizer(VocabTokenizer tokenizer) : impl_(std::move(tokenizer)) {}

std::vector<int64_t> ModelTokenizer::encode(const std::string& text) const {
  return std::visit([&](const auto& t) { return t.encode(text); }, impl_);
}

std::vector<int64_t> ModelTokenizer::encode_prompt(const std::string& text) const {
  std::vector<int64_t> ids;
  if (add_bos()) ids.push_back(bos_id());
  const auto body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

std::string ModelTokenizer::decode(const std::vector<int64_t>& ids) const {
  return std::visit([&](const auto& t) { return t.decode(ids); }, impl_);
}

int64_t ModelTokenizer::vocab_size() const {
  return std::visit([](const auto& t) { return t.vocab_size(); }, impl_);
}

int64_t ModelTokenizer::eos_id() const {
  if (const auto* v = std::get_if<VocabTokenizer>(&impl_)) return v->eos_id();
  // Tessera's models end every target with this special (jacobi::kEosToken).
  const auto& t = std::get<Tokenizer>(impl_);
  for (int64_t id = t.vocab_size() - 1; id >= 256; --id) {
    if (t.piece(id) == "<|eos|>") return t.special_id("<|eos|>");
  }
  return -1;
}

int64_t ModelTokenizer::bos_id() const {
  const auto* v = std::get_if<VocabTokenizer>(&impl_);
  return v != nullptr ? v->bos_id() : -1;
}

bool ModelTokenizer::add_bos() const {
  const auto* v = std::get_if<VocabTokenizer>(&impl_);
  return v != nullptr && v->add_bos() && v->bos_id() >= 0;
}

std::string ModelTokenizer::kind_name() const {
  const auto* v = std::get_if<VocabTokenizer>(&impl_);
  if (v == nullptr) return "tessera-bpe";
  return v->kind() == VocabTokenizer::Kind::kSentencePiece ? "sentencepiece" : "byte-bpe";
}

nlohmann::json ModelTokenizer::to_json() const {
  return std::visit([](const auto& t) { return t.to_json(); }, impl_);
}

ModelTokenizer ModelTokenizer::from_json(const nlohmann::json& json) {
  TESSERA_CHECK(json.is_object() && json.contains("type") && json["type"].is_string(),
                "tokenizer: expected a JSON object with a string 'type', got {}",
                json_excerpt(json));
  if (json["type"] == "tessera-bpe") return Tokenizer::from_json(json);
  return VocabTokenizer::from_json(json);
}

// ---- TextStream -----------------------------------------------------------------------------

namespace {

// The length of the longest prefix of `s` that does not end inside a UTF-8 character.
size_t complete_utf8_prefix(const std::string& s) {
  size_t i = s.size(), continuation = 0;
  while (i > 0 && continuation < 4 && (static_cast<unsigned char>(s[i - 1]) & 0xC0) == 0x80) {
    --i;
    ++continuation;
  }
  if (i == 0) return s.size();  // no lead byte: not UTF-8, nothing to wait for
  const unsigned char lead = static_cast<unsigned char>(s[i - 1]);
  const size_t need = lead < 0x80           ? 1
                      : (lead >> 5) == 0x6  ? 2
                      : (lead >> 4) == 0xE  ? 3
                      : (lead >> 3) == 0x1E ? 4
                                            : 1;
  return s.size() - (i - 1) < need ? i - 1 : s.size();
}

}  // namespace

TextStream::TextStream(const ModelTokenizer& tokenizer, std::vector<int64_t> prompt)
    : tokenizer_(tokenizer), ids_(std::move(prompt)) {
  if (!ids_.empty() && tokenizer_.add_bos() && ids_.front() == tokenizer_.bos_id())
    ids_.erase(ids_.begin());
  prompt_text_ = tokenizer_.decode(ids_);
}

std::string TextStream::push(const std::vector<int64_t>& ids) {
  const int64_t eos = tokenizer_.eos_id(), n = tokenizer_.vocab_size();
  for (int64_t id : ids) {
    if (id != eos && id >= 0 && id < n) ids_.push_back(id);
  }
  const std::string all = tokenizer_.decode(ids_);
  // Decoding is a concatenation except for SentencePiece's dropped first space, which belongs to
  // the prompt; the fallback keeps any other tokenizer's text whole.
  text_ = all.compare(0, prompt_text_.size(), prompt_text_) == 0 ? all.substr(prompt_text_.size())
                                                                 : all;
  const size_t end = std::max(emitted_, complete_utf8_prefix(text_));
  std::string out = text_.substr(emitted_, end - emitted_);
  emitted_ = end;
  return out;
}

std::string TextStream::finish() {
  std::string out = emitted_ < text_.size() ? text_.substr(emitted_) : std::string();
  emitted_ = text_.size();
  return out;
}

}  // namespace tessera::llm
