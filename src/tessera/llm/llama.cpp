// Llama-style decoder: the autograd training forward and the batch-invariant inference engine.
#include "tessera/llm/llama.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <unordered_set>

#ifdef __linux__
#include <sys/mman.h>
#endif

#include "tessera/core/error.h"
#include "tessera/core/json.h"
#include "tessera/core/timer.h"
#include "tessera/llm/kernels.h"

namespace tessera::llm {

std::string rope_style_name(RopeStyle style) { return style == RopeStyle::kNeox ? "neox" : "gptj"; }

RopeStyle parse_rope_style(const std::string& name) {
  if (name == "neox") return RopeStyle::kNeox;
  if (name == "gptj") return RopeStyle::kGptj;
  TESSERA_CHECK(false, "unknown rope style '{}' (expected neox or gptj)", name);
  return RopeStyle::kNeox;
}

void LlamaConfig::validate() const {
  TESSERA_CHECK(vocab_size > 0, "llama: vocab_size must be positive, got {}", vocab_size);
  TESSERA_CHECK(dim > 0, "llama: dim must be positive, got {}", dim);
  TESSERA_CHECK(n_layers > 0, "llama: n_layers must be positive, got {}", n_layers);
  TESSERA_CHECK(n_heads > 0, "llama: n_heads must be positive, got {}", n_heads);
  TESSERA_CHECK(n_kv_heads > 0 && n_heads % n_kv_heads == 0,
                "llama: n_kv_heads {} must be positive and divide n_heads {}", n_kv_heads, n_heads);
  TESSERA_CHECK(head_dim >= 0, "llama: head_dim must be >= 0, got {}", head_dim);
  TESSERA_CHECK(head_dim > 0 || dim % n_heads == 0,
                "llama: dim {} is not divisible by n_heads {} (set head_dim)", dim, n_heads);
  TESSERA_CHECK(resolved_head_dim() % 2 == 0, "llama: head_dim {} must be even for RoPE",
                resolved_head_dim());
  TESSERA_CHECK(hidden_dim > 0, "llama: hidden_dim must be positive, got {}", hidden_dim);
  TESSERA_CHECK(max_seq_len > 0, "llama: max_seq_len must be positive, got {}", max_seq_len);
  TESSERA_CHECK(rms_eps > 0, "llama: rms_eps must be positive, got {}", rms_eps);
  TESSERA_CHECK(rope_theta > 0, "llama: rope_theta must be positive, got {}", rope_theta);
}

nlohmann::json LlamaConfig::to_json() const {
  return {{"vocab_size", vocab_size},
          {"dim", dim},
          {"n_layers", n_layers},
          {"n_heads", n_heads},
          {"n_kv_heads", n_kv_heads},
          {"head_dim", head_dim},
          {"hidden_dim", hidden_dim},
          {"max_seq_len", max_seq_len},
          {"rms_eps", rms_eps},
          {"rope_theta", rope_theta},
          {"rope_style", rope_style_name(rope_style)},
          {"qkv_bias", qkv_bias},
          {"qk_norm", qk_norm},
          {"tie_embeddings", tie_embeddings}};
}

LlamaConfig LlamaConfig::from_json(const nlohmann::json& json) {
  TESSERA_CHECK(json.is_object(), "llama config must be a JSON object, got {}", json_excerpt(json));
  // Sizes must be JSON integers: get<int64_t>() would truncate 2.5 to 2.
  const auto integer = [](const nlohmann::json& value, const std::string& key) {
    return json_integer(value, "llama config '" + key + "'", 0, int64_t{1} << 40);
  };
  LlamaConfig c;
  for (const auto& [key, value] : json.items()) {
    try {
      if (key == "vocab_size")
        c.vocab_size = integer(value, key);
      else if (key == "dim")
        c.dim = integer(value, key);
      else if (key == "n_layers")
        c.n_layers = integer(value, key);
      else if (key == "n_heads")
        c.n_heads = integer(value, key);
      else if (key == "n_kv_heads")
        c.n_kv_heads = integer(value, key);
      else if (key == "head_dim")
        c.head_dim = integer(value, key);
      else if (key == "hidden_dim")
        c.hidden_dim = integer(value, key);
      else if (key == "max_seq_len")
        c.max_seq_len = integer(value, key);
      else if (key == "rms_eps")
        c.rms_eps = value.get<double>();
      else if (key == "rope_theta")
        c.rope_theta = value.get<double>();
      else if (key == "rope_style")
        c.rope_style = parse_rope_style(value.get<std::string>());
      else if (key == "qkv_bias")
        c.qkv_bias = value.get<bool>();
      else if (key == "qk_norm")
        c.qk_norm = value.get<bool>();
      else if (key == "tie_embeddings")
        c.tie_embeddings = value.get<bool>();
      else
        TESSERA_CHECK(false, "llama config: unknown key '{}'", key);
    } catch (const nlohmann::json::exception& e) {
      TESSERA_CHECK(false, "llama config: bad value for '{}': {}", key, json_excerpt(value));
    }
  }
  c.validate();
  return c;
}

int64_t LlamaConfig::n_params() const {
  const int64_t hd = resolved_head_dim();
  const int64_t q = n_heads * hd, kv = n_kv_heads * hd;
  int64_t per_layer = 2 * dim + dim * q + 2 * dim * kv + q * dim + 3 * dim * hidden_dim;
  if (qkv_bias) per_layer += q + 2 * kv;
  if (qk_norm) per_layer += 2 * hd;
  int64_t total = vocab_size * dim + dim + n_layers * per_layer;
  if (!tie_embeddings) total += vocab_size * dim;
  return total;
}

namespace {

torch::Tensor rms_norm(const torch::Tensor& x, const torch::Tensor& w, double eps) {
  return x * torch::rsqrt(x.pow(2).mean(-1, /*keepdim=*/true) + eps) * w;
}

// x: [B, T, H, hd]; cos/sin: [T, hd/2].
torch::Tensor apply_rope(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                         RopeStyle style) {
  const int64_t half = x.size(3) / 2;
  auto c = cos.view({1, cos.size(0), 1, half});
  auto s = sin.view({1, sin.size(0), 1, half});
  if (style == RopeStyle::kNeox) {
    auto x1 = x.narrow(3, 0, half);
    auto x2 = x.narrow(3, half, half);
    return torch::cat({x1 * c - x2 * s, x1 * s + x2 * c}, 3);
  }
  auto xr = x.reshape({x.size(0), x.size(1), x.size(2), half, 2});
  auto x1 = xr.select(4, 0);
  auto x2 = xr.select(4, 1);
  return torch::stack({x1 * c - x2 * s, x1 * s + x2 * c}, 4).flatten(3);
}

}  // namespace

LlamaImpl::LlamaImpl(LlamaConfig config) : config_(std::move(config)) {
  config_.validate();
  const auto& c = config_;
  const int64_t hd = c.resolved_head_dim();
  const int64_t q = c.n_heads * hd, kv = c.n_kv_heads * hd;
  const double std = 0.02;
  // GPT-2-style scaled init of the projections that write into the residual stream.
  const double out_std = std / std::sqrt(2.0 * static_cast<double>(c.n_layers));
  auto normal = [](std::vector<int64_t> shape, double s) { return torch::randn(shape) * s; };
  tok_embeddings_ = register_parameter("tok_embeddings", normal({c.vocab_size, c.dim}, std));
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string p = "layers_" + std::to_string(l) + "_";
    LlamaLayerWeights w;
    w.attn_norm = register_parameter(p + "attn_norm", torch::ones({c.dim}));
    w.wq = register_parameter(p + "wq", normal({q, c.dim}, std));
    w.wk = register_parameter(p + "wk", normal({kv, c.dim}, std));
    w.wv = register_parameter(p + "wv", normal({kv, c.dim}, std));
    w.wo = register_parameter(p + "wo", normal({c.dim, q}, out_std));
    if (c.qkv_bias) {
      w.bq = register_parameter(p + "bq", torch::zeros({q}));
      w.bk = register_parameter(p + "bk", torch::zeros({kv}));
      w.bv = register_parameter(p + "bv", torch::zeros({kv}));
    }
    if (c.qk_norm) {
      w.q_norm = register_parameter(p + "q_norm", torch::ones({hd}));
      w.k_norm = register_parameter(p + "k_norm", torch::ones({hd}));
    }
    w.ffn_norm = register_parameter(p + "ffn_norm", torch::ones({c.dim}));
    w.w_gate = register_parameter(p + "w_gate", normal({c.hidden_dim, c.dim}, std));
    w.w_up = register_parameter(p + "w_up", normal({c.hidden_dim, c.dim}, std));
    w.w_down = register_parameter(p + "w_down", normal({c.dim, c.hidden_dim}, out_std));
    layers_.push_back(w);
  }
  final_norm_ = register_parameter("norm", torch::ones({c.dim}));
  if (!c.tie_embeddings) output_ = register_parameter("output", normal({c.vocab_size, c.dim}, std));

