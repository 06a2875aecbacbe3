// Training-step throughput of a Tessera model in C++ (LibTorch): images per second of
// forward + backward + SGD step at a fixed batch on random 1x32x32 data. Prints one JSON line.
// Paired with train_step.py (the same model in PyTorch's Python front end) by
// compare_train_throughput.sh, which runs both side by side.
#include <torch/torch.h>

#include <cstdio>
#include <string>

#include "tessera/core/runtime.h"
#include "tessera/core/timer.h"
#include "tessera/models/model_io.h"
#include "tessera/models/registry.h"

int main(int argc, char** argv) {
  std::string name = argc > 1 ? argv[1] : "resnet20";
  const int64_t batch = argc > 2 ? std::stoll(argv[2]) : 128;
  const int steps = argc > 3 ? std::stoi(argv[3]) : 20;
  const int threads = argc > 4 ? std::stoi(argv[4]) : 2;
  tessera::init_runtime(threads);
  torch::manual_seed(0);
  tessera::models::ModelConfig config;
  config.name = name;
  config.in_channels = 1;
  config.image_size = 32;
  config.num_classes = 10;
  auto model = tessera::models::create(config);
  model->train();
  torch::optim::SGD optimizer(model->parameters(),
                              torch::optim::SGDOptions(0.01).momentum(0.9).weight_decay(5e-4));
  auto images = torch::rand({batch, 1, 32, 32});
  auto labels = torch::randint(0, 10, {batch}, torch::kInt64);
  auto step = [&] {
    optimizer.zero_grad();
    auto loss = torch::nn::functional::cross_entropy(model->forward(images), labels);
    loss.backward();
    optimizer.step();
  };
  for (int i = 0; i < 3; ++i) step();  // warm-up
  tessera::Timer timer;
  for (int i = 0; i < steps; ++i) step();
  const double seconds = timer.elapsed_s();
  std::printf(
      "{\"frontend\": \"cpp\", \"model\": \"%s\", \"batch\": %lld, \"steps\": %d, "
      "\"threads\": %d, \"parameters\": %lld, \"images_per_second\": %.2f}\n",
      name.c_str(), static_cast<long long>(batch), steps, torch::get_num_threads(),
      static_cast<long long>(tessera::models::count_parameters(*model)),
      static_cast<double>(batch) * steps / seconds);
  return 0;
}
