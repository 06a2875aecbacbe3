// Fuzzes the GGUF loader (llm/loaders): header, metadata key/values, tensor infos, offsets,
// dtypes (F32/F16/BF16/Q8_0), the architecture, and the tokenizer in the metadata. An accepted
// tokenizer must encode and decode a fixed text without failing.
#include "fuzz.h"
#include "tessera/llm/loaders.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      tessera::fuzz::temp_dir().write("m.gguf", tessera::fuzz::as_bytes(data, size));
  tessera::fuzz::refuse_cleanly([&] { tessera::llm::load_gguf(path, /*max_context=*/64); });
  tessera::fuzz::refuse_cleanly([&] {
    const auto tokenizer = tessera::llm::load_gguf_tokenizer(path);
    tokenizer.decode(tokenizer.encode("fuzz 123, hello world!"));
  });
  return 0;
}
