// Checkpoint recognition by content and the one loader behind every `llm` command.
#include "tessera/llm/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"

namespace tessera::llm {

std::string checkpoint_format_name(CheckpointFormat format) {
  switch (format) {
    case CheckpointFormat::kTessera:
      return "tessera";
    case CheckpointFormat::kHuggingFace:
      return "huggingface";
    case CheckpointFormat::kLlama2c:
      return "llama2c";
    case CheckpointFormat::kGguf:
      return "gguf";
  }
  return "?";
}

namespace {

// Up to `n` bytes from the start of `path` (fewer when the file is shorter).
std::string read_prefix(const std::string& path, size_t n) {
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in.good(), "{}: cannot open (no such file or not readable)", path);
  std::string bytes(n, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(n));
  bytes.resize(static_cast<size_t>(in.gcount()));
  return bytes;
}

template <typename T>
T little_endian(const std::string& bytes, size_t offset) {
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof(T));
  return v;
}

// llama2.c's legacy header: dim, hidden, layers, heads, kv heads, vocab (negative: untied), seq.
bool plausible_legacy_header(const std::string& head) {
  if (head.size() < 28) return false;
  int32_t h[7];
  std::memcpy(h, head.data(), sizeof(h));
  const int32_t vocab = h[5] < 0 ? -h[5] : h[5];
  return h[0] > 0 && h[0] <= 65536 && h[1] > 0 && h[1] <= (1 << 20) && h[2] > 0 && h[2] <= 1024 &&
         h[3] > 0 && h[3] <= h[0] && h[4] > 0 && h[4] <= h[3] && h[3] % h[4] == 0 && vocab > 0 &&
         vocab <= (1 << 22) && h[6] > 0 && h[6] <= (1 << 22);
}

// Far above any real header; a claimed length beyond it is corruption, not a model.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

constexpr const char* kTried =
    "tried: a directory with config.json (Hugging Face), the GGUF magic, a safetensors header "
    "with tessera.arch (Tessera LLM file), the llama2.c v1 magic and legacy header";

// A tokenizer file given with --tokenizer: JSON is tokenizer.json, anything else tokenizer.bin.
ModelTokenizer load_tokenizer_file(const std::string& path) {
  const std::string head = read_prefix(path, 64);
  const size_t first = head.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && head[first] == '{') return load_tokenizer_json(path);
  return load_llama2c_tokenizer(path);
}

}  // namespace

CheckpointFormat detect_checkpoint(const std::string& path) {
  namespace fsys = std::filesystem;
  std::error_code ec;
  if (fsys::is_directory(path, ec)) {
    TESSERA_CHECK(fsys::exists(fsys::path(path) / "config.json", ec),
                  "{}: a directory without config.json is not a Hugging Face checkpoint", path);
    return CheckpointFormat::kHuggingFace;
  }
  const std::string head = read_prefix(path, 256);
  TESSERA_CHECK(head.size() >= 8, "{}: {} bytes is too short for any checkpoint ({})", path,
                head.size(), kTried);
  if (head.compare(0, 4, "GGUF") == 0) return CheckpointFormat::kGguf;
  if (little_endian<uint32_t>(head, 0) == 0x616b3432u) return CheckpointFormat::kLlama2c;
  if (head.size() > 8 && head[8] == '{') {
    const uint64_t header_bytes = little_endian<uint64_t>(head, 0);
    const uint64_t file_bytes = fsys::file_size(path, ec);
    TESSERA_CHECK(header_bytes <= kMaxHeaderBytes,
                  "{}: safetensors header of {} bytes (at most {})", path, header_bytes,
                  kMaxHeaderBytes);
    TESSERA_CHECK(!ec && header_bytes <= file_bytes - 8,
                  "{}: safetensors header of {} bytes runs past the end of the file ({} bytes): "
                  "truncated",
                  path, header_bytes, file_bytes);
    const std::string header = read_prefix(path, 8 + header_bytes).substr(8);
    TESSERA_CHECK(header.find("\"tessera.arch\"") != std::string::npos,
                  "{}: a safetensors file without tessera.arch metadata is not a Tessera LLM "
                  "file (for a Hugging Face model, pass its directory with config.json)",
                  path);
    return CheckpointFormat::kTessera;
  }
  if (plausible_legacy_header(head)) return CheckpointFormat::kLlama2c;
  TESSERA_CHECK(false, "{}: not a recognised checkpoint ({})", path, kTried);
  return CheckpointFormat::kTessera;
}

