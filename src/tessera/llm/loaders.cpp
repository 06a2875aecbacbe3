// Hugging Face, llama2.c and GGUF checkpoint loaders and their tokenizers. Every read is bounds
// checked, so truncated or corrupt files fail with a tessera::Error naming the problem.
#include "tessera/llm/loaders.h"

#include <c10/util/Half.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>

#include <nlohmann/json.hpp>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/json.h"
#include "tessera/core/safetensors.h"
#include "tessera/llm/io.h"

namespace tessera::llm {

namespace {

// Copies every Tessera-named weight from `get` (which returns an undefined tensor if absent).
void fill_weights(Llama& model, const std::function<torch::Tensor(const std::string&)>& get,
                  const std::string& what) {
  for (auto& [name, tensor] : model->named_weights()) {
    auto value = get(name);
    TESSERA_CHECK(value.defined(), "{}: missing tensor for {}", what, name);
    assign_weight(tensor, value, what + ": " + name);
  }
}

// Tessera name -> (layer, suffix) helper: "layers.3.wq" -> {3, "wq"}; {-1, name} otherwise.
std::pair<int64_t, std::string> split_name(const std::string& name) {
  if (name.rfind("layers.", 0) != 0) return {-1, name};
  const size_t dot = name.find('.', 7);
  return {std::stoll(name.substr(7, dot - 7)), name.substr(dot + 1)};
}

// Bounds-checked little-endian reader.
class Reader {
 public:
  Reader(const std::string& bytes, std::string what) : bytes_(bytes), what_(std::move(what)) {}
  template <typename T>
  T get() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str(uint64_t n) {
    need(n);
    std::string s = bytes_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  void need(uint64_t n) const {
    TESSERA_CHECK(n <= bytes_.size() - pos_,
                  "{}: truncated (need {} bytes at offset {}, file has {})", what_, n, pos_,
                  bytes_.size());
  }
  size_t pos() const { return pos_; }
  void seek(size_t p) {
    TESSERA_CHECK(p <= bytes_.size(), "{}: offset {} past the end ({} bytes)", what_, p,
                  bytes_.size());
    pos_ = p;
  }
  const char* data() const { return bytes_.data() + pos_; }
  const std::string& what() const { return what_; }

 private:
  const std::string& bytes_;
  std::string what_;
  size_t pos_ = 0;
};

// ---- GPT-2 byte <-> unicode alphabet --------------------------------------------------------

std::string utf8(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    s.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    s.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    s.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    s.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
  return s;
}

const std::vector<std::string>& byte_to_unicode() {
  static const std::vector<std::string> table = [] {
    std::vector<std::string> t(256);
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      t[b] = utf8(printable ? b : next++);
    }
    return t;
  }();
  return table;
}

// Splits UTF-8 into code-point strings (invalid bytes stand alone).
std::vector<std::string> codepoints(const std::string& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    if (i + len > s.size()) len = 1;
    out.push_back(s.substr(i, len));
    i += len;
  }
  return out;
}

// Safetensors' names for the dtypes a checkpoint stores.
std::string safetensors_dtype_name(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32:
      return "F32";
    case torch::kFloat16:
      return "F16";
    case torch::kBFloat16:
      return "BF16";
    case torch::kFloat64:
      return "F64";
    default:
      return std::string(c10::toString(type));
  }
}

const std::string kMetaSpace = "\xe2\x96\x81";  // U+2581, SentencePiece's space

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  for (size_t p = 0; (p = s.find(from, p)) != std::string::npos; p += to.size())
    s.replace(p, from.size(), to);
  return s;
}

}  // namespace

// ---- VocabTokenizer -----------------------------------------------------------------------

VocabTokenizer VocabTokenizer::sentencepiece(std::vector<std::string> pieces,
                                             std::vector<float> scores, bool spaces_as_meta,
                                             int64_t bos_id, int64_t eos_id) {
  TESSERA_CHECK(pieces.size() == scores.size(), "tokenizer: {} pieces but {} scores", pieces.size(),
                scores.size());
  VocabTokenizer t;
  t.kind_ = Kind::kSentencePiece;
  t.pieces_ = std::move(pieces);
  t.scores_ = std::move(scores);
  t.spaces_as_meta_ = spaces_as_meta;
  t.bos_id_ = bos_id;
  t.eos_id_ = eos_id;
  for (size_t i = 0; i < t.pieces_.size(); ++i)
    t.index_.emplace(t.pieces_[i], static_cast<int64_t>(i));
  return t;
}

VocabTokenizer VocabTokenizer::byte_bpe(std::vector<std::string> pieces,
                                        const std::vector<std::string>& merges, int64_t bos_id,
                                        int64_t eos_id, PreTokenizer pre_tokenizer) {
  VocabTokenizer t;
  t.kind_ = Kind::kByteBpe;
  t.pieces_ = std::move(pieces);
  t.pre_tokenizer_ = std::move(pre_tokenizer);
  t.bos_id_ = bos_id;
  t.eos_id_ = eos_id;
  for (size_t i = 0; i < t.pieces_.size(); ++i)
    t.index_.emplace(t.pieces_[i], static_cast<int64_t>(i));
  for (size_t r = 0; r < merges.size(); ++r) {
    const size_t sp = merges[r].find(' ');
    TESSERA_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < merges[r].size(),
                  "tokenizer: merge {} '{}' is not 'left right'", r, merges[r]);
    t.merge_rank_.emplace(std::make_pair(merges[r].substr(0, sp), merges[r].substr(sp + 1)),
                          static_cast<int64_t>(r));
  }
  return t;
}

std::vector<int64_t> VocabTokenizer::encode(const std::string& text) const {
  return kind_ == Kind::kSentencePiece ? encode_sentencepiece(text) : encode_byte_bpe(text);
}

