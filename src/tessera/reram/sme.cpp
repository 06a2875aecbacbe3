// SME on a whole network: quantize, project, map every step combination, evaluate accuracy.
#include "tessera/reram/sme.h"

#include "tessera/core/error.h"
#include "tessera/core/timer.h"
#include "tessera/models/registry.h"
#include "tessera/train/train.h"

namespace tessera::reram {

std::string SmeOptions::describe() const {
  std::string s = bit_sparse ? "bit-sparse(" + quantizer.describe() + ")" : "uniform";
  return s + "+" + mapping().describe();
}

std::vector<quant::QuantizedTensor> quantize_model(models::Model& model,
                                                   const workload::Workload& workload, int bits) {
  std::vector<quant::QuantizedTensor> all = quant::quantize_module(*model, bits);
  const std::vector<workload::Layer> layers = workload.weighted_layers();
  TESSERA_CHECK(all.size() == layers.size(),
                "reram: model '{}' has {} weight tensors but its workload has {} weighted layers",
                workload.model, all.size(), layers.size());
  for (size_t i = 0; i < layers.size(); ++i) {
    const torch::Tensor& v = all[i].values;
    TESSERA_CHECK(v.dim() >= 2 && v.size(0) == layers[i].out_channels &&
                      v.numel() == layers[i].out_channels * layers[i].weight_rows(),
                  "reram: weight '{}' {} does not match workload layer '{}'", all[i].name,
                  c10::str(v.sizes()), layers[i].name);
  }
  return all;
}

std::vector<quant::QuantizedTensor> bit_sparse_all(
    const workload::Workload& workload, const std::vector<quant::QuantizedTensor>& uniform,
    const BitSparseOptions& options) {
  const std::vector<workload::Layer> layers = workload.weighted_layers();
  TESSERA_CHECK(layers.size() == uniform.size(), "reram: {} weight tensors for {} layers",
                uniform.size(), layers.size());
  std::vector<quant::QuantizedTensor> out;
  out.reserve(uniform.size());
  for (size_t i = 0; i < uniform.size(); ++i) {
    const int64_t groups = layers[i].kind == workload::OpKind::Conv2d ? layers[i].groups : 1;
    out.push_back(bit_sparse_quantize(uniform[i], options, groups));
  }
  return out;
}

std::vector<AblationRow> ablation(const workload::Workload& workload,
                                  const std::vector<quant::QuantizedTensor>& uniform,
                                  const std::vector<quant::QuantizedTensor>& sparse,
                                  const HardwareSpec& spec) {
  std::vector<AblationRow> rows;
  // Order: baseline, single steps, pairs, all three.
  const int order[8] = {0, 4, 2, 1, 6, 5, 3, 7};  // bits: 4 = bit-sparse, 2 = splice, 1 = squeeze
  for (int code : order) {
    AblationRow row;
    row.bit_sparse = code & 4;
    row.splice = code & 2;
    row.squeeze = code & 1;
    const NetworkStats net = map_network(workload, row.bit_sparse ? sparse : uniform, spec,
                                         MappingOptions{row.splice, row.squeeze});
    row.crossbars = net.total.crossbars;
    row.seconds = net.map_seconds;
    row.reduction = rows.empty() ? 1.0
                                 : static_cast<double>(rows.front().crossbars) /
                                       static_cast<double>(std::max<int64_t>(row.crossbars, 1));
    rows.push_back(row);
  }
  return rows;
}

double quantized_accuracy(models::Model& model, const std::vector<quant::QuantizedTensor>& weights,
                          const data::Dataset& test_set) {
  models::Model copy = models::clone(model);
  quant::load_into_module(weights, *copy);
  return train::evaluate(copy, test_set).accuracy;
}

data::Dataset load_fashion_mnist_at(const std::string& split, const std::string& dir,
                                    int64_t image_size) {
  TESSERA_CHECK(image_size >= 4 && image_size <= 1024,
                "reram: Fashion-MNIST image size {} must be in [4, 1024]", image_size);
  if (image_size >= 28) return data::load_fashion_mnist(split, dir, image_size);
  data::Dataset d = data::load_fashion_mnist(split, dir, 28);
  d.images = torch::adaptive_avg_pool2d(d.images, {image_size, image_size}).contiguous();
  return d;
}

models::Model train_fashion_model(const DonorTraining& options, const data::Dataset& train_set,
                                  const data::Dataset* test_set) {
  models::ModelConfig config;
  config.name = options.arch;
  config.in_channels = 1;
  config.image_size = options.image_size;
  config.num_classes = 10;
  config.width_mult = options.width_mult;
  models::Model model = models::create(config);
  train::TrainOptions t;
  t.epochs = options.epochs;
  t.batch_size = 128;
  t.lr = 0.05;
  t.augment_pad = 0;  // small inputs: no random crops
  t.augment_flip = false;
  t.seed = options.seed;
  t.progress_label = "train " + options.arch;
  const data::Dataset subset = options.train_images > 0 && options.train_images < train_set.size()
                                   ? train_set.head(options.train_images)
                                   : train_set;
  train::fit(model, subset, test_set, t);
  model->eval();
  return model;
}

}  // namespace tessera::reram
