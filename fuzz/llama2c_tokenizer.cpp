// Fuzzes the llama2.c tokenizer.bin loader (llm/loaders): max token length, then score, length
// and bytes per token. An accepted tokenizer must encode and decode a fixed text without failing.
#include "fuzz.h"
#include "tessera/llm/loaders.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      tessera::fuzz::temp_dir().write("tokenizer.bin", tessera::fuzz::as_bytes(data, size));
  tessera::fuzz::refuse_cleanly([&] {
    const auto tokenizer = tessera::llm::load_llama2c_tokenizer(path);
    tokenizer.decode(tokenizer.encode("fuzz 123, hello world!"));
  });
  return 0;
}