std::vector<int64_t> VocabTokenizer::encode_sentencepiece(const std::string& text) const {
  // llama2.c's encoder: dummy space prefix, code points (or byte fallback), then repeatedly merge
  // the adjacent pair whose concatenation is in the vocabulary with the best score.
  if (text.empty()) return {};
  std::string s = " " + text;
  if (spaces_as_meta_) s = replace_all(s, " ", kMetaSpace);
  std::vector<int64_t> ids;
  for (const auto& cp : codepoints(s)) {
    auto it = index_.find(cp);
    if (it != index_.end()) {
      ids.push_back(it->second);
      continue;
    }
    for (unsigned char b : cp) {
      auto bt = index_.find(fmt::format("<0x{:02X}>", b));
      TESSERA_CHECK(bt != index_.end(),
                    "tokenizer: byte 0x{:02X} has no token and no <0x{:02X}> fallback", b, b);
      ids.push_back(bt->second);
    }
  }
  while (ids.size() >= 2) {
    float best = -1e30f;
    int64_t best_id = -1;
    size_t best_i = 0;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      auto it = index_.find(pieces_[ids[i]] + pieces_[ids[i + 1]]);
      if (it != index_.end() && scores_[it->second] > best) {
        best = scores_[it->second];
        best_id = it->second;
        best_i = i;
      }
    }
    if (best_id < 0) break;
    ids[best_i] = best_id;
    ids.erase(ids.begin() + best_i + 1);
  }
  return ids;
}

std::vector<int64_t> VocabTokenizer::encode_byte_bpe(const std::string& text) const {
  // Merges never cross the pre-tokenizer's pieces.
  const auto& alphabet = byte_to_unicode();
  std::vector<int64_t> ids;
  for (const auto& [b, e] : pre_tokenizer_.split(text)) {
    std::vector<std::string> sym;
    for (size_t i = b; i < e; ++i) sym.push_back(alphabet[static_cast<unsigned char>(text[i])]);
    while (sym.size() >= 2) {
      int64_t best = -1;
      size_t best_i = 0;
      for (size_t i = 0; i + 1 < sym.size(); ++i) {
        auto it = merge_rank_.find({sym[i], sym[i + 1]});
        if (it != merge_rank_.end() && (best < 0 || it->second < best)) {
          best = it->second;
          best_i = i;
        }
      }
      if (best < 0) break;
      sym[best_i] += sym[best_i + 1];
      sym.erase(sym.begin() + best_i + 1);
    }
    for (const auto& s : sym) {
      auto it = index_.find(s);
      TESSERA_CHECK(it != index_.end(), "tokenizer: piece '{}' is not in the vocabulary", s);
      ids.push_back(it->second);
    }
  }
  return ids;
}

std::string VocabTokenizer::decode(const std::vector<int64_t>& ids) const {
  std::string out;
  for (int64_t id : ids) {
    TESSERA_CHECK(id >= 0 && id < vocab_size(), "tokenizer: id {} outside [0, {})", id,
                  vocab_size());
    out += pieces_[id];
  }
  if (kind_ == Kind::kSentencePiece) {
    std::string bytes;
    for (size_t i = 0; i < out.size();) {
      if (out.compare(i, 3, "<0x") == 0 && i + 6 <= out.size() && out[i + 5] == '>') {
        bytes.push_back(static_cast<char>(std::stoi(out.substr(i + 3, 2), nullptr, 16)));
        i += 6;
      } else {
        bytes.push_back(out[i++]);
      }
    }
    if (spaces_as_meta_) bytes = replace_all(bytes, kMetaSpace, " ");
    if (!bytes.empty() && bytes[0] == ' ') bytes.erase(0, 1);  // the dummy prefix
    return bytes;
  }
  std::map<std::string, char> inverse;
  const auto& alphabet = byte_to_unicode();
  for (int b = 0; b < 256; ++b) inverse[alphabet[b]] = static_cast<char>(b);
  std::string bytes;
  for (const auto& cp : codepoints(out)) {
    auto it = inverse.find(cp);
    bytes += it != inverse.end() ? std::string(1, it->second) : cp;
  }
  return bytes;
}

namespace {

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80         ? 1
                       : (c >> 5) == 6  ? 2
                       : (c >> 4) == 14 ? 3
                       : (c >> 3) == 30 ? 4
                                        : 0;
    if (len == 0 || i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    }
    i += len;
  }
  return true;
}

// JSON strings must be UTF-8; a llama2.c piece need not be.
nlohmann::json piece_to_json(const std::string& piece) {
  if (valid_utf8(piece)) return piece;
  std::string hex;
  for (unsigned char b : piece) hex += fmt::format("{:02x}", b);
  return {{"hex", hex}};
}

