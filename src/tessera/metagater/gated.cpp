// The gated Conv-4: parameters, the masked and the channel-skipping forward, MACs, the sparsity
// penalty.
#include "tessera/metagater/gated.h"

#include <cmath>

#include "tessera/core/error.h"

namespace tessera::metagater {

namespace {

constexpr double kBnEps = 1e-5;

torch::Tensor channel_view(const torch::Tensor& v) { return v.view({1, -1, 1, 1}); }

// Conv MACs a_{l-1} x a_l x 9 x H_l^2 per layer, the gate MLPs (when gated) and the head.
double macs_of(const GatedNetOptions& o, const std::vector<double>& active, bool gated) {
  TESSERA_CHECK(static_cast<int64_t>(active.size()) == o.layers,
                "macs: {} active counts for {} layers", active.size(), o.layers);
  double total = 0.0;
  double a_in = static_cast<double>(o.in_channels);
  const auto hidden = static_cast<double>(o.gate_hidden);
  int64_t s = o.image_size;
  for (size_t l = 0; l < active.size(); ++l) {
    const auto side = static_cast<double>(s);
    total += a_in * active[l] * 9.0 * side * side;
    if (gated) total += a_in * hidden + hidden * static_cast<double>(o.width);
    a_in = active[l];
    s /= 2;
  }
  return total + a_in * static_cast<double>(o.ways);
}

}  // namespace

void GatedNetOptions::validate() const {
  TESSERA_CHECK(in_channels > 0, "gated net: in_channels must be > 0 (got {})", in_channels);
  TESSERA_CHECK(width > 0, "gated net: width must be > 0 (got {})", width);
  TESSERA_CHECK(layers > 0 && layers <= 8, "gated net: layers must be in [1, 8] (got {})", layers);
  TESSERA_CHECK(ways >= 2, "gated net: ways must be >= 2 (got {})", ways);
  TESSERA_CHECK(gate_hidden > 0, "gated net: gate_hidden must be > 0 (got {})", gate_hidden);
  TESSERA_CHECK((image_size >> layers) >= 1,
                "gated net: image_size {} is too small for {} blocks of max pool 2", image_size,
                layers);
}

nlohmann::json GatedNetOptions::to_json() const {
  return {{"in_channels", in_channels},
          {"image_size", image_size},
          {"width", width},
          {"layers", layers},
          {"ways", ways},
          {"gated", gated},
          {"gate_hidden", gate_hidden},
          {"gate_bias_init", gate_bias_init}};
}

Params Params::clone() const {
  Params out;
  for (const auto& t : backbone) out.backbone.push_back(t.detach().clone());
  for (const auto& t : gates) out.gates.push_back(t.detach().clone());
  return out;
}

Params Params::leaves() const {
  Params out = clone();
  for (auto& t : out.backbone) t.requires_grad_(true);
  for (auto& t : out.gates) t.requires_grad_(true);
  return out;
}

std::vector<torch::Tensor> Params::all() const {
  std::vector<torch::Tensor> out = backbone;
  out.insert(out.end(), gates.begin(), gates.end());
  return out;
}

torch::Tensor ste_gate(const torch::Tensor& logits) {
  const torch::Tensor soft = torch::sigmoid(logits);
  const torch::Tensor hard = (logits > 0).to(logits.dtype());
  // hard + (soft - soft): exactly the hard value forward, the sigmoid's gradient backward.
  return hard + (soft - soft.detach());
}

GatedNetImpl::GatedNetImpl(GatedNetOptions options) : options_(std::move(options)) {
  options_.validate();
  const int64_t c = options_.width;
  int64_t c_in = options_.in_channels;
  for (int64_t l = 0; l < options_.layers; ++l) {
    auto w = torch::empty({c, c_in, 3, 3});
    torch::nn::init::kaiming_normal_(w, 0.0, torch::kFanIn, torch::kReLU);
    backbone_.push_back(register_parameter("conv" + std::to_string(l) + "_weight", w));
    backbone_.push_back(register_parameter("bn" + std::to_string(l) + "_weight", torch::ones({c})));
    backbone_.push_back(register_parameter("bn" + std::to_string(l) + "_bias", torch::zeros({c})));
    if (options_.gated) {
      const std::string g = "gate" + std::to_string(l);
      const int64_t h = options_.gate_hidden;
      auto w1 = torch::empty({h, c_in});
      torch::nn::init::kaiming_uniform_(w1, std::sqrt(5.0));
      gates_.push_back(register_parameter(g + "_fc1_weight", w1));
      gates_.push_back(register_parameter(g + "_fc1_bias", torch::zeros({h})));
      gates_.push_back(register_parameter(g + "_fc2_weight", torch::randn({c, h}) * 0.01));
      gates_.push_back(
          register_parameter(g + "_fc2_bias", torch::full({c}, options_.gate_bias_init)));
    }
    c_in = c;
  }
  const double bound = 1.0 / std::sqrt(static_cast<double>(c));
  backbone_.push_back(
      register_parameter("head_weight", torch::rand({options_.ways, c}) * 2 * bound - bound));
  backbone_.push_back(register_parameter("head_bias", torch::zeros({options_.ways})));
}

Params GatedNetImpl::params() const { return {backbone_, gates_}; }

void GatedNetImpl::load(const Params& values) {
  TESSERA_CHECK(values.backbone.size() == backbone_.size() && values.gates.size() == gates_.size(),
                "gated net: {} backbone and {} gate tensors given, the net has {} and {}",
                values.backbone.size(), values.gates.size(), backbone_.size(), gates_.size());
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < backbone_.size(); ++i) {
    TESSERA_CHECK(values.backbone[i].sizes() == backbone_[i].sizes(),
                  "gated net: backbone tensor {} has the wrong shape", i);
    backbone_[i].copy_(values.backbone[i]);
  }
  for (size_t i = 0; i < gates_.size(); ++i) {
    TESSERA_CHECK(values.gates[i].sizes() == gates_[i].sizes(),
                  "gated net: gate tensor {} has the wrong shape", i);
    gates_[i].copy_(values.gates[i]);
  }
}

