// Tests for the IDX / gzip / Fashion-MNIST and CIFAR readers: round trips on files written here,
// every bad input class, a seeded mutation fuzz of the parsers, and the real Debian data set.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/data/dataset.h"
#include "test_support.h"

namespace {

using tessera::data::gunzip;
using tessera::data::load_cifar;
using tessera::data::load_fashion_mnist;
using tessera::data::parse_idx;
using tessera::testing::TempDir;
using tessera::testing::write_bytes;

void put_u32(std::string& out, uint32_t value) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out.push_back(static_cast<char>((value >> shift) & 0xff));
}

/// IDX bytes: magic 0x000008<ndims>, big-endian dims, then the payload.
std::string idx_bytes(const std::vector<uint32_t>& dims, const std::string& payload,
                      uint32_t magic = 0) {
  std::string out;
  put_u32(out, magic != 0 ? magic : 0x800u + static_cast<uint32_t>(dims.size()));
  for (uint32_t d : dims) put_u32(out, d);
  return out + payload;
}

/// n images of 28x28 with pixel (i, r, c) = (i * 7 + r * 3 + c) mod 256.
std::string image_payload(int n) {
  std::string payload;
  for (int i = 0; i < n; ++i) {
    for (int r = 0; r < 28; ++r) {
      for (int c = 0; c < 28; ++c) payload.push_back(static_cast<char>((i * 7 + r * 3 + c) % 256));
    }
  }
  return payload;
}

std::string label_payload(int n) {
  std::string payload;
  for (int i = 0; i < n; ++i) payload.push_back(static_cast<char>((i * 3) % 10));
  return payload;
}

/// Writes a gzip file with zlib's gz* API (an independent writer from the reader under test).
void write_gzip(const std::string& path, const std::string& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  ASSERT_NE(file, nullptr);
  ASSERT_EQ(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())),
            static_cast<int>(bytes.size()));
  ASSERT_EQ(gzclose(file), Z_OK);
}

std::string gzip_bytes(const std::string& bytes) {
  TempDir dir;
  write_gzip(dir.file("x.gz"), bytes);
  return tessera::read_file(dir.file("x.gz"));
}

/// Writes a Fashion-MNIST style pair for `prefix` ("train" or "t10k").
void write_fashion(const TempDir& dir, const std::string& prefix, int n_images, int n_labels,
                   bool gz) {
  const std::string images =
      idx_bytes({static_cast<uint32_t>(n_images), 28, 28}, image_payload(n_images));
  const std::string labels = idx_bytes({static_cast<uint32_t>(n_labels)}, label_payload(n_labels));
  const std::string images_path = dir.file(prefix + "-images-idx3-ubyte");
  const std::string labels_path = dir.file(prefix + "-labels-idx1-ubyte");
  if (gz) {
    write_gzip(images_path + ".gz", images);
    write_gzip(labels_path + ".gz", labels);
  } else {
    write_bytes(images_path, images);
    write_bytes(labels_path, labels);
  }
}

std::string error_message(const std::function<void()>& body) {
  try {
    body();
  } catch (const tessera::Error& error) {
    return error.what();
  }
  ADD_FAILURE() << "expected tessera::Error";
  return {};
}

TEST(ParseIdx, RoundTripsDimsAndBytes) {
  std::string payload;
  for (int i = 0; i < 2 * 3 * 4; ++i) payload.push_back(static_cast<char>(i * 10));
  const torch::Tensor tensor = parse_idx(idx_bytes({2, 3, 4}, payload), "test", 3);
  ASSERT_EQ(tensor.sizes(), torch::IntArrayRef({2, 3, 4}));
  ASSERT_EQ(tensor.scalar_type(), torch::kUInt8);
  // Row-major: element (a, b, c) is payload[a*12 + b*4 + c].
  EXPECT_EQ(tensor[1][2][3].item<int>(), static_cast<unsigned char>(payload[1 * 12 + 2 * 4 + 3]));
  EXPECT_EQ(tensor[0][1][0].item<int>(), 40);
  const torch::Tensor labels = parse_idx(idx_bytes({5}, "\x01\x02\x03\x04\x09"), "labels", 1);
  EXPECT_EQ(labels.sizes(), torch::IntArrayRef({5}));
  EXPECT_EQ(labels[4].item<int>(), 9);
}

