// Fuzzes the llama2.c checkpoint loader (llm/loaders): legacy and v1 ("ak42") headers, the
// declared sizes against the file length, and the weights that follow.
#include "fuzz.h"
#include "tessera/llm/loaders.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      tessera::fuzz::temp_dir().write("model.bin", tessera::fuzz::as_bytes(data, size));
  tessera::fuzz::refuse_cleanly([&] { tessera::llm::load_llama2c(path, /*max_context=*/64); });
  return 0;
}
