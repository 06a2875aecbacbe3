// File readers: IDX (Fashion-MNIST, plain or gzip via zlib) and the CIFAR-10/100 binary format.
// Every header field and length is checked before any byte is trusted; bad input throws.
#include <zlib.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <functional>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/data/dataset.h"

namespace tessera::data {

namespace {

constexpr int64_t kFashionSide = 28;
constexpr int64_t kFashionClasses = 10;
// A bound on decompressed output so that a hostile .gz cannot exhaust memory; the largest file
// we read (Fashion-MNIST train images) is 47 MB.
constexpr size_t kMaxGunzipBytes = size_t{4} << 30;
constexpr int64_t kCifarSide = 32;
constexpr int64_t kCifarPixels = 3 * kCifarSide * kCifarSide;

bool has_gzip_magic(const std::string& bytes, size_t offset) {
  return bytes.size() >= offset + 2 && static_cast<unsigned char>(bytes[offset]) == 0x1f &&
         static_cast<unsigned char>(bytes[offset + 1]) == 0x8b;
}

uint32_t read_big_endian_u32(const std::string& bytes, size_t offset) {
  uint32_t value = 0;
  for (size_t i = 0; i < 4; ++i) {
    value = (value << 8) | static_cast<unsigned char>(bytes[offset + i]);
  }
  return value;
}

/// Owns a zlib inflate stream so that every exit path (including throws) frees it.
class InflateStream {
 public:
  explicit InflateStream(const std::string& what) {
    std::memset(&stream_, 0, sizeof(stream_));
    // 16 + MAX_WBITS: expect a gzip wrapper and verify its CRC-32 and length trailer.
    const int rc = inflateInit2(&stream_, 16 + MAX_WBITS);
    TESSERA_CHECK(rc == Z_OK, "{}: zlib inflateInit2 failed (code {})", what, rc);
  }
  ~InflateStream() { inflateEnd(&stream_); }
  InflateStream(const InflateStream&) = delete;
  InflateStream& operator=(const InflateStream&) = delete;
  z_stream& get() { return stream_; }