TEST(ParseIdx, RejectsEveryMalformedHeader) {
  const std::string good = idx_bytes({2, 2}, "abcd");
  EXPECT_NO_THROW(parse_idx(good, "good"));
  struct Case {
    const char* name;
    std::string bytes;
    int64_t expected_dims;
  };
  const std::vector<Case> cases = {
      {"empty", "", 0},
      {"three bytes", std::string("\0\0\x08", 3), 0},
      {"nonzero first byte", idx_bytes({2, 2}, "abcd", 0x01000802u), 0},
      {"int32 element type", idx_bytes({2, 2}, "abcd", 0x00000c02u), 0},
      {"zero dims", idx_bytes({}, "", 0x00000800u), 0},
      {"five dims", idx_bytes({1, 1, 1, 1, 1}, "a"), 0},
      {"labels where images expected", idx_bytes({4}, "abcd"), 3},
      {"images where labels expected", idx_bytes({1, 2, 2}, "abcd"), 1},
      {"header cut inside dims", idx_bytes({2, 2}, "abcd").substr(0, 9), 0},
      {"payload one byte short", idx_bytes({2, 2}, "abc"), 0},
      {"payload one byte long", idx_bytes({2, 2}, "abcde"), 0},
      {"dims overflow 64 bits", idx_bytes({0xffffffffu, 0xffffffffu, 0xffffffffu}, "abcd"), 0},
  };
  for (const Case& c : cases) {
    EXPECT_THROW(parse_idx(c.bytes, c.name, c.expected_dims), tessera::Error) << c.name;
  }
  const std::string message = error_message([] { parse_idx(idx_bytes({2, 2}, "abc"), "x.idx"); });
  EXPECT_NE(message.find("x.idx"), std::string::npos) << message;
  EXPECT_NE(message.find("2x2"), std::string::npos) << message;
}

TEST(Gunzip, InflatesZlibWrittenFileAndConcatenatedMembers) {
  const std::string text = "hello idx " + std::string(5000, 'z') + image_payload(3);
  EXPECT_EQ(gunzip(gzip_bytes(text), "one"), text);
  // gzip allows members back to back (what `cat a.gz b.gz` makes).
  EXPECT_EQ(gunzip(gzip_bytes("first|") + gzip_bytes("second"), "two"), "first|second");
}

TEST(Gunzip, RejectsTruncatedCorruptAndTrailingData) {
  const std::string packed = gzip_bytes(image_payload(4));
  for (size_t keep :
       {size_t{2}, size_t{10}, packed.size() / 2, packed.size() - 4, packed.size() - 1}) {
    EXPECT_THROW(gunzip(packed.substr(0, keep), "cut"), tessera::Error) << "kept " << keep;
  }
  std::string crc_broken = packed;
  crc_broken[crc_broken.size() - 6] ^= 0x01;  // inside the CRC-32 trailer
  EXPECT_THROW(gunzip(crc_broken, "crc"), tessera::Error);
  std::string data_broken = packed;
  data_broken[12] ^= 0xff;  // inside the deflate stream
  EXPECT_THROW(gunzip(data_broken, "data"), tessera::Error);
  EXPECT_THROW(gunzip(packed + "garbage", "tail"), tessera::Error);
  EXPECT_THROW(gunzip("not gzip", "plain"), tessera::Error);
}

