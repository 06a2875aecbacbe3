// Out-of-line part of TESSERA_CHECK, so the macro stays small at every call site.
#include "tessera/core/error.h"

namespace tessera::detail {

[[noreturn]] void throw_check_failure(const char* /*file*/, int /*line*/,
                                      const std::string& message) {
  // The message is for users: it names the value; file and line would only add noise.
  throw Error(message);
}

}  // namespace tessera::detail