 private:
  z_stream stream_;
};

std::string fashion_file_path(const std::string& dir, const std::string& name) {
  // Prefer an already unpacked file (faster); read_maybe_gzip sniffs the content either way.
  const std::string plain = dir + "/" + name;
  if (file_exists(plain)) return plain;
  const std::string gz = plain + ".gz";
  if (file_exists(gz)) return gz;
  TESSERA_CHECK(false,
                "Fashion-MNIST file not found: neither '{}' nor '{}' exists; install the Debian "
                "package with `apt-get install dataset-fashion-mnist` or pass --data DIR pointing "
                "at a folder with the IDX files",
                gz, plain);
  return {};
}

std::string format_dims(const std::vector<int64_t>& dims) {
  std::string text;
  for (size_t i = 0; i < dims.size(); ++i) text += (i > 0 ? "x" : "") + std::to_string(dims[i]);
  return text;
}

torch::Tensor to_unit_float(const torch::Tensor& bytes) {
  return bytes.to(torch::kFloat32) / 255.0;
}

}  // namespace

namespace {

/// The size an IDX file starting with `prefix` has in all (header plus the product of its dims),
/// SIZE_MAX while its header is incomplete, 0 when `prefix` is not an unsigned-byte IDX header.
size_t idx_file_size(const std::string& prefix) {
  if (prefix.size() < 4) return SIZE_MAX;
  const uint32_t magic = read_big_endian_u32(prefix, 0);
  const uint32_t n_dims = magic & 0xff;
  if ((magic >> 8) != 0x08 || n_dims < 1 || n_dims > 4) return 0;
  const size_t header = 4 + 4 * static_cast<size_t>(n_dims);
  if (prefix.size() < header) return SIZE_MAX;
  size_t total = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t dim = read_big_endian_u32(prefix, 4 + 4 * d);
    if (__builtin_mul_overflow(total, dim, &total)) return SIZE_MAX;
  }
  return header + total;
}

/// Inflates until the stream ends or the output passes `limit(output so far)` bytes.
std::string inflate_bounded(const std::string& bytes, const std::string& what,
                            const std::function<size_t(const std::string&)>& limit) {
  TESSERA_CHECK(has_gzip_magic(bytes, 0), "{}: not gzip data (no 1f 8b magic)", what);
  InflateStream inflater(what);
  z_stream& zs = inflater.get();
  std::string out;
  constexpr size_t kChunk = size_t{1} << 20;
  size_t in_pos = 0;
  bool member_done = false;
  while (true) {
    if (zs.avail_in == 0 && in_pos < bytes.size()) {
      // avail_in is 32-bit; feed large inputs in pieces.
      const size_t piece = std::min<size_t>(bytes.size() - in_pos, UINT_MAX);
      zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data() + in_pos));
      zs.avail_in = static_cast<uInt>(piece);
      in_pos += piece;
    }
    const size_t old_size = out.size();
    TESSERA_CHECK(old_size < kMaxGunzipBytes, "{}: decompressed data exceeds the {} byte limit",
                  what, kMaxGunzipBytes);
    out.resize(old_size + kChunk);
    zs.next_out = reinterpret_cast<Bytef*>(out.data() + old_size);
    zs.avail_out = static_cast<uInt>(kChunk);
    const int rc = inflate(&zs, Z_NO_FLUSH);
    out.resize(old_size + (kChunk - zs.avail_out));
    const size_t bound = limit(out);
    TESSERA_CHECK(out.size() <= bound,
                  "{}: decompressed data passes the {} bytes its header implies", what, bound);
    if (rc == Z_STREAM_END) {
      member_done = true;
      const size_t consumed = in_pos - zs.avail_in;
      if (consumed == bytes.size()) break;
      // gzip allows concatenated members; anything else after a member is garbage.
      TESSERA_CHECK(has_gzip_magic(bytes, consumed),
                    "{}: {} unexpected trailing bytes after the gzip stream", what,
                    bytes.size() - consumed);
      TESSERA_CHECK(inflateReset(&zs) == Z_OK, "{}: zlib inflateReset failed", what);
      member_done = false;
      continue;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR && zs.avail_in == 0 && in_pos == bytes.size()) {
      // No progress possible and no input left: the stream ended early.
      break;
    }
    TESSERA_CHECK(rc != Z_MEM_ERROR, "{}: out of memory while decompressing", what);
    TESSERA_CHECK(false, "{}: corrupt gzip data ({})", what,
                  zs.msg != nullptr ? zs.msg : ("zlib error " + std::to_string(rc)));
  }
  TESSERA_CHECK(member_done, "{}: truncated gzip data (stream ends before its trailer)", what);
  return out;
}

}  // namespace

std::string gunzip(const std::string& bytes, const std::string& what) {
  return inflate_bounded(bytes, what, [](const std::string&) { return kMaxGunzipBytes; });
}

std::string read_maybe_gzip(const std::string& path) {
  std::string bytes = read_file(path);
  if (!has_gzip_magic(bytes, 0)) return bytes;
  // Every file read through here is IDX: inflating stops at the size its header implies, so a
  // 4.7 MB bomb is refused after a megabyte instead of after 4 GB.
  const std::string what = "'" + path + "'";
  return inflate_bounded(bytes, what, [&](const std::string& out) {
    const size_t size = idx_file_size(out);
    TESSERA_CHECK(size != 0,
                  "{}: decompressed data does not start with an unsigned-byte IDX header", what);
    return std::min(size, kMaxGunzipBytes);
  });
}

