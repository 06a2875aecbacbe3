// Fuzzes the architecture metadata of a Tessera model file (tessera.arch, including the
// model-specific `extra` and graph node lists) through models::load: the input is the metadata's
// JSON text in an otherwise valid file without tensors, so every accepted config is also built.
#include "fuzz.h"
#include "tessera/core/safetensors.h"
#include "tessera/models/model_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  namespace models = tessera::models;
  tessera::safetensors::File file;
  file.metadata[models::kArchKey] = std::string(tessera::fuzz::as_bytes(data, size));
  file.metadata[models::kFormatKey] = models::kFormatVersion;
  const auto bytes = tessera::fuzz::serialize_if_utf8(file);
  if (!bytes) return 0;
  const std::string path = tessera::fuzz::temp_dir().write("m.safetensors", *bytes);
  tessera::fuzz::refuse_cleanly([&] { models::load(path); });
  return 0;
}
