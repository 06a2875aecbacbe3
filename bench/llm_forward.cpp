// The cost of an n-token forward of the Llama engine against a 1-token one, for each matmul kernel
// this CPU has, timed side by side: every round times each (kernel, n) once, in turn, from the same
// cache length, and the fastest round of each counts. Prints one table per kernel, then JSON.
// Usage: bench_llm_forward [dim layers hidden vocab rounds threads]   (defaults: the 134M shape)
#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <limits>
#include <string>
#include <vector>

#include "tessera/core/runtime.h"
#include "tessera/core/timer.h"
#include "tessera/llm/kernels.h"
#include "tessera/llm/llama.h"

int main(int argc, char** argv) {
  using namespace tessera;
  auto arg = [&](int i, int64_t fallback) { return argc > i ? std::stoll(argv[i]) : fallback; };
  llm::LlamaConfig c;
  c.dim = arg(1, 768);
  c.n_layers = arg(2, 12);
  c.hidden_dim = arg(3, 2048);
  c.vocab_size = arg(4, 32000);
  const int64_t rounds = arg(5, 7);
  init_runtime(static_cast<int>(arg(6, 2)));
  c.n_heads = c.n_kv_heads = c.dim / 64;
  c.max_seq_len = 128;
  c.tie_embeddings = false;
  torch::manual_seed(0);
  llm::Llama model(c);
  llm::LlamaEngine engine(model);
  std::vector<float> logits;
  const std::vector<int64_t> prompt(32, 1);
  engine.forward(prompt, logits);  // a cache of 32 positions, as after a short prompt
  const int64_t start = engine.n_past();

  const std::vector<int64_t> ns = {1, 2, 4, 8, 12, 16};
  std::vector<llm::MatmulKernel> kernels;
  for (int k = 0; k <= static_cast<int>(llm::best_matmul_kernel()); ++k)
    kernels.push_back(static_cast<llm::MatmulKernel>(k));
  std::vector<std::vector<double>> best(kernels.size(), std::vector<double>(ns.size(), 1e300));
  for (int64_t round = 0; round < rounds; ++round) {
    for (size_t k = 0; k < kernels.size(); ++k) {
      llm::set_matmul_kernel(kernels[k]);
      for (size_t i = 0; i < ns.size(); ++i) {
        engine.truncate(start);
        const std::vector<int64_t> block(ns[i], 1);
        const Timer timer;
        engine.forward(block, logits);
        best[k][i] = std::min(best[k][i], timer.elapsed_s());
      }
    }
  }
  const double gflop_per_token = 2.0 * static_cast<double>(c.n_params()) / 1e9;
  std::printf("%lld parameters, %lld rounds, %d threads\n", static_cast<long long>(c.n_params()),
              static_cast<long long>(rounds), at::get_num_threads());
  for (size_t k = 0; k < kernels.size(); ++k) {
    std::printf("\nkernel %s\n%6s %10s %8s %8s\n", llm::matmul_kernel_name(kernels[k]), "n", "ms",
                "vs n=1", "GFLOP/s");
    for (size_t i = 0; i < ns.size(); ++i) {
      std::printf("%6lld %10.3f %8.2f %8.1f\n", static_cast<long long>(ns[i]), 1e3 * best[k][i],
                  best[k][i] / best[k][0], gflop_per_token * ns[i] / best[k][i]);
    }
  }
  return 0;
}