torch::Tensor parse_idx(const std::string& bytes, const std::string& what, int64_t expected_dims) {
  TESSERA_CHECK(bytes.size() >= 4, "{}: {} bytes is too short for an IDX header", what,
                bytes.size());
  const uint32_t magic = read_big_endian_u32(bytes, 0);
  const uint32_t zeros = magic >> 16;
  const uint32_t type = (magic >> 8) & 0xff;
  const uint32_t n_dims = magic & 0xff;
  TESSERA_CHECK(zeros == 0, "{}: bad IDX magic 0x{:08x} (first two bytes must be zero)", what,
                magic);
  // 0x08 is unsigned byte; the other IDX types (int8, int16, int32, float, double) are not used
  // by any data set we read.
  TESSERA_CHECK(type == 0x08, "{}: IDX magic 0x{:08x} has element type 0x{:02x}, expected 0x08",
                what, magic, type);
  TESSERA_CHECK(n_dims >= 1 && n_dims <= 4, "{}: IDX magic 0x{:08x} declares {} dims, expected 1-4",
                what, magic, n_dims);
  if (expected_dims > 0) {
    TESSERA_CHECK(n_dims == static_cast<uint32_t>(expected_dims),
                  "{}: IDX magic 0x{:08x}, expected 0x{:08x} ({} dims)", what, magic,
                  0x800u + static_cast<uint32_t>(expected_dims), expected_dims);
  }
  const size_t header = 4 + 4 * static_cast<size_t>(n_dims);
  TESSERA_CHECK(bytes.size() >= header, "{}: {} bytes is too short for a {}-dim IDX header", what,
                bytes.size(), n_dims);
  const size_t payload = bytes.size() - header;
  std::vector<int64_t> dims;
  bool any_zero = false;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint32_t dim = read_big_endian_u32(bytes, 4 + 4 * d);
    dims.push_back(static_cast<int64_t>(dim));
    any_zero = any_zero || dim == 0;
  }
  // The product of four 32-bit dims can overflow 64 bits; stop multiplying once it exceeds the
  // payload, since then the lengths cannot match anyway.
  size_t expected = any_zero ? 0 : 1;
  bool too_big = false;
  for (int64_t dim : dims) {
    if (any_zero) break;
    if (expected > payload / static_cast<size_t>(dim)) {
      too_big = true;
      break;
    }
    expected *= static_cast<size_t>(dim);
  }
  TESSERA_CHECK(
      !too_big && expected == payload,
      "{}: IDX header dims {} need {} payload bytes but the data has {}", what, format_dims(dims),
      too_big ? std::string("more than ") + std::to_string(payload) : std::to_string(expected),
      payload);
  torch::Tensor tensor = torch::empty(dims, torch::kUInt8);
  if (payload > 0) std::memcpy(tensor.data_ptr<uint8_t>(), bytes.data() + header, payload);
  return tensor;
}

Dataset load_fashion_mnist(const std::string& split, const std::string& dir, int64_t pad_to) {
  TESSERA_CHECK(split == "train" || split == "test",
                "Fashion-MNIST split '{}' is unknown, expected 'train' or 'test'", split);
  TESSERA_CHECK(pad_to >= kFashionSide,
                "pad_to {} is smaller than the Fashion-MNIST image size {} (cropping is not "
                "supported)",
                pad_to, kFashionSide);
  const std::string prefix = split == "train" ? "train" : "t10k";
  const std::string images_path = fashion_file_path(dir, prefix + "-images-idx3-ubyte");
  const std::string labels_path = fashion_file_path(dir, prefix + "-labels-idx1-ubyte");

  const torch::Tensor images_u8 =
      parse_idx(read_maybe_gzip(images_path), "'" + images_path + "'", 3);
  const torch::Tensor labels_u8 =
      parse_idx(read_maybe_gzip(labels_path), "'" + labels_path + "'", 1);
  TESSERA_CHECK(images_u8.size(1) == kFashionSide && images_u8.size(2) == kFashionSide,
                "'{}': images are {}x{}, expected {}x{}", images_path, images_u8.size(1),
                images_u8.size(2), kFashionSide, kFashionSide);
  TESSERA_CHECK(images_u8.size(0) == labels_u8.size(0),
                "'{}' holds {} images but '{}' holds {} labels", images_path, images_u8.size(0),
                labels_path, labels_u8.size(0));
  TESSERA_CHECK(images_u8.size(0) > 0, "'{}' holds no images", images_path);
  const int64_t bad_label = labels_u8.max().item<int64_t>();
  TESSERA_CHECK(bad_label < kFashionClasses, "'{}': label {} at index {} is not in [0, {})",
                labels_path, bad_label, labels_u8.argmax().item<int64_t>(), kFashionClasses);

  Dataset dataset;
  dataset.name = "fashion-mnist/" + split;
  dataset.num_classes = kFashionClasses;
  torch::Tensor images = to_unit_float(images_u8).unsqueeze(1);  // [N, 1, 28, 28]
  if (pad_to > kFashionSide) {
    const int64_t before = (pad_to - kFashionSide) / 2;
    const int64_t after = pad_to - kFashionSide - before;
    images = torch::constant_pad_nd(images, {before, after, before, after}, 0.0);
  }
  dataset.images = images.contiguous();
  dataset.labels = labels_u8.to(torch::kInt64);
  return dataset;
}

