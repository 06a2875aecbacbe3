// Fuzzes the tokenizer metadata of a Tessera LLM file (tessera.tokenizer: Tessera's BPE or a
// foreign vocabulary, llm/model_tokenizer) through llm::load_llm: the input is the metadata's JSON
// text in a file with a tiny valid model. An accepted Tessera tokenizer must round-trip a text.
#include "fuzz.h"
#include "tessera/core/safetensors.h"
#include "tessera/llm/io.h"

namespace {

// A 1024-token model (room for merges and specials) small enough to write on every input.
const tessera::safetensors::File& model_file() {
  static const tessera::safetensors::File file = [] {
    tessera::llm::LlamaConfig config;
    config.vocab_size = 1024;
    config.dim = 4;
    config.n_layers = 1;
    config.n_heads = 1;
    config.n_kv_heads = 1;
    config.hidden_dim = 4;
    config.max_seq_len = 16;
    const tessera::llm::Llama model(config);
    tessera::safetensors::File out;
    for (const auto& [name, tensor] : model->named_weights()) {
      out.tensors.emplace_back(name, tensor.detach().clone());
    }
    auto arch = config.to_json();
    arch["name"] = "llama";
    out.metadata["tessera.arch"] = arch.dump();
    return out;
  }();
  return file;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  tessera::safetensors::File file = model_file();
  file.metadata["tessera.tokenizer"] = std::string(tessera::fuzz::as_bytes(data, size));
  const auto bytes = tessera::fuzz::serialize_if_utf8(file);
  if (!bytes) return 0;
  const std::string path = tessera::fuzz::temp_dir().write("m.safetensors", *bytes);
  tessera::fuzz::refuse_cleanly([&] {
    const auto bundle = tessera::llm::load_llm(path);
    const std::string text = "fuzz 123, \xe2\x96\x81!";
    const std::string back = bundle.tokenizer.decode(bundle.tokenizer.encode(text));
    // Tessera's BPE is lossless; a SentencePiece vocabulary maps U+2581 to a space, as its
    // reference implementation does, so only Tessera's must give the text back.
    if (bundle.tokenizer.tessera() != nullptr && back != text) __builtin_trap();
  });
  return 0;
}
