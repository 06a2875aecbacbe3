// Fuzzes the architecture metadata of a Tessera LLM file (tessera.arch, LlamaConfig) through
// llm::load_llm: the input is the metadata's JSON text next to a valid tokenizer and no weights,
// so every accepted config is also built.
#include "fuzz.h"
#include "tessera/core/safetensors.h"
#include "tessera/llm/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const std::string tokenizer = tessera::llm::Tokenizer().to_json().dump();
  tessera::safetensors::File file;
  file.metadata["tessera.arch"] = std::string(tessera::fuzz::as_bytes(data, size));
  file.metadata["tessera.tokenizer"] = tokenizer;
  const auto bytes = tessera::fuzz::serialize_if_utf8(file);
  if (!bytes) return 0;
  const std::string path = tessera::fuzz::temp_dir().write("m.safetensors", *bytes);
  tessera::fuzz::refuse_cleanly([&] { tessera::llm::load_llm(path); });
  return 0;
}
