// SHA-256, HMAC-SHA256, a constant-time compare and secret random bytes for the RADAR key and
// signature file: thin wrappers over OpenSSL's libcrypto (audited code, a real random source).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace tessera::bitflip {

using Digest = std::array<uint8_t, 32>;

/// SHA-256 of `data` (libcrypto EVP).
Digest sha256(std::string_view data);

/// HMAC-SHA256 of `message` under `key` (any length; libcrypto HMAC).
Digest hmac_sha256(std::string_view key, std::string_view message);

/// Lower-case hex of the bytes.
std::string to_hex(const uint8_t* bytes, size_t n);
inline std::string to_hex(const Digest& digest) { return to_hex(digest.data(), digest.size()); }

/// Compares two strings in time that depends only on their lengths (CRYPTO_memcmp; for MAC tags).
bool constant_time_equal(std::string_view a, std::string_view b);

/// `n` bytes from libcrypto's CSPRNG (RAND_bytes); throws tessera::Error if it fails.
std::string random_bytes(size_t n);

}  // namespace tessera::bitflip