std::string piece_from_json(const nlohmann::json& j) {
  if (j.is_string()) return j.get<std::string>();
  TESSERA_CHECK(j.is_object() && j.contains("hex") && j["hex"].is_string(),
                "tokenizer: piece {} is neither a string nor {{\"hex\": ...}}", json_excerpt(j));
  const auto& hex = j["hex"].get_ref<const std::string&>();
  TESSERA_CHECK(hex.size() % 2 == 0 && hex.find_first_not_of("0123456789abcdef") == hex.npos,
                "tokenizer: piece hex '{}' is not lower-case hex byte pairs", hex.substr(0, 64));
  std::string out;
  for (size_t i = 0; i < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

}  // namespace

nlohmann::json VocabTokenizer::to_json() const {
  nlohmann::json pieces = nlohmann::json::array();
  for (const auto& p : pieces_) pieces.push_back(piece_to_json(p));
  nlohmann::json j = {{"type", kind_ == Kind::kSentencePiece ? "sentencepiece" : "byte-bpe"},
                      {"pieces", pieces},
                      {"bos_id", bos_id_},
                      {"eos_id", eos_id_},
                      {"add_bos", add_bos_}};
  if (kind_ == Kind::kSentencePiece) {
    j["scores"] = scores_;
    j["spaces_as_meta"] = spaces_as_meta_;
    return j;
  }
  // Merges in rank order (a duplicate merge of the source kept only its first rank).
  std::vector<std::pair<int64_t, std::string>> ranked;
  for (const auto& [pair, rank] : merge_rank_)
    ranked.emplace_back(rank, pair.first + " " + pair.second);
  std::sort(ranked.begin(), ranked.end());
  nlohmann::json merges = nlohmann::json::array();
  for (const auto& [rank, merge] : ranked) merges.push_back(piece_to_json(merge));
  j["merges"] = merges;
  j["pre_tokenizer"] = pre_tokenizer_.patterns();
  return j;
}

VocabTokenizer VocabTokenizer::from_json(const nlohmann::json& j) {
  TESSERA_CHECK(j.is_object(), "tokenizer: not a JSON object: {}", json_excerpt(j));
  try {
    const std::string type = j.at("type").get<std::string>();
    TESSERA_CHECK(type == "sentencepiece" || type == "byte-bpe",
                  "tokenizer: type '{}' is not tessera-bpe, sentencepiece or byte-bpe", type);
    std::vector<std::string> pieces;
    for (const auto& p : j.at("pieces")) pieces.push_back(piece_from_json(p));
    const int64_t n = static_cast<int64_t>(pieces.size());
    TESSERA_CHECK(n > 0, "tokenizer: no pieces");
    const int64_t bos = json_integer(j.at("bos_id"), "tokenizer: bos_id", -1, n - 1);
    const int64_t eos = json_integer(j.at("eos_id"), "tokenizer: eos_id", -1, n - 1);
    VocabTokenizer t;
    if (type == "sentencepiece") {
      t = sentencepiece(std::move(pieces), j.at("scores").get<std::vector<float>>(),
                        j.at("spaces_as_meta").get<bool>(), bos, eos);
    } else {
      std::vector<std::string> merges;
      for (const auto& m : j.at("merges")) merges.push_back(piece_from_json(m));
      PreTokenizer pre(j.at("pre_tokenizer").get<std::vector<std::string>>(), "tokenizer");
      t = byte_bpe(std::move(pieces), merges, bos, eos, std::move(pre));
    }
    t.set_add_bos(j.at("add_bos").get<bool>());
    return t;
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "tokenizer: malformed JSON: {}", e.what());
  }
  return {};
}

// ---- Hugging Face -------------------------------------------------------------------------

std::string hf_tensor_name(const std::string& name) {
  auto [layer, suffix] = split_name(name);
  if (layer < 0) {
    if (name == "tok_embeddings") return std::string("model.embed_tokens.weight");
    if (name == "norm") return std::string("model.norm.weight");
    return std::string("lm_head.weight");
  }
  static const std::map<std::string, std::string> m = {
      {"attn_norm", "input_layernorm.weight"},
      {"wq", "self_attn.q_proj.weight"},
      {"wk", "self_attn.k_proj.weight"},
      {"wv", "self_attn.v_proj.weight"},
      {"wo", "self_attn.o_proj.weight"},
      {"bq", "self_attn.q_proj.bias"},
      {"bk", "self_attn.k_proj.bias"},
      {"bv", "self_attn.v_proj.bias"},
      {"q_norm", "self_attn.q_norm.weight"},
      {"k_norm", "self_attn.k_norm.weight"},
      {"ffn_norm", "post_attention_layernorm.weight"},
      {"w_gate", "mlp.gate_proj.weight"},
      {"w_up", "mlp.up_proj.weight"},
      {"w_down", "mlp.down_proj.weight"}};
  const auto it = m.find(suffix);
  TESSERA_CHECK(it != m.end(), "no Hugging Face name for Llama weight '{}'", name);
  return "model.layers." + std::to_string(layer) + "." + it->second;
}

std::string gguf_tensor_name(const std::string& name) {
  auto [layer, suffix] = split_name(name);
  if (layer < 0) {
    if (name == "tok_embeddings") return std::string("token_embd.weight");
    if (name == "norm") return std::string("output_norm.weight");
    return std::string("output.weight");
  }
  static const std::map<std::string, std::string> m = {{"attn_norm", "attn_norm.weight"},
                                                       {"wq", "attn_q.weight"},
                                                       {"wk", "attn_k.weight"},
                                                       {"wv", "attn_v.weight"},
                                                       {"wo", "attn_output.weight"},
                                                       {"bq", "attn_q.bias"},
                                                       {"bk", "attn_k.bias"},
                                                       {"bv", "attn_v.bias"},
                                                       {"q_norm", "attn_q_norm.weight"},
                                                       {"k_norm", "attn_k_norm.weight"},
                                                       {"ffn_norm", "ffn_norm.weight"},
                                                       {"w_gate", "ffn_gate.weight"},
                                                       {"w_up", "ffn_up.weight"},
                                                       {"w_down", "ffn_down.weight"}};
  const auto it = m.find(suffix);
  TESSERA_CHECK(it != m.end(), "no GGUF name for Llama weight '{}'", name);
  return "blk." + std::to_string(layer) + "." + it->second;
}