LoadedCheckpoint load_checkpoint(const std::string& path, const std::string& tokenizer_path,
                                 int64_t max_context) {
  LoadedCheckpoint out;
  out.format = detect_checkpoint(path);
  switch (out.format) {
    case CheckpointFormat::kTessera:
      out.bundle = load_llm(path);
      out.dtypes["F32"] = static_cast<int64_t>(out.bundle.model->named_weights().size());
      out.tokenizer_source = path + " (tessera.tokenizer)";
      break;
    case CheckpointFormat::kHuggingFace: {
      out.bundle.model = load_hf_dir(path, max_context, &out.dtypes);
      const std::string json = path + "/tokenizer.json";
      if (tokenizer_path.empty()) {
        TESSERA_CHECK(file_exists(json),
                      "{}: no tokenizer.json in the directory; pass one with --tokenizer", path);
        out.bundle.tokenizer = load_tokenizer_json(json);
        out.tokenizer_source = json;
      }
      break;
    }
    case CheckpointFormat::kLlama2c:
      TESSERA_CHECK(!tokenizer_path.empty(),
                    "{}: a llama2.c checkpoint holds no tokenizer; pass its tokenizer.bin with "
                    "--tokenizer",
                    path);
      out.bundle.model = load_llama2c(path, max_context, &out.dtypes);
      break;
    case CheckpointFormat::kGguf:
      out.bundle.model = load_gguf(path, max_context, &out.dtypes);
      if (tokenizer_path.empty()) {
        out.bundle.tokenizer = load_gguf_tokenizer(path);
        out.tokenizer_source = path + " (tokenizer.ggml)";
      }
      break;
  }
  if (!tokenizer_path.empty()) {
    out.bundle.tokenizer = load_tokenizer_file(tokenizer_path);
    out.tokenizer_source = tokenizer_path;
  }
  TESSERA_CHECK(out.bundle.tokenizer.vocab_size() <= out.bundle.model->config().vocab_size,
                "{}: the tokenizer ({}) has {} tokens but the model's vocabulary only {}", path,
                out.tokenizer_source, out.bundle.tokenizer.vocab_size(),
                out.bundle.model->config().vocab_size);
  return out;
}

LlmBundle load_any(const std::string& path, const std::string& tokenizer_path) {
  return load_checkpoint(path, tokenizer_path).bundle;
}

nlohmann::json LoadedCheckpoint::to_json() const {
  const auto& c = bundle.model->config();
  const auto& t = bundle.tokenizer;
  return {{"format", checkpoint_format_name(format)},
          {"architecture", c.to_json()},
          {"n_params", c.n_params()},
          {"dtypes", dtypes},
          {"tokenizer",
           {{"kind", t.kind_name()},
            {"vocab_size", t.vocab_size()},
            {"bos_id", t.bos_id()},
            {"eos_id", t.eos_id()},
            {"add_bos", t.add_bos()},
            {"source", tokenizer_source}}}};
}

Table LoadedCheckpoint::table() const {
  const auto& c = bundle.model->config();
  const auto& t = bundle.tokenizer;
  std::string dtype_list;
  for (const auto& [dtype, n] : dtypes)
    dtype_list += fmt::format("{}{} ({} tensors)", dtype_list.empty() ? "" : ", ", dtype, n);
  Table table({"field", "value"});
  table.add_row({"format", checkpoint_format_name(format)});
  table.add_row(
      {"layers, dim, hidden", fmt::format("{}, {}, {}", c.n_layers, c.dim, c.hidden_dim)});
  table.add_row({"heads, kv heads, head dim",
                 fmt::format("{}, {}, {}", c.n_heads, c.n_kv_heads, c.resolved_head_dim())});
  table.add_row({"vocab, context", fmt::format("{}, {}", c.vocab_size, c.max_seq_len)});
  table.add_row(
      {"rope", fmt::format("{}, theta {:g}", rope_style_name(c.rope_style), c.rope_theta)});
  table.add_row({"tied embeddings, qkv bias, qk norm",
                 fmt::format("{}, {}, {}", c.tie_embeddings ? "yes" : "no",
                             c.qkv_bias ? "yes" : "no", c.qk_norm ? "yes" : "no")});
  table.add_row({"parameters", fmt::format("{} ({:.2f} M)", c.n_params(), c.n_params() / 1e6)});
  table.add_row({"stored dtypes", dtype_list});
  table.add_row({"tokenizer", fmt::format("{}, {} tokens, from {}", t.kind_name(), t.vocab_size(),
                                          tokenizer_source)});
  table.add_row(
      {"bos, eos", fmt::format("{}{}, {}", t.bos_id(), t.add_bos() ? " (prepended to prompts)" : "",
                               t.eos_id())});
  return table;
}

}  // namespace tessera::llm
