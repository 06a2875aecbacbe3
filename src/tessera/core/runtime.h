// Process-wide runtime set-up: LibTorch threads, the BLAS check, and a description of the machine.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

namespace tessera {

/// Sets LibTorch's intra-op thread count: `threads` if > 0, else the number of cores
/// (LibTorch defaults to 1 thread on Debian). Warns once if the reference BLAS is active.
void init_runtime(int threads = 0);

/// LibTorch's intra-op thread count set to `threads` for a scope and restored at its end
/// (threads <= 0: left as it is). For timings that must not depend on a second thread.
class ScopedThreads {
 public:
  explicit ScopedThreads(int threads);
  ~ScopedThreads();
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int previous_;
};

/// The shared library that provides sgemm_ to LibTorch (resolved path), or "" if unknown.
std::string blas_library();
/// True when the BLAS in use is OpenBLAS (or MKL); false for Debian's slow reference BLAS.
bool blas_is_fast();

/// Hostname, CPU model, cores, LibTorch threads and version, BLAS library: stored in every report.
nlohmann::json machine_info();

/// The CPU's "model name" from /proc/cpuinfo, or "unknown".
std::string cpu_model_name();

/// Short git commit of the build ("unknown" outside a git checkout).
const char* git_commit();

}  // namespace tessera