Llama load_hf_dir(const std::string& dir, int64_t max_context,
                  std::map<std::string, int64_t>* dtypes) {
  namespace fsys = std::filesystem;
  const std::string config_path = dir + "/config.json";
  nlohmann::json cfg = parse_json(read_file(config_path), config_path);
  TESSERA_CHECK(cfg.is_object(), "{}: not a JSON object", config_path);
  LlamaConfig c;
  try {
    // Sizes must be JSON integers in range: get<int64_t>() of 1e30 is undefined behaviour.
    const auto size = [&](const char* key) {
      return json_integer(cfg.at(key), config_path + " '" + key + "'", 0, int64_t{1} << 40);
    };
    const auto optional_size = [&](const char* key, int64_t fallback) {
      return cfg.contains(key) && !cfg[key].is_null() ? size(key) : fallback;
    };
    c.dim = size("hidden_size");
    c.hidden_dim = size("intermediate_size");
    c.n_layers = size("num_hidden_layers");
    c.n_heads = size("num_attention_heads");
    c.n_kv_heads = optional_size("num_key_value_heads", c.n_heads);
    c.head_dim = optional_size("head_dim", 0);
    c.vocab_size = size("vocab_size");
    c.rms_eps = cfg.value("rms_norm_eps", 1e-6);
    c.rope_theta = cfg.value("rope_theta", 10000.0);
    c.tie_embeddings = cfg.value("tie_word_embeddings", false);
    c.max_seq_len =
        std::min<int64_t>(optional_size("max_position_embeddings", max_context), max_context);
    const std::string type = cfg.value("model_type", "llama");
    c.qkv_bias = cfg.value("attention_bias", type == "qwen2");
    c.qk_norm = type == "qwen3";
    TESSERA_CHECK(!cfg.contains("rope_scaling") || cfg["rope_scaling"].is_null(),
                  "{}: rope_scaling {} is not supported", config_path,
                  json_excerpt(cfg["rope_scaling"]));
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "{}: missing or bad key: {}", config_path, e.what());
  }
  c.rope_style = RopeStyle::kNeox;  // HF layout is "rotate half"
  c.validate();
  // Tensors: one file, or shards listed in the index.
  std::map<std::string, safetensors::File> shards;
  std::map<std::string, std::string> where;
  if (fsys::exists(dir + "/model.safetensors")) {
    shards["model.safetensors"] = safetensors::load(dir + "/model.safetensors");
    for (const auto& [name, t] : shards["model.safetensors"].tensors)
      where[name] = "model.safetensors";
  } else {
    const std::string index_path = dir + "/model.safetensors.index.json";
    auto index = parse_json(read_file(index_path), index_path);
    TESSERA_CHECK(
        index.is_object() && index.contains("weight_map") && index["weight_map"].is_object(),
        "{}: no weight_map", index_path);
    for (const auto& [name, file] : index["weight_map"].items()) {
      TESSERA_CHECK(file.is_string(), "{}: shard of {} is not a string", index_path, name);
      const std::string f = file.get<std::string>();
      TESSERA_CHECK(f.find('/') == std::string::npos, "{}: shard name '{}' has a path", index_path,
                    f);
      where[name] = f;
      if (!shards.count(f)) shards[f] = safetensors::load(dir + "/" + f);
    }
  }
  uint64_t source_bytes = 0;
  for (const auto& [name, shard] : shards) {
    for (const auto& entry : shard.tensors) source_bytes += entry.second.nbytes();
  }
  Llama model = build_llama(c, source_bytes, dir);
  fill_weights(
      model,
      [&](const std::string& name) {
        const std::string h = hf_tensor_name(name);
        auto it = where.find(h);
        if (it == where.end()) return torch::Tensor();
        const auto& shard = shards.at(it->second);
        TESSERA_CHECK(shard.contains(h), "{}: index says {} is in {} but it is not", dir, h,
                      it->second);
        const auto& tensor = shard.at(h);
        if (dtypes != nullptr) (*dtypes)[safetensors_dtype_name(tensor.scalar_type())] += 1;
        return tensor;
      },
      dir);
  return model;
}

namespace {

// A literal for PCRE2: every ASCII character but letters and digits is escaped.
std::string regex_literal(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (static_cast<unsigned char>(c) < 0x80 && !std::isalnum(static_cast<unsigned char>(c)))
      out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

// Appends the regex steps of a tokenizer.json pre_tokenizer; what Tessera cannot run exactly
// is refused rather than approximated.
void add_pre_tokenizer_steps(const nlohmann::json& p, const std::string& path,
                             std::vector<std::string>& patterns, int depth = 0) {
  if (p.is_null()) return;
  TESSERA_CHECK(p.is_object() && depth < 4, "{}: pre_tokenizer {} is not an object", path,
                json_excerpt(p));
  const std::string type = p.value("type", "");
  if (type == "Sequence") {
    for (const auto& step : p.at("pretokenizers"))
      add_pre_tokenizer_steps(step, path, patterns, depth + 1);
  } else if (type == "ByteLevel") {
    TESSERA_CHECK(!p.value("add_prefix_space", false),
                  "{}: ByteLevel pre_tokenizer with add_prefix_space is not supported", path);
    if (p.value("use_regex", true)) patterns.push_back(kGpt2Pattern);
  } else if (type == "Split") {
    const std::string behavior = p.value("behavior", "");
    TESSERA_CHECK(behavior == "Isolated" && !p.value("invert", false),
                  "{}: Split pre_tokenizer with behavior '{}'{} is not supported (Isolated only)",
                  path, behavior, p.value("invert", false) ? ", inverted" : "");
    const auto& pattern = p.at("pattern");
    if (pattern.contains("Regex")) {
      patterns.push_back(pattern["Regex"].get<std::string>());
    } else {
      patterns.push_back(regex_literal(pattern.at("String").get<std::string>()));
    }
  } else if (type == "Digits") {
    patterns.push_back(p.value("individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)");
  } else {
    TESSERA_CHECK(false,
                  "{}: pre_tokenizer type '{}' is not supported (ByteLevel, Split, Digits, "
                  "Sequence)",
                  path, type);
  }
}

// The special token a post_processor template puts before every sequence ("" when none).
std::string template_prefix(const nlohmann::json& post, int depth = 0) {
  if (!post.is_object() || depth > 4) return "";
  const std::string type = post.value("type", "");
  if (type == "Sequence" && post.contains("processors")) {
    for (const auto& p : post["processors"]) {
      const std::string prefix = template_prefix(p, depth + 1);
      if (!prefix.empty()) return prefix;
    }
  }
  if (type != "TemplateProcessing" || !post.contains("single") || !post["single"].is_array() ||
      post["single"].empty())
    return "";
  const auto& first = post["single"][0];
  if (!first.is_object() || !first.contains("SpecialToken")) return "";
  return first["SpecialToken"].value("id", "");
}

}  // namespace

VocabTokenizer load_tokenizer_json(const std::string& path) {
  auto j = parse_json(read_file(path), path);
  TESSERA_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(),
                "{}: not a tokenizer.json (no model object)", path);
  const auto& m = j["model"];
  TESSERA_CHECK(m.value("type", "") == "BPE", "{}: tokenizer type '{}' is not BPE", path,
                m.value("type", ""));
  std::vector<std::string> pieces;
  try {
    // Ids index a dense table: bounding them by the entry count keeps a small file from
    // resizing it to millions of pieces.
    const int64_t n_entries = static_cast<int64_t>(
        m.at("vocab").size() + (j.contains("added_tokens") ? j["added_tokens"].size() : 0));
    for (const auto& [piece, id] : m.at("vocab").items()) {
      const int64_t i =
          json_integer(id, path + ": vocab id of '" + piece.substr(0, 64) + "'", 0, n_entries - 1);
      if (static_cast<int64_t>(pieces.size()) <= i) pieces.resize(i + 1);
      pieces[i] = piece;
    }
    std::vector<std::string> merges;
    for (const auto& mg : m.at("merges")) {
      merges.push_back(mg.is_array()
                           ? mg.at(0).get<std::string>() + " " + mg.at(1).get<std::string>()
                           : mg.get<std::string>());
    }
    int64_t bos = -1, eos = -1;
    const std::string prefix = template_prefix(j.value("post_processor", nlohmann::json()));
    if (j.contains("added_tokens")) {
      for (const auto& t : j["added_tokens"]) {
        const int64_t id = json_integer(t.at("id"), path + ": added token id", 0, n_entries - 1);
        const std::string content = t.at("content").get<std::string>();
        if (static_cast<int64_t>(pieces.size()) <= id) pieces.resize(id + 1);
        pieces[id] = content;
        if (content == prefix ||
            (prefix.empty() && (content == "<s>" || content == "<|begin_of_text|>")))
          bos = id;
        if (eos < 0 && (content == "</s>" || content == "<|endoftext|>" ||
                        content == "<|end_of_text|>" || content == "<|im_end|>")) {
          eos = id;
        }
      }
    }
    std::vector<std::string> patterns;
    add_pre_tokenizer_steps(j.value("pre_tokenizer", nlohmann::json()), path, patterns);
    auto tok = VocabTokenizer::byte_bpe(std::move(pieces), merges, bos, eos,
                                        PreTokenizer(std::move(patterns), path));
    // The template's prefix token is what the reference tokenizer prepends (Llama 3's BOS).
    TESSERA_CHECK(prefix.empty() || bos >= 0,
                  "{}: post_processor starts with '{}', which is not an added token", path, prefix);
    tok.set_add_bos(!prefix.empty());
    return tok;
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "{}: malformed tokenizer.json: {}", path, e.what());
  }
  return {};
}