Dataset load_cifar(int variant, const std::string& split, const std::string& dir) {
  TESSERA_CHECK(variant == 10 || variant == 100, "CIFAR variant {} is unknown, expected 10 or 100",
                variant);
  TESSERA_CHECK(split == "train" || split == "test",
                "CIFAR split '{}' is unknown, expected 'train' or 'test'", split);
  std::vector<std::string> names;
  if (variant == 10) {
    if (split == "train") {
      for (int i = 1; i <= 5; ++i) names.push_back("data_batch_" + std::to_string(i) + ".bin");
    } else {
      names.push_back("test_batch.bin");
    }
  } else {
    names.push_back(split + ".bin");
  }
  // CIFAR-10 records: label, 3072 pixels. CIFAR-100: coarse label, fine label, 3072 pixels.
  const size_t n_label_bytes = variant == 10 ? 1 : 2;
  const size_t record = n_label_bytes + static_cast<size_t>(kCifarPixels);

  std::vector<std::string> contents;
  size_t n_total = 0;
  for (const std::string& name : names) {
    const std::string path = dir + "/" + name;
    TESSERA_CHECK(file_exists(path),
                  "CIFAR-{} file not found: '{}'; download the binary version from "
                  "https://www.cs.toronto.edu/~kriz/cifar.html and pass --data DIR",
                  variant, path);
    std::string bytes = read_file(path);
    TESSERA_CHECK(!bytes.empty() && bytes.size() % record == 0,
                  "'{}': {} bytes is not a positive multiple of the {}-byte CIFAR-{} record", path,
                  bytes.size(), record, variant);
    n_total += bytes.size() / record;
    contents.push_back(std::move(bytes));
  }

  torch::Tensor pixels =
      torch::empty({static_cast<int64_t>(n_total), 3, kCifarSide, kCifarSide}, torch::kUInt8);
  torch::Tensor labels = torch::empty({static_cast<int64_t>(n_total)}, torch::kInt64);
  uint8_t* pixel_out = pixels.data_ptr<uint8_t>();
  int64_t* label_out = labels.data_ptr<int64_t>();
  size_t row = 0;
  for (size_t f = 0; f < contents.size(); ++f) {
    const std::string& bytes = contents[f];
    const size_t n_records = bytes.size() / record;
    for (size_t r = 0; r < n_records; ++r, ++row) {
      const auto* rec = reinterpret_cast<const unsigned char*>(bytes.data() + r * record);
      int64_t label = rec[0];
      if (variant == 100) {
        TESSERA_CHECK(rec[0] < 20, "'{}/{}': record {} has coarse label {}, expected < 20", dir,
                      names[f], r, int{rec[0]});
        label = rec[1];
      }
      TESSERA_CHECK(label < variant, "'{}/{}': record {} has label {}, expected < {}", dir,
                    names[f], r, label, variant);
      label_out[row] = label;
      // The 3072 bytes are already channel-major (1024 red, 1024 green, 1024 blue), i.e. CHW.
      std::memcpy(pixel_out + row * kCifarPixels, rec + n_label_bytes, kCifarPixels);
    }
  }

  Dataset dataset;
  dataset.name = "cifar" + std::to_string(variant) + "/" + split;
  dataset.num_classes = variant;
  dataset.images = to_unit_float(pixels);
  dataset.labels = labels;
  return dataset;
}

}  // namespace tessera::data