ForwardOut GatedNetImpl::forward(const Params& p, const torch::Tensor& x, int64_t n_stats,
                                 GateMode mode, double threshold, const BnStats* stats,
                                 BnStats* stats_out) const {
  TESSERA_CHECK(x.dim() == 4 && x.size(1) == options_.in_channels,
                "gated net: input must be [B, {}, H, W]", options_.in_channels);
  TESSERA_CHECK(stats != nullptr || (n_stats > 0 && n_stats <= x.size(0)),
                "gated net: n_stats {} must be in [1, {}]", n_stats, x.size(0));
  if (stats_out) *stats_out = BnStats{};
  ForwardOut out;
  torch::Tensor h = x;
  for (int64_t l = 0; l < options_.layers; ++l) {
    const auto b = static_cast<size_t>(3 * l);
    torch::Tensor gate;
    if (options_.gated) {
      const auto g = static_cast<size_t>(4 * l);
      const torch::Tensor pooled = h.mean({2, 3});
      const torch::Tensor hidden =
          torch::relu(torch::addmm(p.gates[g + 1], pooled, p.gates[g].t()));
      const torch::Tensor logits = torch::addmm(p.gates[g + 3], hidden, p.gates[g + 2].t());
      gate = mode == GateMode::train ? ste_gate(logits) : (logits > threshold).to(logits.dtype());
    } else {
      gate = torch::ones({h.size(0), options_.width}, h.options());
    }
    torch::Tensor y = torch::conv2d(h, p.backbone[b], {}, 1, 1);
    torch::Tensor mean, var;
    if (stats) {
      mean = stats->mean[static_cast<size_t>(l)];
      var = stats->var[static_cast<size_t>(l)];
    } else {
      const torch::Tensor support = y.narrow(0, 0, n_stats);
      mean = support.mean({0, 2, 3});
      var = (support - channel_view(mean)).pow(2).mean({0, 2, 3});
    }
    if (stats_out) {
      stats_out->mean.push_back(mean.detach());
      stats_out->var.push_back(var.detach());
    }
    y = (y - channel_view(mean)) * channel_view(torch::rsqrt(var + kBnEps) * p.backbone[b + 1]) +
        channel_view(p.backbone[b + 2]);
    y = torch::max_pool2d(torch::relu(y), 2);
    h = y * gate.view({gate.size(0), gate.size(1), 1, 1});
    out.gates.push_back(gate);
  }
  const size_t head = static_cast<size_t>(3 * options_.layers);
  out.logits = torch::addmm(p.backbone[head + 1], h.mean({2, 3}), p.backbone[head].t());
  return out;
}

