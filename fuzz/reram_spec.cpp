// Fuzzes the ReRAM hardware spec reader (reram::load_spec): every field's type and range, and
// the optional per-component energy, latency and area figures.
#include "fuzz.h"
#include "tessera/reram/spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      tessera::fuzz::temp_dir().write("spec.json", tessera::fuzz::as_bytes(data, size));
  tessera::fuzz::refuse_cleanly([&] { tessera::reram::load_spec(path); });
  return 0;
}
