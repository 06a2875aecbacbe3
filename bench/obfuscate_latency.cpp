// Two side-by-side latency measurements of obfuscated networks (docs/systems/obfuscate.md,
// "Decoy kernels"), each interleaving the clean and the obfuscated executor (paired medians of
// 101 runs a round, batch 1, 28 px, two threads unless --threads N):
//   bench_obfuscate_latency decoys
//       ResNet-18 (seed 0) with `count` decoys after every layer at several sizes: the cached
//       attacker's layer-sequence difference and the overhead.
//   bench_obfuscate_latency retime FILE MODEL [pin]
//       a saved obfuscated model against the clean MODEL (resnet18 or vgg11_bn, seed 0), two
//       rounds, then 10000 random images through the clean model in batches of 250, then four
//       rounds: the overhead before and after the process has run a large batched inference.
//       `pin` fixes glibc's mmap and trim thresholds (256 / 512 MB) first.
#include <fmt/format.h>
#include <malloc.h>
#include <torch/torch.h>

#include <string>

#include "tessera/core/runtime.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"
#include "tessera/obfuscate/bench.h"
#include "tessera/obfuscate/knobs.h"

using namespace tessera;
using namespace tessera::obfuscate;

namespace {

models::Model clean_model(const std::string& name) {
  models::ModelConfig config;
  config.name = name;
  config.in_channels = 1;
  config.image_size = 28;
  torch::manual_seed(0);
  models::Model m = models::create(config);
  m->eval();
  return m;
}

void decoys() {
  ObfuscateBenchOptions o;
  Attacker attacker = cached_attacker(o.attacker_recipe());
  models::Model model = clean_model("resnet18");
  const Net clean = from_model(model);
  const auto truth = true_sequence(clean);
  const auto x = torch::randn({1, 1, 28, 28});
  Executor ce(clean);
  fmt::print("clean: layer-sequence difference {}\n",
             edit_distance(attacker.predict_sequence(ce.trace(x, 3)), truth));
  for (int64_t shrink : {1, 4, 1000}) {
    for (int count : {1, 2, 4}) {
      Net net = clean;
      int added = 0;
      for (int64_t l : weighted_layers(clean)) {
        const std::string& name = clean.spec.nodes[l].name;
        if (!knob_blocker(net, Knob::decoy, name).empty()) continue;
        add_decoys(net, name, count, shrink);
        added += count;
      }
      Executor e(net);
      e.run(x);
      const int64_t diff = edit_distance(attacker.predict_sequence(e.trace(x, 3)), truth);
      const auto [a, b] = paired_latency_us(ce, e, x, 101);
      fmt::print(
          "shrink {:4d}, {} a layer ({:2d} decoys): difference {:3d}, clean {:.0f} us, overhead "
          "{:+.2f}%\n",
          shrink, count, added, diff, a, 100 * (b / a - 1));
    }
  }
}

void retime(const std::string& file, const std::string& model, bool pin) {
  if (pin) {
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
  }
  models::Model m = clean_model(model);
  models::Model saved = models::load(file);
  saved->eval();
  Executor a(from_model(m)), b(from_model(saved));
  const auto x = torch::randn({1, 1, 28, 28});
  for (int round = 0; round < 6; ++round) {
    if (round == 2) {
      torch::NoGradGuard no_grad;
      for (int k = 0; k < 40; ++k) m->forward(torch::randn({250, 1, 28, 28}));
      fmt::print("after 10000 images through the clean model:\n");
    }
    const auto [ta, tb] = paired_latency_us(a, b, x, 101);
    fmt::print("round {}: clean {:.0f} us, obfuscated {:.0f} us, overhead {:+.2f}%\n", round, ta,
               tb, 100 * (tb / ta - 1));
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string program = argv[0];
  int threads = 2;
  if (argc > 2 && std::string(argv[1]) == "--threads") {
    threads = std::stoi(argv[2]);
    argc -= 2;
    argv += 2;
  }
  init_runtime(threads);
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "decoys") {
    decoys();
  } else if (mode == "retime" && argc >= 4) {
    retime(argv[2], argv[3], argc > 4 && std::string(argv[4]) == "pin");
  } else {
    fmt::print(stderr, "usage: {} [--threads N] decoys | retime FILE MODEL [pin]\n", program);
    return 2;
  }
  return 0;
}
