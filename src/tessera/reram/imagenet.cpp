// ImageNet-shaped ResNet-50 and MobileNetV2 workloads and the resampling of trained weights onto
// them (RECONSTRUCTED: the paper used ImageNet-trained weights, which cannot be trained here).
#include "tessera/reram/imagenet.h"

#include <cmath>
#include <map>

#include "tessera/core/error.h"
#include "tessera/core/seed.h"

namespace tessera::reram {

namespace {

int64_t conv_out(int64_t in, int64_t k, int64_t stride, int64_t pad) {
  return (in + 2 * pad - k) / stride + 1;
}

void add_linear(workload::Workload& w, const std::string& name, int64_t in_f, int64_t out_f) {
  workload::Layer l;
  l.name = name;
  l.kind = workload::OpKind::Linear;
  l.in_channels = in_f;
  l.out_channels = out_f;
  w.layers.push_back(l);
}

}  // namespace

workload::Workload resnet50_imagenet() {
  workload::Workload w;
  w.model = "resnet50-imagenet";
  w.input_shape = {3, 224, 224};
  int64_t side = workload::append_conv(w, "conv1", 3, 64, 7, 2, 224);
  side = conv_out(side, 3, 2, 1);  // 3x3/2 max pool: 112 -> 56
  int64_t in_c = 64;
  const int64_t blocks[4] = {3, 4, 6, 3};
  const int64_t widths[4] = {64, 128, 256, 512};
  for (int stage = 0; stage < 4; ++stage) {
    for (int64_t b = 0; b < blocks[stage]; ++b) {
      const std::string p = fmt::format("layer{}.{}.", stage + 1, b);
      const int64_t width = widths[stage], out_c = 4 * widths[stage];
      const int64_t stride = (b == 0 && stage > 0) ? 2 : 1;
      workload::append_conv(w, p + "conv1", in_c, width, 1, 1, side);
      const int64_t out_side = workload::append_conv(w, p + "conv2", width, width, 3, stride, side);
      workload::append_conv(w, p + "conv3", width, out_c, 1, 1, out_side);
      if (b == 0) workload::append_conv(w, p + "downsample", in_c, out_c, 1, stride, side);
      in_c = out_c;
      side = out_side;
    }
  }
  add_linear(w, "fc", 2048, 1000);
  w.validate();
  return w;
}

workload::Workload mobilenetv2_imagenet() {
  workload::Workload w;
  w.model = "mobilenetv2-imagenet";
  w.input_shape = {3, 224, 224};
  int64_t side = workload::append_conv(w, "features.0", 3, 32, 3, 2, 224);
  int64_t in_c = 32;
  // (expansion t, channels c, repeats n, first stride s) of MobileNetV2 Table 2.
  const int64_t settings[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                                  {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
  int block = 1;
  for (const auto& s : settings) {
    for (int64_t i = 0; i < s[2]; ++i, ++block) {
      const std::string p = fmt::format("features.{}.", block);
      const int64_t hidden = in_c * s[0];
      if (s[0] != 1) workload::append_conv(w, p + "expand", in_c, hidden, 1, 1, side);
      side = workload::append_conv(w, p + "depthwise", hidden, hidden, 3, i == 0 ? s[3] : 1, side,
                                   hidden);
      workload::append_conv(w, p + "project", hidden, s[1], 1, 1, side);
      in_c = s[1];
    }
  }
  workload::append_conv(w, "features.18", 320, 1280, 1, 1, side);
  add_linear(w, "classifier", 1280, 1000);
  w.validate();
  return w;
}

std::string imagenet_network_name(ImagenetNetwork network) {
  return network == ImagenetNetwork::ResNet50 ? "resnet50" : "mobilenetv2";
}

ImagenetNetwork parse_imagenet_network(const std::string& name) {
  if (name == "resnet50") return ImagenetNetwork::ResNet50;
  if (name == "mobilenetv2") return ImagenetNetwork::MobileNetV2;
  TESSERA_CHECK(false, "reram: unknown ImageNet network '{}' (one of: resnet50, mobilenetv2)",
                name);
  return ImagenetNetwork::ResNet50;
}

workload::Workload imagenet_workload(ImagenetNetwork network) {
  return network == ImagenetNetwork::ResNet50 ? resnet50_imagenet() : mobilenetv2_imagenet();
}

WeightClass weight_class(const workload::Layer& layer, bool first_layer) {
  if (layer.kind == workload::OpKind::Linear) return WeightClass::Linear;
  if (first_layer) return WeightClass::Stem;
  if (layer.groups > 1 && layer.groups == layer.in_channels) return WeightClass::Depthwise;
  if (layer.kernel_h == 1 && layer.kernel_w == 1) return WeightClass::Pointwise;
  return WeightClass::Dense;
}

std::vector<torch::Tensor> synthesize_weights(const workload::Workload& target,
                                              const WeightDonor& donor, uint64_t seed) {
  TESSERA_CHECK(donor.layers.size() == donor.weights.size(),
                "reram: weight donor has {} layers but {} tensors", donor.layers.size(),
                donor.weights.size());
  // Crossbar rows of the donor, by weight class: row (g, r) holds the outputs of group g.
  std::map<WeightClass, std::vector<std::vector<float>>> rows;
  for (size_t i = 0; i < donor.layers.size(); ++i) {
    const workload::Layer& l = donor.layers[i];
    const torch::Tensor wt = donor.weights[i].to(torch::kFloat32).contiguous();
    const int64_t groups = l.kind == workload::OpKind::Conv2d ? l.groups : 1;
    const int64_t R = l.weight_rows(), C = l.out_channels / groups;
    TESSERA_CHECK(wt.numel() == l.out_channels * R,
                  "reram: donor weight {} has {} values, layer '{}' needs {}", i, wt.numel(),
                  l.name, l.out_channels * R);
    const float* p = wt.data_ptr<float>();
    auto& pool = rows[weight_class(l, i == 0)];
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t r = 0; r < R; ++r) {
        std::vector<float> row(C);
        for (int64_t o = 0; o < C; ++o) row[o] = p[(g * C + o) * R + r];
        pool.push_back(std::move(row));
      }
    }
  }
  std::mt19937_64 rng = make_rng(seed, 0x5e5e);
  std::vector<torch::Tensor> out;
  const std::vector<workload::Layer> layers = target.weighted_layers();
  for (size_t i = 0; i < layers.size(); ++i) {
    const workload::Layer& l = layers[i];
    const int64_t groups = l.kind == workload::OpKind::Conv2d ? l.groups : 1;
    const int64_t R = l.weight_rows(), C = l.out_channels / groups;
    const std::vector<std::vector<float>>* pool = nullptr;
    // Fall back to dense 3x3 rows, then to any trained rows, when the donor lacks the class.
    for (WeightClass cls : {weight_class(l, i == 0), WeightClass::Dense}) {
      if (!pool && rows.count(cls) && !rows[cls].empty()) pool = &rows[cls];
    }
    for (auto& [cls, candidate] : rows) {
      if (!pool && !candidate.empty()) pool = &candidate;
    }
    torch::Tensor w = torch::empty({l.out_channels, R}, torch::kFloat32);
    float* p = w.data_ptr<float>();
    const double he_scale = std::sqrt(2.0 / static_cast<double>(R));
    std::exponential_distribution<double> laplace_magnitude(1.0 / (he_scale / std::sqrt(2.0)));
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t r = 0; r < R; ++r) {
        const std::vector<float>* source = nullptr;
        if (pool) source = &(*pool)[rng() % pool->size()];
        for (int64_t o = 0; o < C; ++o) {
          float v;
          if (source) {
            v = (*source)[rng() % source->size()];
          } else {
            const double m = laplace_magnitude(rng);
            v = static_cast<float>((rng() & 1) ? m : -m);
          }
          p[(g * C + o) * R + r] = v;
        }
      }
    }
    if (l.kind == workload::OpKind::Conv2d) {
      w = w.view({l.out_channels, l.in_channels / groups, l.kernel_h, l.kernel_w});
    }
    out.push_back(w);
  }
  return out;
}

