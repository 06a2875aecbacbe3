// tessera::Error and the one check macro used by all library code.
// Library code throws on bad input or broken invariants; only the CLI's main() catches.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace tessera {

/// The only exception type Tessera throws on purpose. The message names the offending value.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
[[noreturn]] void throw_check_failure(const char* file, int line, const std::string& message);
}  // namespace detail

}  // namespace tessera

/// TESSERA_CHECK(cond, "fmt {} string", args...): throws tessera::Error with the formatted
/// message when cond is false. The message should name the bad value and what was expected.
#define TESSERA_CHECK(cond, ...)                                                            \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      ::tessera::detail::throw_check_failure(__FILE__, __LINE__, fmt::format(__VA_ARGS__)); \
    }                                                                                       \
  } while (false)
