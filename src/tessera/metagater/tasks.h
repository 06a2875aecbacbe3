// The task distribution of the MetaGater bench (RECONSTRUCTED, research/efficient.md 3.2): N-way
// K-shot classification tasks over an image data set. A node holds its own class subset and a
// rotation (a multiple of 90 degrees); each task draws N of the node's classes in random label
// order, K support and Q query images per class, all rotated by the node's angle.
#pragma once

#include <torch/torch.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <random>
#include <vector>

#include "tessera/data/dataset.h"

namespace tessera::metagater {

struct TaskOptions {
  int64_t ways = 5;      ///< N classes per task
  int64_t shots = 5;     ///< K support images per class
  int64_t queries = 10;  ///< Q query images per class

  void validate() const;
  nlohmann::json to_json() const;
};

/// One node: the classes it holds and its rotation in quarter turns (0..3).
struct NodeSpec {
  int64_t id = 0;
  std::vector<int64_t> classes;
  int64_t rotation = 0;
  nlohmann::json to_json() const;
};

/// A few-shot task. support_x: [N*K, C, H, W], support_y: [N*K] int64 in [0, N); query_x:
/// [N*Q, C, H, W], query_y: [N*Q].
struct Task {
  torch::Tensor support_x, support_y, query_x, query_y;
  std::vector<int64_t> classes;  ///< data set class of each label
  int64_t rotation = 0;
};

/// Draws tasks from one data set (the training split for meta-training nodes, the test split
/// for the held-out nodes).
class TaskSource {
 public:
  explicit TaskSource(const data::Dataset& dataset);
  int64_t num_classes() const { return num_classes_; }
  /// Throws tessera::Error when the task asks for more ways than the node has classes (or the
  /// data set has), or more images than a class holds.
  Task sample(const NodeSpec& node, const TaskOptions& options, std::mt19937_64& rng) const;

 private:
  torch::Tensor images_;
  int64_t num_classes_ = 0;
  std::vector<std::vector<int64_t>> by_class_;
};

/// `n` nodes, each with `classes_per_node` distinct classes of 0..num_classes-1 and a rotation
/// drawn from `rotations`, ids first_id, first_id+1, ... (seeded).
std::vector<NodeSpec> make_nodes(int64_t n, int64_t classes_per_node, int64_t num_classes,
                                 const std::vector<int64_t>& rotations, int64_t first_id,
                                 uint64_t seed);

}  // namespace tessera::metagater