std::string architecture_mismatch(const workload::Workload& target, const WeightDonor& donor) {
  const std::vector<workload::Layer> layers = target.weighted_layers();
  if (layers.size() != donor.layers.size()) {
    return fmt::format("{} weighted layers in the donor, {} in the target", donor.layers.size(),
                       layers.size());
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    const workload::Layer& t = layers[i];
    const workload::Layer& d = donor.layers[i];
    const bool first = i == 0, last = i + 1 == layers.size();
    const bool same_in = t.in_channels == d.in_channels || first;
    const bool same_out =
        t.out_channels == d.out_channels || (last && t.kind == workload::OpKind::Linear);
    if (t.kind != d.kind || t.kernel_h != d.kernel_h || t.kernel_w != d.kernel_w ||
        t.groups != d.groups || !same_in || !same_out) {
      return fmt::format(
          "layer {} ('{}' in the target, '{}' in the donor) differs: {} {}x{} {}->{} "
          "groups {} against {} {}x{} {}->{} groups {}",
          i, t.name, d.name, workload::to_string(t.kind), t.kernel_h, t.kernel_w, t.in_channels,
          t.out_channels, t.groups, workload::to_string(d.kind), d.kernel_h, d.kernel_w,
          d.in_channels, d.out_channels, d.groups);
    }
  }
  return "";
}

