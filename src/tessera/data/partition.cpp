// Splitting sample indices among federated clients: IID shuffles and non-IID label shards.
#include <algorithm>
#include <numeric>

#include "tessera/core/error.h"
#include "tessera/core/random.h"
#include "tessera/core/seed.h"
#include "tessera/data/dataset.h"

namespace tessera::data {

std::vector<std::vector<int64_t>> partition_iid(int64_t n, int64_t n_clients, uint64_t seed) {
  TESSERA_CHECK(n_clients > 0, "partition_iid: n_clients = {} must be positive", n_clients);
  TESSERA_CHECK(n_clients <= n, "partition_iid: {} clients but only {} samples", n_clients, n);
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t{0});
  std::mt19937_64 rng = make_rng(seed, 0);
  random::shuffle(order, rng);
  // The first n % n_clients clients get one extra sample, so sizes differ by at most one.
  std::vector<std::vector<int64_t>> clients(static_cast<size_t>(n_clients));
  const int64_t base = n / n_clients;
  const int64_t extra = n % n_clients;
  int64_t position = 0;
  for (int64_t c = 0; c < n_clients; ++c) {
    const int64_t count = base + (c < extra ? 1 : 0);
    clients[static_cast<size_t>(c)].assign(order.begin() + position,
                                           order.begin() + position + count);
    position += count;
  }
  return clients;
}

std::vector<std::vector<int64_t>> partition_label_shards(const torch::Tensor& labels,
                                                         int64_t n_clients,
                                                         int64_t shards_per_client, uint64_t seed) {
  TESSERA_CHECK(labels.defined() && labels.dim() == 1,
                "partition_label_shards: labels must be a 1-D tensor, got {} dims",
                labels.defined() ? labels.dim() : 0);
  TESSERA_CHECK(n_clients > 0, "partition_label_shards: n_clients = {} must be positive",
                n_clients);
  TESSERA_CHECK(shards_per_client > 0,
                "partition_label_shards: shards_per_client = {} must be positive",
                shards_per_client);
  const int64_t n = labels.size(0);
  TESSERA_CHECK(n_clients <= n / shards_per_client,
                "partition_label_shards: {} clients x {} shards = {} shards but only {} samples",
                n_clients, shards_per_client, n_clients * shards_per_client, n);
  const int64_t n_shards = n_clients * shards_per_client;

  // Sort by label; stable so that ties keep index order and the result depends only on the seed.
  const torch::Tensor label_values = labels.to(torch::kInt64).contiguous();
  const int64_t* label_data = label_values.data_ptr<int64_t>();
  std::vector<int64_t> by_label(static_cast<size_t>(n));
  std::iota(by_label.begin(), by_label.end(), int64_t{0});
  std::stable_sort(by_label.begin(), by_label.end(),
                   [label_data](int64_t a, int64_t b) { return label_data[a] < label_data[b]; });

  // Shard s covers sorted positions [s*n/n_shards, (s+1)*n/n_shards): near-equal sizes.
  std::vector<int64_t> shard_order(static_cast<size_t>(n_shards));
  std::iota(shard_order.begin(), shard_order.end(), int64_t{0});
  std::mt19937_64 rng = make_rng(seed, 0);
  random::shuffle(shard_order, rng);
  std::vector<std::vector<int64_t>> clients(static_cast<size_t>(n_clients));
  for (int64_t c = 0; c < n_clients; ++c) {
    std::vector<int64_t>& client = clients[static_cast<size_t>(c)];
    for (int64_t k = 0; k < shards_per_client; ++k) {
      const int64_t shard = shard_order[static_cast<size_t>(c * shards_per_client + k)];
      const int64_t begin = shard * n / n_shards;
      const int64_t end = (shard + 1) * n / n_shards;
      client.insert(client.end(), by_label.begin() + begin, by_label.begin() + end);
    }
  }
  return clients;
}

}  // namespace tessera::data