// ---- llama2.c -----------------------------------------------------------------------------

Llama load_llama2c(const std::string& path, int64_t max_context,
                   std::map<std::string, int64_t>* dtypes) {
  const std::string bytes = read_file(path);
  Reader r(bytes, path);
  const uint32_t magic = r.get<uint32_t>();
  const bool v1 = magic == 0x616b3432u;
  if (v1) {
    const int32_t version = r.get<int32_t>();
    TESSERA_CHECK(version == 1, "{}: llama2.c version {} is not supported (1 is)", path, version);
  } else {
    r.seek(0);
  }
  int32_t h[7];
  for (auto& v : h) v = r.get<int32_t>();
  bool shared = h[5] > 0;
  if (v1) {
    shared = r.get<uint8_t>() != 0;
    r.seek(256);
  }
  LlamaConfig c;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.vocab_size = std::abs(h[5]);
  const int64_t seq_len = h[6];
  TESSERA_CHECK(c.dim > 0 && c.hidden_dim > 0 && c.n_layers > 0 && c.n_heads > 0 &&
                    c.n_kv_heads > 0 && c.vocab_size > 0 && seq_len > 0 && c.dim <= 65536 &&
                    c.n_layers <= 1024,
                "{}: implausible header dim {} hidden {} layers {} heads {} kv {} vocab {} seq {}",
                path, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
  c.max_seq_len = std::min(seq_len, max_context);
  c.tie_embeddings = shared;
  c.rope_style = RopeStyle::kGptj;  // llama2.c rotates adjacent pairs
  c.rms_eps = 1e-5;
  c.validate();
  const int64_t D = c.dim, L = c.n_layers, F = c.hidden_dim, hd = c.resolved_head_dim();
  const int64_t kv = c.n_kv_heads * hd, q = c.n_heads * hd;
  auto take = [&](std::vector<int64_t> shape) {
    int64_t n = 1;
    for (auto s : shape) n *= s;
    r.need(static_cast<uint64_t>(n) * 4);
    auto t = torch::empty(shape);
    std::memcpy(t.data_ptr<float>(), r.data(), n * 4);
    r.seek(r.pos() + n * 4);
    return t;
  };
  std::map<std::string, torch::Tensor> w;
  auto per_layer = [&](const std::string& name, std::vector<int64_t> shape) {
    shape.insert(shape.begin(), L);
    auto t = take(shape);
    for (int64_t l = 0; l < L; ++l) w["layers." + std::to_string(l) + "." + name] = t[l];
  };
  if (v1) {
    per_layer("attn_norm", {D});
    per_layer("ffn_norm", {D});
    w["norm"] = take({D});
    w["tok_embeddings"] = take({c.vocab_size, D});
    per_layer("wq", {q, D});
    per_layer("wk", {kv, D});
    per_layer("wv", {kv, D});
    per_layer("wo", {D, q});
    per_layer("w_gate", {F, D});
    per_layer("w_down", {D, F});
    per_layer("w_up", {F, D});
  } else {
    w["tok_embeddings"] = take({c.vocab_size, D});
    per_layer("attn_norm", {D});
    per_layer("wq", {q, D});
    per_layer("wk", {kv, D});
    per_layer("wv", {kv, D});
    per_layer("wo", {D, q});
    per_layer("ffn_norm", {D});
    per_layer("w_gate", {F, D});
    per_layer("w_down", {D, F});
    per_layer("w_up", {F, D});
    w["norm"] = take({D});
    take({seq_len, hd / 2});  // freq_cis_real (recomputed here)
    take({seq_len, hd / 2});  // freq_cis_imag
  }
  if (!shared) w["output"] = take({c.vocab_size, D});
  TESSERA_CHECK(r.pos() == bytes.size(),
                "{}: {} trailing bytes after the weights (header disagrees with the file)", path,
                bytes.size() - r.pos());
  Llama model = build_llama(c, bytes.size(), path);
  if (dtypes != nullptr) (*dtypes)["F32"] += static_cast<int64_t>(w.size());
  fill_weights(
      model,
      [&](const std::string& n) {
        auto it = w.find(n);
        return it == w.end() ? torch::Tensor() : it->second;
      },
      path);
  return model;
}

VocabTokenizer load_llama2c_tokenizer(const std::string& path) {
  const std::string bytes = read_file(path);
  Reader r(bytes, path);
  const int32_t max_len = r.get<int32_t>();
  TESSERA_CHECK(max_len > 0 && max_len < 65536, "{}: bad max_token_length {}", path, max_len);
  std::vector<std::string> pieces;
  std::vector<float> scores;
  while (r.pos() < bytes.size()) {
    scores.push_back(r.get<float>());
    const int32_t len = r.get<int32_t>();
    TESSERA_CHECK(len >= 0 && len <= max_len, "{}: token {} has length {} (max {})", path,
                  pieces.size(), len, max_len);
    pieces.push_back(r.str(static_cast<uint64_t>(len)));
  }
  TESSERA_CHECK(pieces.size() >= 3, "{}: only {} tokens", path, pieces.size());
  // llama2.c's run.c prepends BOS to every prompt.
  auto tok = VocabTokenizer::sentencepiece(std::move(pieces), std::move(scores), false, 1, 2);
  tok.set_add_bos(true);
  return tok;
}

// ---- GGUF ---------------------------------------------------------------------------------

namespace {

struct GgufTensor {
  std::string name;
  std::vector<int64_t> shape;  // PyTorch order (reversed from the file)
  uint32_t type = 0;
  uint64_t offset = 0;
};

struct Gguf {
  std::string bytes;
  nlohmann::json kv = nlohmann::json::object();
  std::vector<GgufTensor> tensors;
  size_t data_start = 0;
};

nlohmann::json gguf_value(Reader& r, uint32_t type, int depth) {
  TESSERA_CHECK(depth < 3, "{}: nested arrays too deep", r.what());
  switch (type) {
    case 0:
      return r.get<uint8_t>();
    case 1:
      return r.get<int8_t>();
    case 2:
      return r.get<uint16_t>();
    case 3:
      return r.get<int16_t>();
    case 4:
      return r.get<uint32_t>();
    case 5:
      return r.get<int32_t>();
    case 6:
      return r.get<float>();
    case 7:
      return r.get<uint8_t>() != 0;
    case 8:
      return r.str(r.get<uint64_t>());
    case 9: {
      const uint32_t et = r.get<uint32_t>();
      const uint64_t n = r.get<uint64_t>();
      r.need(n);  // every element takes at least a byte: rejects absurd counts early
      nlohmann::json a = nlohmann::json::array();
      for (uint64_t i = 0; i < n; ++i) a.push_back(gguf_value(r, et, depth + 1));
      return a;
    }
    case 10:
      return r.get<uint64_t>();
    case 11:
      return r.get<int64_t>();
    case 12:
      return r.get<double>();
    default:
      TESSERA_CHECK(false, "{}: unknown metadata value type {}", r.what(), type);
  }
  return nullptr;
}

Gguf parse_gguf(const std::string& path) {
  Gguf g;
  g.bytes = read_file(path);
  Reader r(g.bytes, path);
  TESSERA_CHECK(r.str(4) == "GGUF", "{}: not a GGUF file (bad magic)", path);
  const uint32_t version = r.get<uint32_t>();
  TESSERA_CHECK(version == 2 || version == 3, "{}: GGUF version {} is not supported (2, 3)", path,
                version);
  const uint64_t n_tensors = r.get<uint64_t>();
  const uint64_t n_kv = r.get<uint64_t>();
  TESSERA_CHECK(n_tensors < 1'000'000 && n_kv < 1'000'000,
                "{}: implausible counts ({} tensors, {} keys)", path, n_tensors, n_kv);
  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = r.str(r.get<uint64_t>());
    const uint32_t type = r.get<uint32_t>();
    g.kv[key] = gguf_value(r, type, 0);
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    t.name = r.str(r.get<uint64_t>());
    const uint32_t n_dims = r.get<uint32_t>();
    TESSERA_CHECK(n_dims >= 1 && n_dims <= 4, "{}: tensor {} has {} dims", path, t.name, n_dims);
    std::vector<int64_t> dims(n_dims);
    // Every supported type takes at least one byte per element, so the element count is
    // bounded by the file size (and the product cannot overflow in gguf_tensor).
    uint64_t n_elements = 1;
    for (auto& d : dims) {
      const uint64_t v = r.get<uint64_t>();
      TESSERA_CHECK(v > 0 && v < (1ull << 40) &&
                        !__builtin_mul_overflow(n_elements, v, &n_elements) &&
                        n_elements <= g.bytes.size(),
                    "{}: tensor {} has dimension {} (more elements than the file has bytes)", path,
                    t.name, v);
      d = static_cast<int64_t>(v);
    }
    t.shape.assign(dims.rbegin(), dims.rend());
    t.type = r.get<uint32_t>();
    t.offset = r.get<uint64_t>();
    g.tensors.push_back(std::move(t));
  }
  uint64_t align = 32;
  if (g.kv.contains("general.alignment")) align = g.kv["general.alignment"].get<uint64_t>();
  TESSERA_CHECK(align > 0 && align % 8 == 0, "{}: general.alignment {} is not a multiple of 8",
                path, align);
  g.data_start = (r.pos() + align - 1) / align * align;
  return g;
}

std::string ggml_type_name(uint32_t type) {
  switch (type) {
    case 0:
      return "F32";
    case 1:
      return "F16";
    case 8:
      return "Q8_0";
    case 30:
      return "BF16";
  }
  return fmt::format("ggml type {}", type);
}

float half_to_float(uint16_t bits) {
  return static_cast<float>(c10::Half(bits, c10::Half::from_bits()));
}

torch::Tensor gguf_tensor(const Gguf& g, const GgufTensor& t, const std::string& path) {
  int64_t n = 1;
  for (auto s : t.shape) n *= s;
  uint64_t size = 0;
  switch (t.type) {
    case 0:
      size = n * 4;
      break;
    case 1:
    case 30:
      size = n * 2;
      break;
    case 8:
      TESSERA_CHECK(t.shape.back() % 32 == 0,
                    "{}: Q8_0 tensor {} has rows of {} (not a multiple of 32)", path, t.name,
                    t.shape.back());
      size = n / 32 * 34;
      break;
    default:
      TESSERA_CHECK(false,
                    "{}: tensor {} has ggml type {}, unsupported (F32 0, F16 1, Q8_0 8, BF16 30)",
                    path, t.name, t.type);
  }
  const uint64_t begin = g.data_start + t.offset;
  TESSERA_CHECK(begin >= g.data_start && begin <= g.bytes.size() && size <= g.bytes.size() - begin,
                "{}: tensor {} ({} bytes at offset {}) runs past the end of the file", path, t.name,
                size, t.offset);
  const char* p = g.bytes.data() + begin;
  auto out = torch::empty(t.shape);
  float* o = out.data_ptr<float>();
  if (t.type == 0) {
    std::memcpy(o, p, n * 4);
  } else if (t.type == 1 || t.type == 30) {
    for (int64_t i = 0; i < n; ++i) {
      uint16_t b;
      std::memcpy(&b, p + 2 * i, 2);
      if (t.type == 1) {
        o[i] = half_to_float(b);
      } else {
        const uint32_t u = static_cast<uint32_t>(b) << 16;
        std::memcpy(&o[i], &u, 4);
      }
    }
  } else {
    for (int64_t blk = 0; blk < n / 32; ++blk) {
      uint16_t d;
      std::memcpy(&d, p + blk * 34, 2);
      const float scale = half_to_float(d);
      const auto* q = reinterpret_cast<const int8_t*>(p + blk * 34 + 2);
      for (int k = 0; k < 32; ++k) o[blk * 32 + k] = scale * static_cast<float>(q[k]);
    }
  }
  return out;
}

}  // namespace