std::vector<torch::Tensor> same_architecture_weights(const workload::Workload& target,
                                                     const WeightDonor& donor, uint64_t seed) {
  TESSERA_CHECK(donor.layers.size() == donor.weights.size(),
                "reram: weight donor has {} layers but {} tensors", donor.layers.size(),
                donor.weights.size());
  const std::string mismatch = architecture_mismatch(target, donor);
  TESSERA_CHECK(mismatch.empty(), "reram: the donor is not of the target's architecture: {}",
                mismatch);
  std::mt19937_64 rng = make_rng(seed, 0x5a3e);
  const std::vector<workload::Layer> layers = target.weighted_layers();
  std::vector<torch::Tensor> out;
  for (size_t i = 0; i < layers.size(); ++i) {
    const workload::Layer& l = layers[i];
    torch::Tensor w = donor.weights[i].detach().to(torch::kFloat32).contiguous();
    if (l.kind == workload::OpKind::Conv2d) {
      w = w.view({donor.layers[i].out_channels, -1, l.kernel_h, l.kernel_w});
      const int64_t trained_in = w.size(1), wanted_in = l.in_channels / l.groups;
      if (trained_in != wanted_in) {
        std::vector<int64_t> index(wanted_in);
        for (int64_t c = 0; c < wanted_in; ++c) index[c] = c % trained_in;
        w = w.index_select(1, torch::tensor(index, torch::kInt64));
      }
    } else {
      w = w.view({donor.layers[i].out_channels, donor.layers[i].in_channels});
      if (w.size(0) != l.out_channels) {
        // [out, in]: crossbar row r is column r here; each new output draws from that row.
        const int64_t trained_out = w.size(0), rows = w.size(1);
        torch::Tensor drawn = torch::empty({l.out_channels, rows}, torch::kFloat32);
        const float* src = w.data_ptr<float>();
        float* dst = drawn.data_ptr<float>();
        for (int64_t o = 0; o < l.out_channels; ++o) {
          for (int64_t r = 0; r < rows; ++r) {
            dst[o * rows + r] = src[static_cast<int64_t>(rng() % trained_out) * rows + r];
          }
        }
        w = drawn;
      }
    }
    out.push_back(w.contiguous().clone());
  }
  return out;
}

std::vector<quant::QuantizedTensor> quantize_all(const workload::Workload& target,
                                                 const std::vector<torch::Tensor>& weights,
                                                 int bits) {
  const std::vector<workload::Layer> layers = target.weighted_layers();
  TESSERA_CHECK(layers.size() == weights.size(), "reram: {} weight tensors for {} layers",
                weights.size(), layers.size());
  std::vector<quant::QuantizedTensor> out;
  for (size_t i = 0; i < layers.size(); ++i) {
    out.push_back(quant::quantize(layers[i].name + ".weight", weights[i], bits));
  }
  return out;
}

}  // namespace tessera::reram