TEST(LoadFashionMnist, ReadsPlainFilesPadsAndScales) {
  TempDir dir;
  write_fashion(dir, "train", 6, 6, false);
  const tessera::data::Dataset data = load_fashion_mnist("train", dir.path(), 32);
  EXPECT_EQ(data.num_classes, 10);
  ASSERT_EQ(data.images.sizes(), torch::IntArrayRef({6, 1, 32, 32}));
  ASSERT_EQ(data.labels.sizes(), torch::IntArrayRef({6}));
  EXPECT_EQ(data.labels.scalar_type(), torch::kInt64);
  EXPECT_EQ(data.images.scalar_type(), torch::kFloat32);
  for (int i = 0; i < 6; ++i) EXPECT_EQ(data.labels[i].item<int64_t>(), (i * 3) % 10);
  // Padding is 2 on each side: source pixel (r, c) lands at (r + 2, c + 2).
  for (int i : {0, 5}) {
    for (int r : {0, 13, 27}) {
      for (int c : {0, 9, 27}) {
        const float expected = static_cast<float>((i * 7 + r * 3 + c) % 256) / 255.0f;
        EXPECT_FLOAT_EQ(data.images[i][0][r + 2][c + 2].item<float>(), expected);
      }
    }
  }
  const torch::Tensor border =
      torch::cat({data.images.narrow(2, 0, 2).flatten(), data.images.narrow(2, 30, 2).flatten(),
                  data.images.narrow(3, 0, 2).flatten(), data.images.narrow(3, 30, 2).flatten()});
  EXPECT_EQ(border.abs().max().item<float>(), 0.0f);

  const tessera::data::Dataset unpadded = load_fashion_mnist("train", dir.path(), 28);
  ASSERT_EQ(unpadded.images.sizes(), torch::IntArrayRef({6, 1, 28, 28}));
  EXPECT_TRUE(torch::equal(unpadded.images, data.images.narrow(2, 2, 28).narrow(3, 2, 28)));
  // 33 - 28 = 5: the odd extra column/row goes after the image.
  const tessera::data::Dataset odd = load_fashion_mnist("train", dir.path(), 33);
  EXPECT_TRUE(torch::equal(odd.images.narrow(2, 2, 28).narrow(3, 2, 28), unpadded.images));
}

TEST(LoadFashionMnist, GzipAndPlainFilesGiveTheSameData) {
  TempDir plain_dir;
  TempDir gz_dir;
  write_fashion(plain_dir, "t10k", 5, 5, false);
  write_fashion(gz_dir, "t10k", 5, 5, true);
  const tessera::data::Dataset plain = load_fashion_mnist("test", plain_dir.path());
  const tessera::data::Dataset packed = load_fashion_mnist("test", gz_dir.path());
  EXPECT_TRUE(torch::equal(plain.images, packed.images));
  EXPECT_TRUE(torch::equal(plain.labels, packed.labels));
  EXPECT_EQ(packed.images.size(0), 5);
}

