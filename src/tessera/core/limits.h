// Limits on what a file may make Tessera allocate (docs/reliability.md lists every limit): the
// safetensors tensor count, the parameter budget, and a scope that caps CPU tensor allocation
// while a model is built from a file's description, before any of its tensors is checked.
#pragma once

#include <c10/core/Allocator.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace tessera {

/// Most tensors one safetensors header may declare (checkpoints hold a few thousand at most;
/// a million empty entries fit in the 100 MB header limit and cost 6 s and 1.1 GB to read).
constexpr uint64_t kMaxTensors = 100'000;
/// Parameter elements a model or LLM built from a file or config may hold, unless the
/// environment variable TESSERA_MAX_PARAMS raises (or lowers) it.
constexpr int64_t kDefaultMaxParameters = 2'000'000'000;

/// kDefaultMaxParameters, or TESSERA_MAX_PARAMS when set (a positive integer; anything else is
/// a tessera::Error naming the variable).
int64_t max_parameters();

/// What a model built from a file may request beyond the multiple of the file's tensor bytes
/// that its builder allows (buffers, tables, small temporaries).
constexpr uint64_t kBuildSlackBytes = uint64_t{64} << 20;

/// While alive, every CPU tensor allocation counts against `max_bytes`; one that would pass it
/// throws tessera::Error("<what>: building it needs more than <max_bytes> bytes ..."). Meant for
/// the construction of a model from a file, whose tensors bound what a legitimate build needs.
/// Not reentrant: one scope at a time per process (the CLI builds one model at a time).
class AllocationBudget {
 public:
  AllocationBudget(uint64_t max_bytes, std::string what);
  ~AllocationBudget();
  AllocationBudget(const AllocationBudget&) = delete;
  AllocationBudget& operator=(const AllocationBudget&) = delete;

 private:
  class CountingAllocator : public c10::Allocator {
   public:
    CountingAllocator(c10::Allocator* inner, uint64_t max_bytes, const std::string& what)
        : inner_(inner), max_bytes_(max_bytes), what_(what) {}
    c10::DataPtr allocate(size_t n) const override;
    c10::DeleterFnPtr raw_deleter() const override { return inner_->raw_deleter(); }

   private:
    c10::Allocator* inner_;
    uint64_t max_bytes_;
    const std::string& what_;
    mutable std::atomic<uint64_t> used_{0};
  };
  std::string what_;
  c10::Allocator* previous_;
  CountingAllocator counting_;
};

}  // namespace tessera