  // RoPE tables in double, stored as float32: inv_freq_i = theta^(-2i/hd).
  auto pos = torch::arange(c.max_seq_len, torch::kFloat64).unsqueeze(1);
  auto i = torch::arange(hd / 2, torch::kFloat64).unsqueeze(0);
  auto inv_freq = torch::pow(c.rope_theta, -2.0 * i / static_cast<double>(hd));
  auto angle = pos * inv_freq;
  rope_cos_ = torch::cos(angle).to(torch::kFloat32).contiguous();
  rope_sin_ = torch::sin(angle).to(torch::kFloat32).contiguous();
}

std::vector<std::pair<std::string, torch::Tensor>> LlamaImpl::named_weights() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  out.emplace_back("tok_embeddings", tok_embeddings_);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const auto& w = layers_[l];
    const std::string p = "layers." + std::to_string(l) + ".";
    out.emplace_back(p + "attn_norm", w.attn_norm);
    out.emplace_back(p + "wq", w.wq);
    out.emplace_back(p + "wk", w.wk);
    out.emplace_back(p + "wv", w.wv);
    out.emplace_back(p + "wo", w.wo);
    if (config_.qkv_bias) {
      out.emplace_back(p + "bq", w.bq);
      out.emplace_back(p + "bk", w.bk);
      out.emplace_back(p + "bv", w.bv);
    }
    if (config_.qk_norm) {
      out.emplace_back(p + "q_norm", w.q_norm);
      out.emplace_back(p + "k_norm", w.k_norm);
    }
    out.emplace_back(p + "ffn_norm", w.ffn_norm);
    out.emplace_back(p + "w_gate", w.w_gate);
    out.emplace_back(p + "w_up", w.w_up);
    out.emplace_back(p + "w_down", w.w_down);
  }
  out.emplace_back("norm", final_norm_);
  if (!config_.tie_embeddings) out.emplace_back("output", output_);
  return out;
}