TEST(LoadFashionMnist, BadFilesThrowTesseraError) {
  TempDir dir;
  const std::string images = dir.file("train-images-idx3-ubyte");
  const std::string labels = dir.file("train-labels-idx1-ubyte");
  const auto load = [&] { load_fashion_mnist("train", dir.path()); };
  write_fashion(dir, "train", 4, 4, false);
  EXPECT_NO_THROW(load());

  write_bytes(images, idx_bytes({4, 28, 28}, image_payload(4), 0x00000801u));  // wrong magic
  EXPECT_THROW(load(), tessera::Error);
  write_bytes(images, idx_bytes({4, 28, 28}, image_payload(4)).substr(0, 16 + 4 * 784 - 100));
  EXPECT_THROW(load(), tessera::Error);  // truncated
  write_bytes(images, idx_bytes({4, 28, 28}, image_payload(3)));
  EXPECT_THROW(load(), tessera::Error);  // header says 4 images, data holds 3
  write_bytes(images, idx_bytes({4, 27, 27}, image_payload(4).substr(0, 4 * 27 * 27)));
  EXPECT_THROW(load(), tessera::Error);  // not 28x28
  write_bytes(images, idx_bytes({0, 28, 28}, ""));
  write_bytes(labels, idx_bytes({0}, ""));
  EXPECT_THROW(load(), tessera::Error);  // empty

  write_fashion(dir, "train", 4, 3, false);  // count mismatch
  const std::string mismatch = error_message(load);
  EXPECT_NE(mismatch.find("4 images"), std::string::npos) << mismatch;
  EXPECT_NE(mismatch.find("3 labels"), std::string::npos) << mismatch;

  write_fashion(dir, "train", 4, 4, false);
  write_bytes(labels, idx_bytes({4}, std::string("\x01\x02\x0a\x03", 4)));  // label 10
  const std::string bad_label = error_message(load);
  EXPECT_NE(bad_label.find("label 10 at index 2"), std::string::npos) << bad_label;

  write_fashion(dir, "train", 4, 4, false);
  std::string packed = gzip_bytes(idx_bytes({4}, label_payload(4)));
  packed[packed.size() - 8] ^= 0x10;  // corrupt CRC
  std::remove(labels.c_str());
  write_bytes(labels + ".gz", packed);
  EXPECT_THROW(load(), tessera::Error);
  write_bytes(labels + ".gz", gzip_bytes(idx_bytes({4}, label_payload(4))).substr(0, 20));
  EXPECT_THROW(load(), tessera::Error);  // truncated gzip

  EXPECT_THROW(load_fashion_mnist("validation", dir.path()), tessera::Error);
  EXPECT_THROW(load_fashion_mnist("train", dir.path(), 27), tessera::Error);
}

TEST(LoadFashionMnist, MissingFileNamesPathAndHowToGetIt) {
  TempDir dir;
  const std::string message = error_message([&] { load_fashion_mnist("test", dir.path()); });
  EXPECT_NE(message.find(dir.file("t10k-images-idx3-ubyte")), std::string::npos) << message;
  EXPECT_NE(message.find("apt-get install dataset-fashion-mnist"), std::string::npos) << message;
  EXPECT_NE(message.find("--data DIR"), std::string::npos) << message;
}

/// Applies 1-4 random edits: bit flips, special bytes, truncation, extension, insert, delete,
/// and header dim overwrites (the fields a parser is most likely to trust).
std::string mutate(const std::string& input, std::mt19937_64& rng) {
  std::string out = input;
  const int n_edits = 1 + static_cast<int>(rng() % 4);
  const unsigned char specials[] = {0x00, 0x01, 0x03, 0x08, 0x7f, 0x80, 0xff};
  for (int e = 0; e < n_edits; ++e) {
    const size_t pos = out.empty() ? 0 : rng() % out.size();
    switch (rng() % 7) {
      case 0:
        if (!out.empty()) out[pos] = static_cast<char>(out[pos] ^ (1 << (rng() % 8)));
        break;
      case 1:
        if (!out.empty()) out[pos] = static_cast<char>(specials[rng() % sizeof(specials)]);
        break;
      case 2:
        out.resize(out.empty() ? 0 : rng() % out.size());
        break;
      case 3:
        for (uint64_t k = rng() % 16; k > 0; --k) out.push_back(static_cast<char>(rng()));
        break;
      case 4:
        out.insert(out.begin() + static_cast<std::ptrdiff_t>(pos), static_cast<char>(rng()));
        break;
      case 5:
        if (!out.empty()) out.erase(out.begin() + static_cast<std::ptrdiff_t>(pos));
        break;
      default: {
        const size_t field = 4 + 4 * (rng() % 4);
        if (out.size() >= field + 4) {
          for (int k = 0; k < 4; ++k) out[field + k] = static_cast<char>(rng());
        }
        break;
      }
    }
  }
  return out;
}