Llama load_gguf(const std::string& path, int64_t max_context,
                std::map<std::string, int64_t>* dtypes) {
  const Gguf g = parse_gguf(path);
  TESSERA_CHECK(g.kv.contains("general.architecture") && g.kv["general.architecture"].is_string(),
                "{}: no general.architecture", path);
  const std::string arch = g.kv["general.architecture"].get<std::string>();
  TESSERA_CHECK(arch == "llama" || arch == "qwen2" || arch == "qwen3",
                "{}: architecture '{}' is not supported (llama, qwen2, qwen3)", path, arch);
  auto num = [&](const std::string& key, double fallback, bool required) {
    const std::string k = arch + "." + key;
    if (!g.kv.contains(k)) {
      TESSERA_CHECK(!required, "{}: missing metadata {}", path, k);
      return fallback;
    }
    TESSERA_CHECK(g.kv[k].is_number(), "{}: metadata {} is not a number", path, k);
    return g.kv[k].get<double>();
  };
  // Sizes are GGUF integers: a float (or a value past 2^40) is refused, not truncated.
  auto count = [&](const std::string& key, int64_t fallback, bool required) {
    const std::string k = arch + "." + key;
    if (!g.kv.contains(k)) {
      TESSERA_CHECK(!required, "{}: missing metadata {}", path, k);
      return fallback;
    }
    return json_integer(g.kv[k], path + ": metadata " + k, 0, int64_t{1} << 40);
  };
  std::map<std::string, const GgufTensor*> by_name;
  for (const auto& t : g.tensors) by_name[t.name] = &t;
  TESSERA_CHECK(by_name.count("token_embd.weight"), "{}: missing tensor token_embd.weight", path);
  LlamaConfig c;
  c.dim = count("embedding_length", 0, true);
  c.n_layers = count("block_count", 0, true);
  c.hidden_dim = count("feed_forward_length", 0, true);
  c.n_heads = count("attention.head_count", 0, true);
  c.n_kv_heads = count("attention.head_count_kv", c.n_heads, false);
  c.head_dim = count("attention.key_length", 0, false);
  c.rms_eps = num("attention.layer_norm_rms_epsilon", 1e-5, false);
  c.rope_theta = num("rope.freq_base", 10000.0, false);
  c.max_seq_len = std::min<int64_t>(count("context_length", 2048, false), max_context);
  c.vocab_size = by_name["token_embd.weight"]->shape[0];
  c.tie_embeddings = by_name.count("output.weight") == 0;
  c.qkv_bias = by_name.count("blk.0.attn_q.bias") > 0;
  c.qk_norm = by_name.count("blk.0.attn_q_norm.weight") > 0;
  // llama.cpp: arch llama uses "normal" (adjacent-pair) RoPE on Q/K rows its converter permuted;
  // qwen2/qwen3 keep the HF rows and use NeoX pairing.
  c.rope_style = arch == "llama" ? RopeStyle::kGptj : RopeStyle::kNeox;
  c.validate();
  Llama model = build_llama(c, g.bytes.size(), path);
  fill_weights(
      model,
      [&](const std::string& name) {
        auto it = by_name.find(gguf_tensor_name(name));
        if (it == by_name.end()) return torch::Tensor();
        if (dtypes != nullptr) (*dtypes)[ggml_type_name(it->second->type)] += 1;
        return gguf_tensor(g, *it->second, path);
      },
      path);
  return model;
}