void LlamaImpl::move_weights_to_huge_pages() {
#ifdef __linux__
  if (in_huge_pages_) return;
  constexpr size_t kHuge = size_t{2} << 20;
  auto round_up = [](size_t n, size_t a) { return (n + a - 1) / a * a; };
  std::vector<torch::Tensor> weights;
  std::unordered_set<const void*> seen;  // tied embeddings appear once
  size_t total = 0;
  for (auto& [name, w] : named_weights()) {
    if (!w.is_contiguous() || w.scalar_type() != torch::kFloat32 ||
        !seen.insert(w.data_ptr()).second)
      continue;
    weights.push_back(w);
    total += round_up(w.nbytes(), 64);
  }
  const size_t size = round_up(std::max<size_t>(total, 1), kHuge);
  void* raw = std::aligned_alloc(kHuge, size);
  TESSERA_CHECK(raw != nullptr, "llama: cannot allocate {} bytes for the weights", size);
  madvise(raw, size, MADV_HUGEPAGE);  // advice only: without THP the arena still works
  const std::shared_ptr<void> arena(raw, std::free);
  torch::NoGradGuard no_grad;
  size_t offset = 0;
  for (auto& w : weights) {
    // Every view keeps the arena alive through its deleter.
    torch::Tensor view = torch::from_blob(
        static_cast<char*>(raw) + offset, w.sizes(), [arena](void*) {}, torch::kFloat32);
    view.copy_(w);
    w.set_data(view);
    offset += round_up(w.nbytes(), 64);
  }
  in_huge_pages_ = true;
#endif
}