TEST(ParseIdxFuzz, MutatedInputsOnlyEverThrowTesseraError) {
  std::mt19937_64 rng(20240607);
  const std::vector<std::string> seeds = {
      idx_bytes({3, 5, 4}, image_payload(1).substr(0, 60)),
      idx_bytes({7}, label_payload(7)),
      idx_bytes({2, 28, 28}, image_payload(2)),
      idx_bytes({2, 2, 2, 2}, std::string(16, '\x05')),
  };
  int tried = 0;
  int rejected = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string input = mutate(seeds[static_cast<size_t>(i) % seeds.size()], rng);
    const int64_t expected_dims = static_cast<int64_t>(rng() % 4);
    ++tried;
    try {
      const torch::Tensor tensor = parse_idx(input, "fuzz", expected_dims);
      // Accepted: the header and payload must account for every byte.
      ASSERT_EQ(4 + 4 * static_cast<size_t>(tensor.dim()) + static_cast<size_t>(tensor.numel()),
                input.size())
          << "case " << i;
      if (expected_dims > 0) {
        ASSERT_EQ(tensor.dim(), expected_dims) << "case " << i;
      }
    } catch (const tessera::Error&) {
      ++rejected;
    } catch (const std::exception& other) {
      FAIL() << "case " << i << " threw a non-tessera exception: " << other.what();
    }
  }
  std::printf("[ fuzz ] parse_idx: %d mutated inputs tried, %d rejected, %d accepted\n", tried,
              rejected, tried - rejected);
  EXPECT_EQ(tried, 20000);
  EXPECT_GT(rejected, tried / 2);  // most mutations break the exact-length rule
  EXPECT_LT(rejected, tried);      // and some (payload-only edits) stay valid
}

TEST(ParseIdxFuzz, MutatedGzipOnlyEverThrowsTesseraError) {
  std::mt19937_64 rng(77);
  const std::string packed = gzip_bytes(idx_bytes({2, 28, 28}, image_payload(2)));
  int tried = 0;
  int rejected = 0;
  for (int i = 0; i < 5000; ++i) {
    std::string input = mutate(packed, rng);
    ++tried;
    try {
      parse_idx(gunzip(input, "fuzz.gz"), "fuzz.gz", 3);
    } catch (const tessera::Error&) {
      ++rejected;
    } catch (const std::exception& other) {
      FAIL() << "case " << i << " threw a non-tessera exception: " << other.what();
    }
  }
  std::printf("[ fuzz ] gunzip+parse_idx: %d mutated inputs tried, %d rejected\n", tried, rejected);
  EXPECT_GT(rejected, tried * 9 / 10);  // CRC-32 and lengths catch nearly every edit
}

// --- CIFAR -------------------------------------------------------------------------------

/// One CIFAR record; pixel p of channel ch is (seed + ch * 31 + p) mod 256.
std::string cifar_record(const std::vector<int>& label_bytes, int seed) {
  std::string out;
  for (int b : label_bytes) out.push_back(static_cast<char>(b));
  for (int ch = 0; ch < 3; ++ch) {
    for (int p = 0; p < 1024; ++p) out.push_back(static_cast<char>((seed + ch * 31 + p) % 256));
  }
  return out;
}

TEST(LoadCifar, ReadsTenClassBatchesInOrder) {
  TempDir dir;
  const int per_file[5] = {2, 1, 1, 1, 3};
  int seed = 0;
  for (int f = 0; f < 5; ++f) {
    std::string bytes;
    for (int r = 0; r < per_file[f]; ++r, ++seed) bytes += cifar_record({seed % 10}, seed);
    write_bytes(dir.file("data_batch_" + std::to_string(f + 1) + ".bin"), bytes);
  }
  write_bytes(dir.file("test_batch.bin"), cifar_record({9}, 100) + cifar_record({0}, 101));

  const tessera::data::Dataset train = load_cifar(10, "train", dir.path());
  ASSERT_EQ(train.images.sizes(), torch::IntArrayRef({8, 3, 32, 32}));
  EXPECT_EQ(train.num_classes, 10);
  for (int i = 0; i < 8; ++i) {
    EXPECT_EQ(train.labels[i].item<int64_t>(), i % 10);
    // Channel-major layout: pixel p = row * 32 + col of channel ch.
    for (int ch : {0, 2}) {
      for (int p : {0, 33, 1023}) {
        const float expected = static_cast<float>((i + ch * 31 + p) % 256) / 255.0f;
        EXPECT_FLOAT_EQ(train.images[i][ch][p / 32][p % 32].item<float>(), expected);
      }
    }
  }
  const tessera::data::Dataset test = load_cifar(10, "test", dir.path());
  ASSERT_EQ(test.size(), 2);
  EXPECT_EQ(test.labels[0].item<int64_t>(), 9);
  EXPECT_FLOAT_EQ(test.images[1][1][0][0].item<float>(), (101 + 31) / 255.0f);
}

