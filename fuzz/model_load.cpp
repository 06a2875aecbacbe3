// Fuzzes the Tessera model loader (models::load) on whole files: safetensors structure,
// metadata, the architecture, every tensor's name, dtype and shape; "PK" inputs take the
// TorchScript archive path.
#include "fuzz.h"
#include "tessera/models/model_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      tessera::fuzz::temp_dir().write("m.safetensors", tessera::fuzz::as_bytes(data, size));
  tessera::fuzz::refuse_cleanly([&] { tessera::models::load(path); });
  return 0;
}