torch::Tensor LlamaImpl::forward(const torch::Tensor& tokens) {
  TESSERA_CHECK(tokens.dim() == 2, "llama forward: tokens must be [B, T], got {} dims",
                tokens.dim());
  const auto& c = config_;
  const int64_t B = tokens.size(0), T = tokens.size(1);
  TESSERA_CHECK(T <= c.max_seq_len, "llama forward: {} tokens exceed max_seq_len {}", T,
                c.max_seq_len);
  const int64_t hd = c.resolved_head_dim();
  const int64_t rep = c.n_heads / c.n_kv_heads;
  auto cos = rope_cos_.narrow(0, 0, T);
  auto sin = rope_sin_.narrow(0, 0, T);
  auto mask = torch::full({T, T}, -std::numeric_limits<float>::infinity()).triu(1);
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));

  if (tokens.numel() > 0) {
    // torch::embedding would say only "index out of range in self".
    const int64_t low = tokens.min().item<int64_t>(), high = tokens.max().item<int64_t>();
    TESSERA_CHECK(low >= 0 && high < c.vocab_size,
                  "llama forward: token id {} is outside the vocabulary [0, {})",
                  low < 0 ? low : high, c.vocab_size);
  }
  auto x = torch::embedding(tok_embeddings_, tokens.to(torch::kInt64));
  for (const auto& w : layers_) {
    auto h = rms_norm(x, w.attn_norm, c.rms_eps);
    auto q = torch::nn::functional::linear(h, w.wq, c.qkv_bias ? w.bq : torch::Tensor());
    auto k = torch::nn::functional::linear(h, w.wk, c.qkv_bias ? w.bk : torch::Tensor());
    auto v = torch::nn::functional::linear(h, w.wv, c.qkv_bias ? w.bv : torch::Tensor());
    q = q.view({B, T, c.n_heads, hd});
    k = k.view({B, T, c.n_kv_heads, hd});
    v = v.view({B, T, c.n_kv_heads, hd});
    if (c.qk_norm) {
      q = rms_norm(q, w.q_norm, c.rms_eps);
      k = rms_norm(k, w.k_norm, c.rms_eps);
    }
    q = apply_rope(q, cos, sin, c.rope_style).transpose(1, 2);  // [B, H, T, hd]
    k = apply_rope(k, cos, sin, c.rope_style).transpose(1, 2);
    v = v.transpose(1, 2);
    if (rep > 1) {
      k = k.repeat_interleave(rep, 1);
      v = v.repeat_interleave(rep, 1);
    }
    auto scores = torch::matmul(q, k.transpose(2, 3)) * scale + mask;
    auto att = torch::matmul(torch::softmax(scores, -1), v);  // [B, H, T, hd]
    att = att.transpose(1, 2).reshape({B, T, c.n_heads * hd});
    x = x + torch::nn::functional::linear(att, w.wo);
    auto f = rms_norm(x, w.ffn_norm, c.rms_eps);
    auto g = torch::silu(torch::nn::functional::linear(f, w.w_gate)) *
             torch::nn::functional::linear(f, w.w_up);
    x = x + torch::nn::functional::linear(g, w.w_down);
  }
  x = rms_norm(x, final_norm_, c.rms_eps);
  return torch::nn::functional::linear(x, output_weight());
}

// ---------------------------------------------------------------------------------------------
// Inference engine.

int64_t argmax_row(const float* row, int64_t n) {
  int64_t best = 0;
  for (int64_t i = 1; i < n; ++i) {
    if (row[i] > row[best]) best = i;
  }
  return best;
}

namespace {

const float* fptr(const torch::Tensor& t, const char* what) {
  TESSERA_CHECK(t.defined() && t.scalar_type() == torch::kFloat32 && t.is_contiguous(),
                "llama engine: weight {} must be a contiguous float32 tensor", what);
  return t.data_ptr<float>();
}

// One row: y = x * rsqrt(mean(x^2) + eps) * w, summed in index order.
void rms_norm_row(const float* x, const float* w, int64_t n, double eps, float* y) {
  float ss = 0.0f;
  for (int64_t i = 0; i < n; ++i) ss += x[i] * x[i];
  const float inv = 1.0f / std::sqrt(ss / static_cast<float>(n) + static_cast<float>(eps));
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] * inv * w[i];
}