TEST(LoadCifar, HundredClassUsesFineLabels) {
  TempDir dir;
  write_bytes(dir.file("train.bin"), cifar_record({3, 42}, 0) + cifar_record({19, 99}, 1));
  const tessera::data::Dataset data = load_cifar(100, "train", dir.path());
  EXPECT_EQ(data.num_classes, 100);
  ASSERT_EQ(data.size(), 2);
  EXPECT_EQ(data.labels[0].item<int64_t>(), 42);
  EXPECT_EQ(data.labels[1].item<int64_t>(), 99);
  EXPECT_FLOAT_EQ(data.images[1][0][0][1].item<float>(), 2 / 255.0f);
}

TEST(LoadCifar, BadFilesThrowTesseraError) {
  TempDir dir;
  const std::string test_path = dir.file("test_batch.bin");
  const std::string missing = error_message([&] { load_cifar(10, "test", dir.path()); });
  EXPECT_NE(missing.find(test_path), std::string::npos) << missing;

  write_bytes(test_path, cifar_record({1}, 0) + "x");  // not a multiple of 3073
  EXPECT_THROW(load_cifar(10, "test", dir.path()), tessera::Error);
  write_bytes(test_path, "");
  EXPECT_THROW(load_cifar(10, "test", dir.path()), tessera::Error);
  write_bytes(test_path, cifar_record({10}, 0));  // label out of range
  EXPECT_THROW(load_cifar(10, "test", dir.path()), tessera::Error);
  write_bytes(test_path, cifar_record({1}, 0));
  EXPECT_NO_THROW(load_cifar(10, "test", dir.path()));
  // Only 1..4 present: data_batch_1.bin is missing for the train split.
  EXPECT_THROW(load_cifar(10, "train", dir.path()), tessera::Error);

  write_bytes(dir.file("test.bin"), cifar_record({1, 100}, 0));  // fine label 100
  EXPECT_THROW(load_cifar(100, "test", dir.path()), tessera::Error);
  write_bytes(dir.file("test.bin"), cifar_record({20, 5}, 0));  // coarse label 20
  EXPECT_THROW(load_cifar(100, "test", dir.path()), tessera::Error);
  write_bytes(dir.file("test.bin"), cifar_record({1}, 0));  // CIFAR-10 record size
  EXPECT_THROW(load_cifar(100, "test", dir.path()), tessera::Error);
  EXPECT_THROW(load_cifar(20, "test", dir.path()), tessera::Error);
  EXPECT_THROW(load_cifar(10, "val", dir.path()), tessera::Error);
}

// --- The real data set ---------------------------------------------------------------------

