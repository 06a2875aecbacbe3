// Runtime set-up and machine description.
#include "tessera/core/runtime.h"

#include <dlfcn.h>
#include <malloc.h>
#include <unistd.h>

#include <torch/torch.h>

#include <cstdlib>
#include <fstream>
#include <thread>

#include "tessera/core/error.h"
#include "tessera/core/log.h"

namespace tessera {

std::string blas_library() {
  void* symbol = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info info{};
  if (symbol == nullptr || dladdr(symbol, &info) == 0 || info.dli_fname == nullptr) return "";
  char resolved[4096];
  if (realpath(info.dli_fname, resolved) == nullptr) return info.dli_fname;
  return resolved;
}

ScopedThreads::ScopedThreads(int threads) : previous_(torch::get_num_threads()) {
  if (threads > 0) torch::set_num_threads(threads);
}

ScopedThreads::~ScopedThreads() { torch::set_num_threads(previous_); }

bool blas_is_fast() {
  const std::string lib = blas_library();
  return lib.find("openblas") != std::string::npos || lib.find("mkl") != std::string::npos;
}

void init_runtime(int threads) {
  TESSERA_CHECK(threads >= 0, "--threads must be >= 0 (0 = all cores), got {}", threads);
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(threads > 0 ? threads : cores);
#ifdef __GLIBC__
  // glibc hands freed tensor memory back to the kernel: blocks above its adaptive mmap threshold
  // are unmapped and the top of the heap is trimmed, so every training step page-faults its
  // activations in again (ResNet-20 batch 128: 410 img/s, against 520 without it; Python escapes
  // this because its own objects pin the heap top). Keep freed memory in the process: the largest
  // fixed mmap threshold glibc accepts (32 MiB) and trimming only above 1 GiB of free heap.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
#endif
  static bool warned = false;
  if (!warned && !blas_is_fast()) {
    warned = true;
    log::warn(
        "LibTorch is using the reference BLAS ({}): matmul is ~15x slower. Fix: apt-get install "
        "libopenblas0-openmp (scripts/setup.sh does this).",
        blas_library().empty() ? "unknown library" : blas_library());
  }
}

std::string cpu_model_name() {
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      return colon + 2 <= line.size() ? line.substr(colon + 2) : "unknown";
    }
  }
  return "unknown";
}

nlohmann::json machine_info() {
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  const std::string cpu = cpu_model_name();
  return {{"hostname", host},
          {"cpu", cpu},
          {"cores", std::thread::hardware_concurrency()},
          {"torch_threads", torch::get_num_threads()},
          {"torch_version", TORCH_VERSION},
          {"blas", blas_library()}};
}

}  // namespace tessera
