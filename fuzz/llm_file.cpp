// Fuzzes the Tessera LLM loader (llm::load_llm) on whole files: safetensors structure, the
// architecture and tokenizer metadata, and every weight's shape. An accepted tokenizer must
// round-trip a fixed text.
#include "fuzz.h"
#include "tessera/llm/io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      tessera::fuzz::temp_dir().write("m.safetensors", tessera::fuzz::as_bytes(data, size));
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
