// Fuzzes the Hugging Face config.json reader of llm::load_hf_dir: the input is config.json in a
// directory whose model.safetensors holds no tensors, so every accepted config is also built.
#include "fuzz.h"
#include "tessera/core/safetensors.h"
#include "tessera/llm/loaders.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& dir = tessera::fuzz::temp_dir();
  static const std::string weights =
      dir.write("model.safetensors", tessera::safetensors::serialize({}));
  dir.write("config.json", tessera::fuzz::as_bytes(data, size));
  tessera::fuzz::refuse_cleanly([&] { tessera::llm::load_hf_dir(dir.path(), /*max_context=*/64); });
  return 0;
}
