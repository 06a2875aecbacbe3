// libFuzzer harness for the safetensors reader: any input must parse or throw tessera::Error;
// anything else (a crash, a sanitizer report, another exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tessera/core/error.h"
#include "tessera/core/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  try {
    const tessera::safetensors::File file = tessera::safetensors::parse(bytes);
    // An accepted file must serialize again and parse to the same number of tensors.
    const auto again = tessera::safetensors::parse(tessera::safetensors::serialize(file));
    if (again.tensors.size() != file.tensors.size()) __builtin_trap();
  } catch (const tessera::Error&) {
    // Rejected cleanly.
  }
  return 0;
}
