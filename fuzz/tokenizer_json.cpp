// Fuzzes the Hugging Face tokenizer.json loader (llm/loaders): a byte-level BPE vocabulary,
// merges and added tokens. An accepted tokenizer must encode and decode a fixed text.
#include "fuzz.h"
#include "tessera/llm/loaders.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      tessera::fuzz::temp_dir().write("tokenizer.json", tessera::fuzz::as_bytes(data, size));
  tessera::fuzz::refuse_cleanly([&] {
    const auto tokenizer = tessera::llm::load_tokenizer_json(path);
    tokenizer.decode(tokenizer.encode("fuzz 123, hello world!"));
  });
  return 0;
}
