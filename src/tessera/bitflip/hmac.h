// SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), our own small implementation so that the
// RADAR signature file can carry an integrity tag without a crypto library dependency.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace tessera::bitflip {

using Digest = std::array<uint8_t, 32>;

/// SHA-256 of `data`.
Digest sha256(std::string_view data);

/// HMAC-SHA256 of `message` under `key` (any length; keys longer than 64 bytes are hashed).
Digest hmac_sha256(std::string_view key, std::string_view message);

/// Lower-case hex of the bytes.
std::string to_hex(const uint8_t* bytes, size_t n);
inline std::string to_hex(const Digest& digest) { return to_hex(digest.data(), digest.size()); }

/// Compares two strings in time that depends only on their lengths (for MAC tags).
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace tessera::bitflip
