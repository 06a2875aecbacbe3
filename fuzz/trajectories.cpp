// Fuzzes the Jacobi trajectory file reader (jacobi::trajectories_from_json) the way
// `tessera llm distill --trajectories FILE` reads it: the whole file, then the JSON value.
#include "fuzz.h"
#include "tessera/core/fs.h"
#include "tessera/core/json.h"
#include "tessera/jacobi/lm.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path =
      tessera::fuzz::temp_dir().write("trajectories.json", tessera::fuzz::as_bytes(data, size));
  tessera::fuzz::refuse_cleanly([&] {
    tessera::jacobi::trajectories_from_json(
        tessera::parse_json(tessera::read_file(path), "'" + path + "'"));
  });
  return 0;
}