void rope_row(float* v, const float* cos, const float* sin, int64_t hd, RopeStyle style) {
  const int64_t half = hd / 2;
  for (int64_t i = 0; i < half; ++i) {
    const int64_t a = style == RopeStyle::kNeox ? i : 2 * i;
    const int64_t b = style == RopeStyle::kNeox ? i + half : 2 * i + 1;
    const float x1 = v[a], x2 = v[b];
    v[a] = x1 * cos[i] - x2 * sin[i];
    v[b] = x1 * sin[i] + x2 * cos[i];
  }
}

}  // namespace

LlamaEngine::LlamaEngine(Llama model)
    : model_(std::move(model)), config_(model_->config()), capacity_(config_.max_seq_len) {
  model_->move_weights_to_huge_pages();
  kv_width_ = config_.n_kv_heads * config_.resolved_head_dim();
  k_cache_.assign(config_.n_layers, std::vector<float>(capacity_ * kv_width_));
  v_cache_.assign(config_.n_layers, std::vector<float>(capacity_ * kv_width_));
}

void LlamaEngine::truncate(int64_t n) {
  TESSERA_CHECK(n >= 0 && n <= n_past_, "llama engine: cannot truncate to {} (n_past {})", n,
                n_past_);
  n_past_ = n;
}

void LlamaEngine::ensure_scratch(int64_t n) {
  const auto& c = config_;
  const int64_t hd = c.resolved_head_dim();
  const int64_t qw = c.n_heads * hd;
  auto grow = [](std::vector<float>& v, int64_t size) {
    if (static_cast<int64_t>(v.size()) < size) v.resize(size);
  };
  grow(x_, n * c.dim);
  grow(h_, n * std::max(c.dim, qw));
  grow(q_, n * qw);
  grow(k_, n * kv_width_);
  grow(v_, n * kv_width_);
  grow(att_, n * std::max(c.dim, qw));
  grow(gate_, n * c.hidden_dim);
  grow(up_, n * c.hidden_dim);
  grow(scores_, n * c.n_heads * (n_past_ + n));
}

