// The two side-channel attackers (research/hw_security.md 4.3 and 4.4), trained with LibTorch on
// traces of random CNNs: a sequence predictor (LSTM + CTC over the per-step features, greedy
// decoding) and a dimension predictor (an MLP regressing log2 of a conv's input and output
// channels from its step's features and its neighbours'). Only the attacker-observable features
// are used: latency, bytes read and written (no FLOPs, no op kinds, no channel counts).
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "tessera/obfuscate/executor.h"

namespace tessera::obfuscate {

/// Per-step features [T, kNumFeatures] (DeepSniffer's "reduced" set, section 4.2, on our trace):
/// log latency, log bytes read, log bytes written, log(read / write), log(read_t / write_{t-1}).
constexpr int64_t kNumFeatures = 5;
torch::Tensor trace_features(const Trace& trace);

/// Levenshtein distance between two label sequences.
int64_t edit_distance(const std::vector<int>& a, const std::vector<int>& b);
/// Label error rate: edit_distance(predicted, truth) / |truth| (tf.edit_distance normalised).
double label_error_rate(const std::vector<int>& predicted, const std::vector<int>& truth);

/// Greedy CTC decoding of log-probabilities [T', kNumLabels + 1] (class 0 = blank, class c + 1 =
/// label c): argmax per frame, merge repeats, drop blanks.
std::vector<int> ctc_greedy_decode(const torch::Tensor& log_probs);

struct AttackerOptions {
  int64_t hidden = 128;        ///< LSTM width (section 4.3: 64..512)
  bool bidirectional = false;  ///< section 4.3: one unidirectional layer
  int64_t epochs = 40;
  int64_t batch_size = 16;  ///< section 4.3 uses 1
  double lr = 2e-3;         ///< Adam (section 4.3: 1e-3)
  int64_t dim_hidden = 64;  ///< dimension predictor MLP width
  int64_t dim_epochs = 150;
  uint64_t seed = 0;

  void validate() const;
  nlohmann::json to_json() const;
};

/// LSTM over [T, B, F] standardised features; a linear layer emits two frames per step (so CTC
/// can emit a repeated label, e.g. conv conv, without merging: the effect of TensorFlow's
/// ctc_merge_repeated=False). Output: log-probabilities [2T, B, kNumLabels + 1].
class SeqPredictorImpl : public torch::nn::Module {
 public:
  explicit SeqPredictorImpl(const AttackerOptions& options);
  torch::Tensor forward(torch::Tensor features);
  torch::nn::LSTM lstm{nullptr};
  torch::nn::Linear head{nullptr};
  torch::Tensor mean, stddev;  ///< feature standardisation (from the training traces)
};
TORCH_MODULE(SeqPredictor);

/// MLP over the features of steps t-1, t, t+1 -> [log2 IC, log2 OC].
class DimPredictorImpl : public torch::nn::Module {
 public:
  explicit DimPredictorImpl(const AttackerOptions& options);
  torch::Tensor forward(torch::Tensor x);
  torch::nn::Sequential mlp{nullptr};
  torch::Tensor mean, stddev;
};
TORCH_MODULE(DimPredictor);

/// A trace with its truth, as the attackers train on it.
struct LabelledTrace {
  torch::Tensor features;  ///< [T, kNumFeatures]
  std::vector<int> labels;
  Trace trace;
};

struct Attacker {
  SeqPredictor seq{nullptr};
  DimPredictor dim{nullptr};

  /// Predicted layer sequence of a trace.
  std::vector<int> predict_sequence(const Trace& trace);
  /// Predicted {IC, OC} of step `step` of a trace.
  std::pair<double, double> predict_dims(const Trace& trace, size_t step);
  void save(const std::string& path);  ///< atomic
  static Attacker load(const std::string& path, const AttackerOptions& options);
};

/// The 3 x kNumFeatures input of the dimension predictor for step `step`.
torch::Tensor dim_input(const torch::Tensor& features, size_t step);

/// Trains both predictors (train::fit_epochs, Adam) on `train`: the sequence predictor with
/// torch::ctc_loss, the dimension predictor with MSE on log2 channels of every conv step.
Attacker train_attacker(const std::vector<LabelledTrace>& train, const AttackerOptions& options);

}  // namespace tessera::obfuscate
