// N-way K-shot tasks over a labelled image set, per node class subsets and rotations.
#include "tessera/metagater/tasks.h"

#include "tessera/core/error.h"
#include "tessera/core/random.h"
#include "tessera/core/seed.h"

namespace tessera::metagater {

void TaskOptions::validate() const {
  TESSERA_CHECK(ways >= 2, "task: ways must be >= 2 (got {})", ways);
  TESSERA_CHECK(shots >= 1, "task: shots must be >= 1 (got {})", shots);
  TESSERA_CHECK(queries >= 1, "task: queries must be >= 1 (got {})", queries);
}

nlohmann::json TaskOptions::to_json() const {
  return {{"ways", ways}, {"shots", shots}, {"queries", queries}};
}

nlohmann::json NodeSpec::to_json() const {
  return {{"id", id}, {"classes", classes}, {"rotation_degrees", 90 * rotation}};
}

TaskSource::TaskSource(const data::Dataset& dataset)
    : images_(dataset.images), num_classes_(dataset.num_classes) {
  TESSERA_CHECK(dataset.size() > 0 && num_classes_ > 0, "task source: empty data set '{}'",
                dataset.name);
  by_class_.resize(static_cast<size_t>(num_classes_));
  const auto labels = dataset.labels.to(torch::kLong).contiguous();
  const int64_t* l = labels.data_ptr<int64_t>();
  for (int64_t i = 0; i < dataset.size(); ++i) {
    TESSERA_CHECK(l[i] >= 0 && l[i] < num_classes_, "task source: label {} out of range", l[i]);
    by_class_[static_cast<size_t>(l[i])].push_back(i);
  }
}

Task TaskSource::sample(const NodeSpec& node, const TaskOptions& options,
                        std::mt19937_64& rng) const {
  options.validate();
  const auto n_classes = static_cast<int64_t>(node.classes.size());
  TESSERA_CHECK(options.ways <= num_classes_, "task: {} ways but the data set has only {} classes",
                options.ways, num_classes_);
  TESSERA_CHECK(options.ways <= n_classes, "task: {} ways but node {} holds only {} classes",
                options.ways, node.id, n_classes);
  TESSERA_CHECK(node.rotation >= 0 && node.rotation < 4,
                "task: node {} rotation {} quarter turns is not in 0..3", node.id, node.rotation);
  const int64_t per_class = options.shots + options.queries;
  Task task;
  task.rotation = node.rotation;
  std::vector<int64_t> support, query, support_y, query_y;
  const auto picks = random::subset(n_classes, options.ways, rng);
  for (int64_t label = 0; label < options.ways; ++label) {
    const int64_t cls = node.classes[static_cast<size_t>(picks[static_cast<size_t>(label)])];
    TESSERA_CHECK(cls >= 0 && cls < num_classes_, "task: node {} class {} is not in the data set",
                  node.id, cls);
    const auto& pool = by_class_[static_cast<size_t>(cls)];
    const auto available = static_cast<int64_t>(pool.size());
    TESSERA_CHECK(per_class <= available, "task: class {} holds {} images, {} needed", cls,
                  available, per_class);
    task.classes.push_back(cls);
    const auto chosen = random::subset(available, per_class, rng);
    for (int64_t i = 0; i < per_class; ++i) {
      const int64_t index = pool[static_cast<size_t>(chosen[static_cast<size_t>(i)])];
      (i < options.shots ? support : query).push_back(index);
      (i < options.shots ? support_y : query_y).push_back(label);
    }
  }
  const auto gather = [&](const std::vector<int64_t>& rows) {
    torch::Tensor x = images_.index_select(0, torch::tensor(rows, torch::kLong));
    return node.rotation == 0 ? x : torch::rot90(x, node.rotation, {2, 3}).contiguous();
  };
  task.support_x = gather(support);
  task.query_x = gather(query);
  task.support_y = torch::tensor(support_y, torch::kLong);
  task.query_y = torch::tensor(query_y, torch::kLong);
  return task;
}

std::vector<NodeSpec> make_nodes(int64_t n, int64_t classes_per_node, int64_t num_classes,
                                 const std::vector<int64_t>& rotations, int64_t first_id,
                                 uint64_t seed) {
  TESSERA_CHECK(n >= 1, "nodes: need at least one node (got {})", n);
  TESSERA_CHECK(classes_per_node >= 1 && classes_per_node <= num_classes,
                "nodes: classes_per_node {} must be in [1, {}]", classes_per_node, num_classes);
  TESSERA_CHECK(!rotations.empty(), "nodes: no rotations to draw from");
  auto rng = make_rng(seed, 0x6e6f6465ULL + static_cast<uint64_t>(first_id));
  std::vector<NodeSpec> nodes;
  for (int64_t i = 0; i < n; ++i) {
    NodeSpec node;
    node.id = first_id + i;
    node.classes = random::subset(num_classes, classes_per_node, rng);
    node.rotation = random::pick(rotations, rng);
    nodes.push_back(node);
  }
  return nodes;
}

}  // namespace tessera::metagater
