// libcrypto wrappers: EVP SHA-256, HMAC, CRYPTO_memcmp and RAND_bytes.
#include "tessera/bitflip/crypto.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "tessera/core/error.h"

namespace tessera::bitflip {

Digest sha256(std::string_view data) {
  Digest digest{};
  unsigned int length = 0;
  TESSERA_CHECK(
      EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr) == 1 &&
          length == digest.size(),
      "libcrypto SHA-256 failed");
  return digest;
}

Digest hmac_sha256(std::string_view key, std::string_view message) {
  Digest digest{};
  unsigned int length = 0;
  // HMAC() with a zero-length key needs a non-null pointer.
  static const unsigned char kEmpty = 0;
  const auto* key_bytes =
      key.empty() ? &kEmpty : reinterpret_cast<const unsigned char*>(key.data());
  const unsigned char* out = HMAC(EVP_sha256(), key_bytes, static_cast<int>(key.size()),
                                  reinterpret_cast<const unsigned char*>(message.data()),
                                  message.size(), digest.data(), &length);
  TESSERA_CHECK(out != nullptr && length == digest.size(), "libcrypto HMAC-SHA256 failed");
  return digest;
}

std::string to_hex(const uint8_t* bytes, size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return out;
}

bool constant_time_equal(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  return a.empty() || CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string random_bytes(size_t n) {
  std::string out(n, '\0');
  TESSERA_CHECK(
      n == 0 || RAND_bytes(reinterpret_cast<unsigned char*>(out.data()), static_cast<int>(n)) == 1,
      "libcrypto RAND_bytes failed: no secure random source");
  return out;
}

}  // namespace tessera::bitflip
