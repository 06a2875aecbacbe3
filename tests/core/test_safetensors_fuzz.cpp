// Seeded random-mutation fuzzing of the safetensors reader: flipped, truncated, spliced and
// header-edited files must either parse into a file that round-trips or fail with tessera::Error.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/safetensors.h"
#include "tessera/core/seed.h"

namespace tessera::safetensors {
namespace {

/// Valid files to start from: several dtypes, empty and scalar tensors, metadata.
std::vector<std::string> seed_corpus() {
  std::vector<std::string> corpus;
  File a;
  a.metadata = {{"tessera.arch", R"({"name":"resnet20","num_classes":10})"}};
  a.tensors = {{"conv.weight", torch::randn({4, 1, 3, 3})},
               {"conv.bias", torch::zeros({4}, torch::kFloat64)},
               {"bn.num_batches_tracked", torch::tensor(int64_t{3})},
               {"mask", torch::tensor({true, false, true, true})}};
  corpus.push_back(serialize(a));
  File b;
  b.tensors = {{"h", torch::randn({2, 3}).to(torch::kHalf)},
               {"bf", torch::randn({5}).to(torch::kBFloat16)},
               {"empty", torch::empty({0, 3}, torch::kInt32)},
               {"i8", torch::tensor({-1, 2, 3}, torch::kInt8)},
               {"u8", torch::tensor({200}, torch::kUInt8)},
               {"i16", torch::tensor({-300, 300}, torch::kInt16)}};
  corpus.push_back(serialize(b));
  corpus.push_back(serialize(File{}));
  return corpus;
}

/// One random mutation of `input` (or of a splice with `other`).
std::string mutate(const std::string& input, const std::string& other, std::mt19937_64& rng) {
  std::string out = input;
  auto pick = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  const char interesting[] = {'\0', '\xff', '"', '[', ']', '{',  '}', ',', ':',    '-',
                              '0',  '9',    'e', '.', ' ', '\\', '1', '8', '\x80', 'n'};
  switch (rng() % 9) {
    case 0: {  // flip 1..8 random bits
      const int n = 1 + static_cast<int>(rng() % 8);
      for (int i = 0; i < n && !out.empty(); ++i)
        out[pick(out.size())] ^= static_cast<char>(1 << (rng() % 8));
      break;
    }
    case 1:  // overwrite one byte with a JSON-significant or edge value
      if (!out.empty()) out[pick(out.size())] = interesting[pick(sizeof(interesting))];
      break;
    case 2:  // truncate
      out.resize(pick(out.size() + 1));
      break;
    case 3: {  // splice: prefix of one file + suffix of another
      const size_t cut_a = pick(out.size() + 1);
      const size_t cut_b = pick(other.size() + 1);
      out = out.substr(0, cut_a) + other.substr(cut_b);
      break;
    }
    case 4: {  // insert random bytes
      const size_t at = pick(out.size() + 1);
      std::string extra(1 + pick(16), '\0');
      for (char& c : extra) c = static_cast<char>(rng());
      out.insert(at, extra);
      break;
    }
    case 5: {  // delete a range
      const size_t at = pick(out.size() + 1);
      out.erase(at, pick(32));
      break;
    }
    case 6: {  // change the header length prefix by a small amount
      if (out.size() >= 8) {
        uint64_t n = 0;
        for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(out[i]);
        n += static_cast<uint64_t>(static_cast<int64_t>(rng() % 33) - 16);
        for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xFF);
      }
      break;
    }
    case 7: {  // edit a digit in the header: hits offsets and shapes
      std::vector<size_t> digits;
      for (size_t i = 8; i < out.size() && i < 4096; ++i) {
        if (out[i] >= '0' && out[i] <= '9') digits.push_back(i);
      }
      if (!digits.empty()) {
        const char replacement[] = "0123456789-9";
        out[digits[pick(digits.size())]] = replacement[pick(sizeof(replacement) - 1)];
      }
      break;
    }
    default: {  // duplicate a chunk in place
      const size_t at = pick(out.size() + 1);
      const std::string chunk = out.substr(at, 1 + pick(24));
      out.insert(at, chunk);
      break;
    }
  }
  return out;
}

TEST(SafetensorsFuzz, MutatedFilesOnlyEverThrowTesseraError) {
  torch::manual_seed(7);
  std::mt19937_64 rng = make_rng(20240611, /*stream=*/1);
  const std::vector<std::string> corpus = seed_corpus();
  constexpr int kInputs = 20000;
  int n_rejected = 0;
  int n_accepted = 0;
  int n_other_exceptions = 0;
  for (int i = 0; i < kInputs; ++i) {
    std::string input = corpus[rng() % corpus.size()];
    const int n_mutations = 1 + static_cast<int>(rng() % 3);
    for (int m = 0; m < n_mutations; ++m) {
      input = mutate(input, corpus[rng() % corpus.size()], rng);
    }
    try {
      const File file = parse(input);
      ++n_accepted;
      // Whatever was accepted must be a valid file: it re-serializes and parses to the same thing.
      const File again = parse(serialize(file));
      ASSERT_EQ(again.tensors.size(), file.tensors.size()) << "input " << i;
      for (size_t t = 0; t < file.tensors.size(); ++t) {
        ASSERT_EQ(again.tensors[t].first, file.tensors[t].first) << "input " << i;
        ASSERT_EQ(again.tensors[t].second.sizes(), file.tensors[t].second.sizes()) << "input " << i;
      }
      ASSERT_EQ(again.metadata, file.metadata) << "input " << i;
    } catch (const Error&) {
      ++n_rejected;
    } catch (const std::exception& e) {
      ++n_other_exceptions;
      ADD_FAILURE() << "input " << i << " threw a non-tessera exception: " << e.what();
    }
  }
  std::cout << "[ fuzz     ] safetensors: " << kInputs << " inputs tried, " << n_rejected
            << " rejected with tessera::Error, " << n_accepted << " accepted\n";
  EXPECT_EQ(n_other_exceptions, 0);
  EXPECT_EQ(n_rejected + n_accepted, kInputs);
  // Sanity of the harness itself: most mutations must break the file, some must not.
  EXPECT_GT(n_rejected, kInputs / 2);
  EXPECT_GT(n_accepted, 0);
}

}  // namespace
}  // namespace tessera::safetensors