TEST(RealFashionMnist, TestSplitFromDebianPackage) {
  const std::string dir = tessera::data::kFashionMnistDir;
  if (!tessera::file_exists(dir + "/t10k-images-idx3-ubyte.gz") &&
      !tessera::file_exists(dir + "/t10k-images-idx3-ubyte")) {
    GTEST_SKIP() << "dataset-fashion-mnist is not installed (" << dir << ")";
  }
  const tessera::data::Dataset data = load_fashion_mnist("test");
  ASSERT_EQ(data.images.sizes(), torch::IntArrayRef({10000, 1, 32, 32}));
  ASSERT_EQ(data.labels.sizes(), torch::IntArrayRef({10000}));
  const torch::Tensor counts = torch::bincount(data.labels, {}, 10);
  for (int c = 0; c < 10; ++c) EXPECT_EQ(counts[c].item<int64_t>(), 1000) << "class " << c;
  EXPECT_GE(data.images.min().item<float>(), 0.0f);
  EXPECT_LE(data.images.max().item<float>(), 1.0f);
  EXPECT_EQ(data.images.max().item<float>(), 1.0f);
  // Reference values computed independently with Python's gzip module on the package files:
  // the first ten labels and the sum of all raw pixel bytes (and of the first image).
  const std::vector<int64_t> first_labels = {9, 2, 1, 1, 6, 1, 4, 6, 5, 7};
  for (size_t i = 0; i < first_labels.size(); ++i) {
    EXPECT_EQ(data.labels[static_cast<int64_t>(i)].item<int64_t>(), first_labels[i]);
  }
  const torch::Tensor raw = (data.images * 255.0).round().to(torch::kInt64);
  EXPECT_EQ(raw.sum().item<int64_t>(), 573469082);
  EXPECT_EQ(raw[0].sum().item<int64_t>(), 33456);
}

TEST(GzipBomb, InflatingStopsAtTheSizeTheIdxHeaderImplies) {
  // One 28x28 image declared, 64 MiB of zeros behind it (about 64 KB compressed): the reader
  // refuses it within a megabyte of inflation; before, it inflated everything and parse_idx
  // then complained about the payload length.
  TempDir dir;
  std::string bomb = idx_bytes({1, 28, 28}, image_payload(1));
  bomb.resize(size_t{64} << 20, '\0');
  const std::string path = dir.file("train-images-idx3-ubyte.gz");
  write_gzip(path, bomb);
  std::string error;
  try {
    tessera::data::read_maybe_gzip(path);
  } catch (const tessera::Error& e) {
    error = e.what();
  }
  EXPECT_NE(error.find(path), std::string::npos) << error;
  EXPECT_NE(error.find("its header implies"), std::string::npos) << error;
  // Not IDX at all: refused as soon as the first bytes are out.
  write_gzip(path, std::string(1 << 20, 'x'));
  EXPECT_THROW(tessera::data::read_maybe_gzip(path), tessera::Error);
  // An honest file still reads, whole.
  const std::string honest = idx_bytes({2, 28, 28}, image_payload(2));
  write_gzip(path, honest);
  EXPECT_EQ(tessera::data::read_maybe_gzip(path), honest);
}

TEST(RealFashionMnist, TrainSplitFromDebianPackage) {
  const std::string dir = tessera::data::kFashionMnistDir;
  if (!tessera::file_exists(dir + "/train-images-idx3-ubyte.gz") &&
      !tessera::file_exists(dir + "/train-images-idx3-ubyte")) {
    GTEST_SKIP() << "dataset-fashion-mnist is not installed (" << dir << ")";
  }
  const tessera::data::Dataset data = load_fashion_mnist("train", dir, 28);
  ASSERT_EQ(data.images.sizes(), torch::IntArrayRef({60000, 1, 28, 28}));
  const torch::Tensor counts = torch::bincount(data.labels, {}, 10);
  for (int c = 0; c < 10; ++c) EXPECT_EQ(counts[c].item<int64_t>(), 6000) << "class " << c;
  // First labels read independently with Python's gzip module.
  const std::vector<int64_t> first_labels = {9, 0, 0, 3, 0, 2, 7, 2, 5, 5};
  for (size_t i = 0; i < first_labels.size(); ++i) {
    EXPECT_EQ(data.labels[static_cast<int64_t>(i)].item<int64_t>(), first_labels[i]);
  }
}

}  // namespace
