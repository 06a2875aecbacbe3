// Fuzzes the workload reader (core/workload): layer kinds, shapes and their consistency. An
// accepted workload must give its MAC and weight totals without failing.
#include "tessera/core/workload.h"
#include "fuzz.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      tessera::fuzz::temp_dir().write("workload.json", tessera::fuzz::as_bytes(data, size));
  tessera::fuzz::refuse_cleanly([&] {
    const auto workload = tessera::workload::load(path);
    workload.total_macs();
    workload.total_weights();
  });
  return 0;
}