void LlamaEngine::forward(const int64_t* tokens, int64_t n, std::vector<float>& logits,
                          int64_t n_logits) {
  torch::NoGradGuard no_grad;
  const Timer timer;
  const auto& c = config_;
  TESSERA_CHECK(n > 0, "llama engine: forward needs at least one token, got {}", n);
  TESSERA_CHECK(n_past_ + n <= capacity_,
                "llama engine: {} cached + {} new tokens exceed the context length {}", n_past_, n,
                capacity_);
  if (n_logits < 0) n_logits = n;
  TESSERA_CHECK(n_logits <= n, "llama engine: n_logits {} > n {}", n_logits, n);
  for (int64_t i = 0; i < n; ++i) {
    TESSERA_CHECK(tokens[i] >= 0 && tokens[i] < c.vocab_size,
                  "llama engine: token id {} out of range [0, {})", tokens[i], c.vocab_size);
  }
  ensure_scratch(n);
  const int64_t D = c.dim, hd = c.resolved_head_dim(), H = c.n_heads, Hkv = c.n_kv_heads;
  const int64_t qw = H * hd, F = c.hidden_dim, rep = H / Hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float* cos_table = model_->rope_cos().data_ptr<float>();
  const float* sin_table = model_->rope_sin().data_ptr<float>();

  const float* emb = fptr(model_->tok_embeddings(), "tok_embeddings");
  for (int64_t i = 0; i < n; ++i)
    std::copy(emb + tokens[i] * D, emb + (tokens[i] + 1) * D, &x_[i * D]);

  const auto& layers = model_->layers();
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const auto& w = layers[l];
    for (int64_t i = 0; i < n; ++i)
      rms_norm_row(&x_[i * D], fptr(w.attn_norm, "attn_norm"), D, c.rms_eps, &h_[i * D]);
    const float* bq = c.qkv_bias ? fptr(w.bq, "bq") : nullptr;
    const float* bk = c.qkv_bias ? fptr(w.bk, "bk") : nullptr;
    const float* bv = c.qkv_bias ? fptr(w.bv, "bv") : nullptr;
    matmul_rows(h_.data(), n, D, D, fptr(w.wq, "wq"), qw, D, q_.data(), qw, bq);
    matmul_rows(h_.data(), n, D, D, fptr(w.wk, "wk"), kv_width_, D, k_.data(), kv_width_, bk);
    matmul_rows(h_.data(), n, D, D, fptr(w.wv, "wv"), kv_width_, D, v_.data(), kv_width_, bv);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t pos = n_past_ + i;
      for (int64_t h = 0; h < H; ++h) {
        float* qh = &q_[i * qw + h * hd];
        if (c.qk_norm) rms_norm_row(qh, fptr(w.q_norm, "q_norm"), hd, c.rms_eps, qh);
        rope_row(qh, cos_table + pos * (hd / 2), sin_table + pos * (hd / 2), hd, c.rope_style);
      }
      for (int64_t h = 0; h < Hkv; ++h) {
        float* kh = &k_[i * kv_width_ + h * hd];
        if (c.qk_norm) rms_norm_row(kh, fptr(w.k_norm, "k_norm"), hd, c.rms_eps, kh);
        rope_row(kh, cos_table + pos * (hd / 2), sin_table + pos * (hd / 2), hd, c.rope_style);
      }
      std::copy(&k_[i * kv_width_], &k_[(i + 1) * kv_width_], &k_cache_[l][pos * kv_width_]);
      std::copy(&v_[i * kv_width_], &v_[(i + 1) * kv_width_], &v_cache_[l][pos * kv_width_]);
    }
    // Attention, one (token, head) pair per task; position pos sees cache entries 0..pos.
    const float* kc = k_cache_[l].data();
    const float* vc = v_cache_[l].data();
    const int64_t stride = n_past_ + n;
    at::parallel_for(0, n * H, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t task = b0; task < b1; ++task) {
        const int64_t i = task / H, h = task % H, kvh = h / rep;
        const int64_t len = n_past_ + i + 1;
        float* s = &scores_[task * stride];
        const float* qh = &q_[i * qw + h * hd];
        matmul_rows(qh, 1, hd, hd, kc + kvh * hd, len, kv_width_, s, len);
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < len; ++j) {
          s[j] *= scale;
          mx = std::max(mx, s[j]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < len; ++j) {
          s[j] = std::exp(s[j] - mx);
          sum += s[j];
        }
        const float inv = 1.0f / sum;
        float* out = &att_[i * qw + h * hd];
        std::fill(out, out + hd, 0.0f);
        for (int64_t j = 0; j < len; ++j) {
          const float a = s[j] * inv;
          const float* vj = vc + j * kv_width_ + kvh * hd;
          for (int64_t d = 0; d < hd; ++d) out[d] += a * vj[d];
        }
      }
    });
    matmul_rows(att_.data(), n, qw, qw, fptr(w.wo, "wo"), D, qw, h_.data(), D);
    for (int64_t e = 0; e < n * D; ++e) x_[e] += h_[e];

    for (int64_t i = 0; i < n; ++i)
      rms_norm_row(&x_[i * D], fptr(w.ffn_norm, "ffn_norm"), D, c.rms_eps, &h_[i * D]);
    matmul_rows(h_.data(), n, D, D, fptr(w.w_gate, "w_gate"), F, D, gate_.data(), F);
    matmul_rows(h_.data(), n, D, D, fptr(w.w_up, "w_up"), F, D, up_.data(), F);
    for (int64_t e = 0; e < n * F; ++e) {
      const float g = gate_[e];
      gate_[e] = g / (1.0f + std::exp(-g)) * up_[e];
    }
    matmul_rows(gate_.data(), n, F, F, fptr(w.w_down, "w_down"), D, F, h_.data(), D);
    for (int64_t e = 0; e < n * D; ++e) x_[e] += h_[e];
  }
  const int64_t first = n - n_logits;
  const float* norm = fptr(model_->final_norm(), "norm");
  for (int64_t i = first; i < n; ++i) rms_norm_row(&x_[i * D], norm, D, c.rms_eps, &h_[i * D]);
  logits.resize(n_logits * c.vocab_size);
  matmul_rows(&h_[first * D], n_logits, D, D, fptr(model_->output_weight(), "output"), c.vocab_size,
              D, logits.data(), c.vocab_size);
  n_past_ += n;
  stats_.n_forwards += 1;
  stats_.n_tokens += n;
  stats_.t_forward_us += timer.elapsed_us();
}

}  // namespace tessera::llm
