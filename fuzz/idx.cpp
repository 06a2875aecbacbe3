// Fuzzes the Fashion-MNIST reader (data/readers): the input is the image file, plain IDX or
// gzip (sniffed by content), next to a valid one-label file, read by load_fashion_mnist.
#include <string>

#include "fuzz.h"
#include "tessera/data/dataset.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto& dir = tessera::fuzz::temp_dir();
  // IDX header: magic 0x00000801 (unsigned bytes, one dim), count 1; then label 3.
  static const std::string labels =
      dir.write("t10k-labels-idx1-ubyte", std::string("\0\0\x08\x01\0\0\0\x01\x03", 9));
  dir.write("t10k-images-idx3-ubyte", tessera::fuzz::as_bytes(data, size));
  tessera::fuzz::refuse_cleanly(
      [&] { tessera::data::load_fashion_mnist("test", dir.path(), /*pad_to=*/28); });
  return 0;
}