VocabTokenizer load_gguf_tokenizer(const std::string& path) {
  const Gguf g = parse_gguf(path);
  TESSERA_CHECK(g.kv.contains("tokenizer.ggml.model") && g.kv.contains("tokenizer.ggml.tokens"),
                "{}: no tokenizer.ggml.model / tokenizer.ggml.tokens metadata", path);
  try {
    const std::string kind = g.kv["tokenizer.ggml.model"].get<std::string>();
    auto tokens = g.kv["tokenizer.ggml.tokens"].get<std::vector<std::string>>();
    const int64_t bos = g.kv.value("tokenizer.ggml.bos_token_id", -1);
    const int64_t eos = g.kv.value("tokenizer.ggml.eos_token_id", -1);
    TESSERA_CHECK(
        bos < static_cast<int64_t>(tokens.size()) && eos < static_cast<int64_t>(tokens.size()),
        "{}: bos {} / eos {} outside the {} tokens", path, bos, eos, tokens.size());
    // llama.cpp's defaults: SentencePiece vocabularies add BOS, GPT-2 style ones do not.
    const bool add_bos = g.kv.value("tokenizer.ggml.add_bos_token", kind == "llama") && bos >= 0;
    if (kind == "llama") {
      std::vector<float> scores(tokens.size(), 0.0f);
      if (g.kv.contains("tokenizer.ggml.scores"))
        scores = g.kv["tokenizer.ggml.scores"].get<std::vector<float>>();
      auto tok =
          VocabTokenizer::sentencepiece(std::move(tokens), std::move(scores), true, bos, eos);
      tok.set_add_bos(add_bos);
      return tok;
    }
    if (kind == "gpt2") {
      std::vector<std::string> merges;
      if (g.kv.contains("tokenizer.ggml.merges"))
        merges = g.kv["tokenizer.ggml.merges"].get<std::vector<std::string>>();
      const std::string pre = g.kv.value("tokenizer.ggml.pre", "gpt2");
      const char* pattern = pre == "llama-bpe" || pre == "llama3" ? kLlama3Pattern
                            : pre == "qwen2"                      ? kQwen2Pattern
                                                                  : kGpt2Pattern;
      auto tok = VocabTokenizer::byte_bpe(std::move(tokens), merges, bos, eos,
                                          PreTokenizer({pattern}, path));
      tok.set_add_bos(add_bos);
      return tok;
    }
    TESSERA_CHECK(false, "{}: tokenizer model '{}' is not supported (llama, gpt2)", path, kind);
  } catch (const nlohmann::json::exception& e) {
    TESSERA_CHECK(false, "{}: malformed tokenizer metadata: {}", path, e.what());
  }
  return {};
}

