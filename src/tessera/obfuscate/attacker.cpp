// The LSTM-CTC sequence predictor and the dimension predictor (see attacker.h).
#include "tessera/obfuscate/attacker.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <sstream>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/random.h"
#include "tessera/core/seed.h"
#include "tessera/train/train.h"

namespace tessera::obfuscate {

torch::Tensor trace_features(const Trace& trace) {
  const int64_t t = static_cast<int64_t>(trace.steps.size());
  torch::Tensor f = torch::zeros({t, kNumFeatures});
  auto a = f.accessor<float, 2>();
  for (int64_t i = 0; i < t; ++i) {
    const TraceStep& s = trace.steps[static_cast<size_t>(i)];
    const double rd = std::log1p(s.bytes_read / 1024.0);
    const double wr = std::log1p(s.bytes_written / 1024.0);
    const double prev_wr =
        i == 0 ? rd : std::log1p(trace.steps[static_cast<size_t>(i - 1)].bytes_written / 1024.0);
    a[i][0] = static_cast<float>(std::log1p(std::max(0.0, s.latency_us)));
    a[i][1] = static_cast<float>(rd);
    a[i][2] = static_cast<float>(wr);
    a[i][3] = static_cast<float>(rd - wr);
    a[i][4] = static_cast<float>(rd - prev_wr);
  }
  return f;
}

int64_t edit_distance(const std::vector<int>& a, const std::vector<int>& b) {
  std::vector<int64_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = static_cast<int64_t>(j);
  for (size_t i = 1; i <= a.size(); ++i) {
    int64_t diag = row[0];
    row[0] = static_cast<int64_t>(i);
    for (size_t j = 1; j <= b.size(); ++j) {
      const int64_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

double label_error_rate(const std::vector<int>& predicted, const std::vector<int>& truth) {
  TESSERA_CHECK(!truth.empty(), "label error rate needs a non-empty true sequence");
  return static_cast<double>(edit_distance(predicted, truth)) / static_cast<double>(truth.size());
}

std::vector<int> ctc_greedy_decode(const torch::Tensor& log_probs) {
  TESSERA_CHECK(log_probs.dim() == 2 && log_probs.size(1) == kNumLabels + 1,
                "CTC decoding needs [T, {}] log-probabilities, got a {}-d tensor", kNumLabels + 1,
                log_probs.dim());
  const torch::Tensor best = log_probs.argmax(1).to(torch::kLong).contiguous();
  const auto a = best.accessor<int64_t, 1>();
  std::vector<int> out;
  int64_t prev = -1;
  for (int64_t t = 0; t < best.size(0); ++t) {
    const int64_t c = a[t];
    if (c != prev && c != 0) out.push_back(static_cast<int>(c - 1));
    prev = c;
  }
  return out;
}

void AttackerOptions::validate() const {
  TESSERA_CHECK(hidden >= 1 && dim_hidden >= 1, "attacker widths must be >= 1");
  TESSERA_CHECK(epochs >= 1 && dim_epochs >= 1, "attacker epochs must be >= 1");
  TESSERA_CHECK(batch_size >= 1, "attacker batch size must be >= 1, got {}", batch_size);
  TESSERA_CHECK(lr > 0, "attacker lr must be > 0, got {}", lr);
}

nlohmann::json AttackerOptions::to_json() const {
  return {{"hidden", hidden},
          {"bidirectional", bidirectional},
          {"epochs", epochs},
          {"batch_size", batch_size},
          {"lr", lr},
          {"dim_hidden", dim_hidden},
          {"dim_epochs", dim_epochs},
          {"seed", seed}};
}

SeqPredictorImpl::SeqPredictorImpl(const AttackerOptions& o) {
  lstm = register_module("lstm", torch::nn::LSTM(torch::nn::LSTMOptions(kNumFeatures, o.hidden)
                                                     .num_layers(1)
                                                     .bidirectional(o.bidirectional)));
  head = register_module(
      "head", torch::nn::Linear((o.bidirectional ? 2 : 1) * o.hidden, 2 * (kNumLabels + 1)));
  mean = register_buffer("mean", torch::zeros({kNumFeatures}));
  stddev = register_buffer("stddev", torch::ones({kNumFeatures}));
}

torch::Tensor SeqPredictorImpl::forward(torch::Tensor features) {
  const int64_t t = features.size(0), b = features.size(1);
  torch::Tensor h = std::get<0>(lstm->forward((features - mean) / stddev));
  torch::Tensor logits = head(h).view({t, b, 2, kNumLabels + 1}).permute({0, 2, 1, 3});
  return torch::log_softmax(logits.reshape({2 * t, b, kNumLabels + 1}), 2);
}

DimPredictorImpl::DimPredictorImpl(const AttackerOptions& o) {
  mlp = register_module(
      "mlp", torch::nn::Sequential(torch::nn::Linear(3 * kNumFeatures, o.dim_hidden),
                                   torch::nn::ReLU(), torch::nn::Linear(o.dim_hidden, o.dim_hidden),
                                   torch::nn::ReLU(), torch::nn::Linear(o.dim_hidden, 2)));
  mean = register_buffer("mean", torch::zeros({kNumFeatures}));
  stddev = register_buffer("stddev", torch::ones({kNumFeatures}));
}

torch::Tensor DimPredictorImpl::forward(torch::Tensor x) {
  const auto n = x.size(0);
  x = ((x.view({n, 3, kNumFeatures}) - mean) / stddev).view({n, 3 * kNumFeatures});
  return mlp->forward(x);
}

torch::Tensor dim_input(const torch::Tensor& features, size_t step) {
  const int64_t t = features.size(0), s = static_cast<int64_t>(step);
  TESSERA_CHECK(s < t, "step {} is outside a trace of {} steps", s, t);
  const auto row = [&](int64_t i) {
    return (i < 0 || i >= t) ? torch::zeros({kNumFeatures}) : features[i];
  };
  return torch::cat({row(s - 1), row(s), row(s + 1)});
}

std::vector<int> Attacker::predict_sequence(const Trace& trace) {
  torch::NoGradGuard no_grad;
  seq->eval();
  const torch::Tensor lp = seq->forward(trace_features(trace).unsqueeze(1));
  return ctc_greedy_decode(lp.squeeze(1));
}

std::pair<double, double> Attacker::predict_dims(const Trace& trace, size_t step) {
  torch::NoGradGuard no_grad;
  dim->eval();
  const torch::Tensor y = dim->forward(dim_input(trace_features(trace), step).unsqueeze(0));
  return {std::exp2(y[0][0].item<double>()), std::exp2(y[0][1].item<double>())};
}

void Attacker::save(const std::string& path) {
  torch::serialize::OutputArchive archive, s, d;
  seq->save(s);
  dim->save(d);
  archive.write("seq", s);
  archive.write("dim", d);
  std::ostringstream out;
  archive.save_to(out);
  write_file_atomic(path, out.str());
}

Attacker Attacker::load(const std::string& path, const AttackerOptions& options) {
  Attacker a{SeqPredictor(options), DimPredictor(options)};
  torch::serialize::InputArchive archive, s, d;
  archive.load_from(path);
  archive.read("seq", s);
  archive.read("dim", d);
  a.seq->load(s);
  a.dim->load(d);
  a.seq->eval();
  a.dim->eval();
  return a;
}

namespace {

train::TrainOptions adam_options(const AttackerOptions& o, int64_t epochs, const char* label) {
  train::TrainOptions t;
  t.epochs = epochs;
  t.optimizer = "adam";
  t.lr = o.lr;
  t.weight_decay = 0.0;
  t.schedule = "cosine";
  t.clip_grad_norm = 1.0;
  t.seed = o.seed;
  t.progress_label = label;
  return t;
}

void train_sequence(SeqPredictor& seq, const std::vector<LabelledTrace>& data,
                    const AttackerOptions& o) {
  const auto n = static_cast<int64_t>(data.size());
  train::fit_epochs(*seq, adam_options(o, o.epochs, "attacker lstm-ctc"),
                    [&](int64_t epoch, const train::StepFn& step) {
                      seq->train();
                      auto rng = make_rng(o.seed, 100 + static_cast<uint64_t>(epoch));
                      const auto order = random::permutation(n, rng);
                      for (int64_t start = 0; start < n; start += o.batch_size) {
                        const int64_t end = std::min(n, start + o.batch_size);
                        int64_t t_max = 0;
                        for (int64_t i = start; i < end; ++i)
                          t_max = std::max(t_max, data[order[i]].features.size(0));
                        torch::Tensor x = torch::zeros({t_max, end - start, kNumFeatures});
                        std::vector<int64_t> targets, in_len, tgt_len;
                        for (int64_t i = start; i < end; ++i) {
                          const auto& d = data[order[i]];
                          x.slice(0, 0, d.features.size(0)).select(1, i - start).copy_(d.features);
                          in_len.push_back(2 * d.features.size(0));
                          tgt_len.push_back(static_cast<int64_t>(d.labels.size()));
                          for (int l : d.labels) targets.push_back(l + 1);
                        }
                        const torch::Tensor lp = seq->forward(x);
                        step(torch::ctc_loss(lp, torch::tensor(targets), in_len, tgt_len, 0,
                                             at::Reduction::Mean, true));
                      }
                    });
  seq->eval();
}

void train_dims(DimPredictor& dim, const std::vector<LabelledTrace>& data,
                const AttackerOptions& o) {
  std::vector<torch::Tensor> xs;
  std::vector<float> ys;
  for (const auto& d : data) {
    for (size_t s = 0; s < d.trace.steps.size(); ++s) {
      const TraceStep& step = d.trace.steps[s];
      if (step.label != OpLabel::conv || step.in_channels <= 0) continue;
      xs.push_back(dim_input(d.features, s));
      ys.push_back(static_cast<float>(std::log2(static_cast<double>(step.in_channels))));
      ys.push_back(static_cast<float>(std::log2(static_cast<double>(step.out_channels))));
    }
  }
  TESSERA_CHECK(!xs.empty(), "the attacker's training traces hold no conv step");
  const torch::Tensor x = torch::stack(xs);
  const torch::Tensor y = torch::tensor(ys).view({-1, 2});
  const int64_t n = x.size(0);
  train::fit_epochs(
      *dim, adam_options(o, o.dim_epochs, "attacker dims"),
      [&](int64_t epoch, const train::StepFn& step) {
        dim->train();
        auto rng = make_rng(o.seed, 5000 + static_cast<uint64_t>(epoch));
        const auto order = torch::tensor(random::permutation(n, rng));
        for (int64_t start = 0; start < n; start += 64) {
          const auto idx = order.slice(0, start, std::min(n, start + 64));
          step(torch::mse_loss(dim->forward(x.index_select(0, idx)), y.index_select(0, idx)));
        }
      });
  dim->eval();
}

}  // namespace

Attacker train_attacker(const std::vector<LabelledTrace>& train, const AttackerOptions& o) {
  o.validate();
  TESSERA_CHECK(!train.empty(), "the attacker needs training traces");
  torch::manual_seed(o.seed);
  Attacker a{SeqPredictor(o), DimPredictor(o)};
  std::vector<torch::Tensor> all;
  for (const auto& d : train) all.push_back(d.features);
  const torch::Tensor cat = torch::cat(all);
  const torch::Tensor mean = cat.mean(0), stddev = cat.std(0).clamp_min(1e-3);
  {
    torch::NoGradGuard no_grad;
    a.seq->mean.copy_(mean);
    a.seq->stddev.copy_(stddev);
    a.dim->mean.copy_(mean);
    a.dim->stddev.copy_(stddev);
  }
  train_sequence(a.seq, train, o);
  train_dims(a.dim, train, o);
  return a;
}

}  // namespace tessera::obfuscate
