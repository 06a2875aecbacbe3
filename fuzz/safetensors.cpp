// Fuzzes the safetensors reader from memory (core/safetensors): header length, JSON header,
// dtypes, shapes, offsets. An accepted file must serialize and parse again with the same tensors.
#include "tessera/core/safetensors.h"

#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using tessera::safetensors::File;
  tessera::fuzz::refuse_cleanly([&] {
    const File file = tessera::safetensors::parse(tessera::fuzz::as_bytes(data, size));
    const File again = tessera::safetensors::parse(tessera::safetensors::serialize(file));
    if (again.tensors.size() != file.tensors.size() || again.metadata != file.metadata) {
      __builtin_trap();
    }
  });
  return 0;
}