// ---- GGUF writer --------------------------------------------------------------------------

std::string write_gguf(
    const std::vector<std::pair<std::string, std::string>>& string_kv,
    const std::vector<std::pair<std::string, uint32_t>>& u32_kv,
    const std::vector<std::pair<std::string, float>>& f32_kv,
    const std::vector<std::pair<std::string, std::vector<std::string>>>& string_arrays,
    const std::vector<std::pair<std::string, torch::Tensor>>& tensors, bool q8) {
  std::string out;
  auto put = [&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); };
  auto put_u32 = [&](uint32_t v) { put(&v, 4); };
  auto put_u64 = [&](uint64_t v) { put(&v, 8); };
  auto put_str = [&](const std::string& s) {
    put_u64(s.size());
    out += s;
  };
  out += "GGUF";
  put_u32(3);
  put_u64(tensors.size());
  put_u64(string_kv.size() + u32_kv.size() + f32_kv.size() + string_arrays.size());
  for (const auto& [k, v] : string_kv) {
    put_str(k);
    put_u32(8);
    put_str(v);
  }
  for (const auto& [k, v] : u32_kv) {
    put_str(k);
    put_u32(4);
    put_u32(v);
  }
  for (const auto& [k, v] : f32_kv) {
    put_str(k);
    put_u32(6);
    put(&v, 4);
  }
  for (const auto& [k, v] : string_arrays) {
    put_str(k);
    put_u32(9);
    put_u32(8);
    put_u64(v.size());
    for (const auto& s : v) put_str(s);
  }
  std::vector<std::string> blobs;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    auto t = tensor.detach().to(torch::kFloat32).contiguous();
    const bool quant = q8 && t.dim() == 2 && t.size(1) % 32 == 0;
    std::string blob;
    const float* p = t.data_ptr<float>();
    if (quant) {
      for (int64_t b = 0; b < t.numel() / 32; ++b) {
        float amax = 0;
        for (int k = 0; k < 32; ++k) amax = std::max(amax, std::abs(p[b * 32 + k]));
        const float d = amax / 127.0f;
        const uint16_t dh = c10::Half(d).x;
        const float dq = half_to_float(dh);
        blob.append(reinterpret_cast<const char*>(&dh), 2);
        for (int k = 0; k < 32; ++k) {
          const long v = dq > 0 ? std::lround(p[b * 32 + k] / dq) : 0;
          const int8_t q = static_cast<int8_t>(std::max(-127L, std::min(127L, v)));
          blob.push_back(static_cast<char>(q));
        }
      }
    } else {
      blob.assign(reinterpret_cast<const char*>(p), t.numel() * 4);
    }
    put_str(name);
    put_u32(static_cast<uint32_t>(t.dim()));
    for (int64_t d = t.dim() - 1; d >= 0; --d) put_u64(t.size(d));
    put_u32(quant ? 8 : 0);
    put_u64(offset);
    offset += (blob.size() + 31) / 32 * 32;
    blob.resize((blob.size() + 31) / 32 * 32, '\0');
    blobs.push_back(std::move(blob));
  }
  out.resize((out.size() + 31) / 32 * 32, '\0');
  for (const auto& b : blobs) out += b;
  return out;
}

}  // namespace tessera::llm
