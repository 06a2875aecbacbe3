// Parameter budget and allocation scope (see limits.h).
#include "tessera/core/limits.h"

#include <cerrno>
#include <cstdlib>

#include "tessera/core/error.h"

namespace tessera {

namespace {
constexpr uint8_t kPriority = 255;
}  // namespace

int64_t max_parameters() {
  const char* text = std::getenv("TESSERA_MAX_PARAMS");
  if (text == nullptr || *text == '\0') return kDefaultMaxParameters;
  char* end = nullptr;
  errno = 0;
  const long long value = std::strtoll(text, &end, 10);
  TESSERA_CHECK(errno == 0 && *end == '\0' && value > 0,
                "TESSERA_MAX_PARAMS must be a positive integer, got '{}'", text);
  return value;
}

c10::DataPtr AllocationBudget::CountingAllocator::allocate(size_t n) const {
  const uint64_t used = used_.fetch_add(n) + n;
  if (used > max_bytes_) {
    used_.fetch_sub(n);
    throw Error(fmt::format(
        "{}: building it needs more than {} bytes, more than the file's tensors justify", what_,
        max_bytes_));
  }
  // Freed bytes are not subtracted: the budget bounds the total a build requests.
  return inner_->allocate(n);
}

AllocationBudget::AllocationBudget(uint64_t max_bytes, std::string what)
    : what_(std::move(what)),
      previous_(c10::GetAllocator(c10::DeviceType::CPU)),
      counting_(previous_, max_bytes, what_) {
  // The top priority, so that no allocator registered with a higher one is left in place.
  c10::SetAllocator(c10::DeviceType::CPU, &counting_, kPriority);
}

AllocationBudget::~AllocationBudget() {
  c10::SetAllocator(c10::DeviceType::CPU, previous_, kPriority);
}

}  // namespace tessera