torch::Tensor GatedNetImpl::forward_skip(const Params& p, const torch::Tensor& x,
                                         const BnStats& stats, double threshold) const {
  TESSERA_CHECK(x.dim() == 4 && x.size(0) == 1, "forward_skip: one image [1, C, H, W]");
  torch::Tensor h = x;
  torch::Tensor in_idx = torch::arange(options_.in_channels, torch::kLong);
  for (int64_t l = 0; l < options_.layers; ++l) {
    const auto b = static_cast<size_t>(3 * l);
    const bool no_input = in_idx.numel() == 0;
    torch::Tensor out_idx;
    if (options_.gated) {
      const auto g = static_cast<size_t>(4 * l);
      torch::Tensor hidden = no_input ? p.gates[g + 1].unsqueeze(0)
                                      : torch::addmm(p.gates[g + 1], h.mean({2, 3}),
                                                     p.gates[g].index_select(1, in_idx).t());
      hidden = torch::relu(hidden);
      const torch::Tensor logits = torch::addmm(p.gates[g + 3], hidden, p.gates[g + 2].t());
      out_idx = (logits[0] > threshold).nonzero().flatten();
    } else {
      out_idx = torch::arange(options_.width, torch::kLong);
    }
    const int64_t size = h.size(2);
    if (out_idx.numel() == 0) {
      h = torch::zeros({1, 0, size / 2, size / 2});
      in_idx = out_idx;
      continue;
    }
    const auto& mean = stats.mean[static_cast<size_t>(l)];
    const auto& var = stats.var[static_cast<size_t>(l)];
    torch::Tensor scale = torch::rsqrt(var + kBnEps) * p.backbone[b + 1];
    torch::Tensor shift = p.backbone[b + 2] - mean * scale;
    if (options_.gated) {
      scale = scale.index_select(0, out_idx);
      shift = shift.index_select(0, out_idx);
    }
    torch::Tensor y;
    if (no_input) {
      y = channel_view(shift).expand({1, out_idx.numel(), size, size});
    } else {
      // The plain network runs its full weights (no gather), as a deployed dense model would.
      const torch::Tensor w = options_.gated
                                  ? p.backbone[b].index_select(0, out_idx).index_select(1, in_idx)
                                  : p.backbone[b];
      y = torch::conv2d(h, w, {}, 1, 1) * channel_view(scale) + channel_view(shift);
    }
    h = torch::max_pool2d(torch::relu(y), 2);
    in_idx = out_idx;
  }
  const size_t head = static_cast<size_t>(3 * options_.layers);
  if (in_idx.numel() == 0) return p.backbone[head + 1].unsqueeze(0).clone();
  const torch::Tensor w_head =
      options_.gated ? p.backbone[head].index_select(1, in_idx) : p.backbone[head];
  return torch::addmm(p.backbone[head + 1], h.mean({2, 3}), w_head.t());
}

std::vector<int64_t> GatedNetImpl::spatial() const {
  std::vector<int64_t> out;
  int64_t s = options_.image_size;
  for (int64_t l = 0; l < options_.layers; ++l) {
    out.push_back(s);
    s /= 2;
  }
  return out;
}

double GatedNetImpl::macs(const std::vector<double>& active) const {
  return macs_of(options_, active, options_.gated);
}

double GatedNetImpl::dense_macs() const {
  return macs_of(options_,
                 std::vector<double>(static_cast<size_t>(options_.layers),
                                     static_cast<double>(options_.width)),
                 /*gated=*/false);
}

torch::Tensor sparsity_penalty(const std::vector<torch::Tensor>& gates, double target_rate) {
  TESSERA_CHECK(!gates.empty(), "sparsity_penalty: no gates");
  torch::Tensor total = torch::zeros({}, gates.front().options());
  for (const auto& g : gates) total = total + (g.mean() - target_rate).pow(2);
  return total / static_cast<double>(gates.size());
}

}  // namespace tessera::metagater
