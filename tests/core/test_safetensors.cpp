// safetensors: round trips for every dtype, a hand-written golden file (interoperability with
// other writers), and one test per kind of malformed input.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/safetensors.h"
#include "test_support.h"

namespace tessera::safetensors {
namespace {

using ::tessera::testing::SeededTest;
using ::tessera::testing::TempDir;
using ::tessera::testing::write_bytes;

/// The raw bytes of a CPU tensor (for exact comparison, NaN payloads included).
std::string bytes_of(const torch::Tensor& tensor) {
  const torch::Tensor t = tensor.contiguous();
  return std::string(static_cast<const char*>(t.data_ptr()),
                     static_cast<size_t>(t.numel()) * t.element_size());
}

void expect_same_file(const File& expected, const File& actual) {
  ASSERT_EQ(expected.tensors.size(), actual.tensors.size());
  for (size_t i = 0; i < expected.tensors.size(); ++i) {
    const auto& [name, tensor] = expected.tensors[i];
    SCOPED_TRACE(name);
    EXPECT_EQ(actual.tensors[i].first, name);
    const torch::Tensor& got = actual.tensors[i].second;
    EXPECT_EQ(got.scalar_type(), tensor.scalar_type());
    EXPECT_EQ(got.sizes(), tensor.sizes());
    EXPECT_EQ(bytes_of(got), bytes_of(tensor));
  }
  EXPECT_EQ(actual.metadata, expected.metadata);
}

/// One tensor of each supported dtype, plus a 0-dim scalar, empty tensors and special floats.
File every_dtype_file() {
  File file;
  file.metadata = {{"tessera.arch", R"({"name":"vgg11_bn"})"}, {"format", "pt"}, {"empty", ""}};
  file.tensors = {
      {"f64", torch::randn({2, 3}, torch::kFloat64)},
      {"f32", torch::tensor({1.0f, -0.0f, std::numeric_limits<float>::infinity(),
                             std::numeric_limits<float>::quiet_NaN(), 3.5e-38f})},
      {"f16", torch::randn({4, 1, 2}).to(torch::kHalf)},
      {"bf16", torch::randn({3}).to(torch::kBFloat16)},
      {"i64", torch::tensor({std::numeric_limits<int64_t>::min(), int64_t{-1}, int64_t{0},
                             std::numeric_limits<int64_t>::max()})},
      {"i32", torch::randint(-100000, 100000, {5}, torch::kInt32)},
      {"i16", torch::tensor({-32768, -1, 0, 32767}, torch::kInt16)},
      {"i8", torch::tensor({-128, -1, 0, 127}, torch::kInt8)},
      {"u8", torch::tensor({0, 1, 128, 255}, torch::kUInt8)},
      {"bool", torch::tensor({true, false, true})},
      {"scalar", torch::tensor(2.5)},
      {"scalar_i64", torch::tensor(int64_t{-7})},
      {"empty", torch::empty({0, 4}, torch::kFloat32)},
      {"empty_bool", torch::empty({3, 0}, torch::kBool)},
      {"unicode name \xc3\xa9", torch::ones({1})},
  };
  return file;
}

class SafetensorsTest : public SeededTest {};

TEST_F(SafetensorsTest, RoundTripKeepsEveryDtypeShapeAndMetadata) {
  const File file = every_dtype_file();
  const std::string bytes = serialize(file);
  expect_same_file(file, parse(bytes));
}

TEST_F(SafetensorsTest, SaveThenLoadMatchesParse) {
  TempDir dir;
  const File file = every_dtype_file();
  save(dir.file("m.safetensors"), file);
  expect_same_file(file, load(dir.file("m.safetensors")));
  EXPECT_EQ(tessera::read_file(dir.file("m.safetensors")), serialize(file));
}

TEST_F(SafetensorsTest, EmptyFileHasOnlyAHeader) {
  const File empty;
  const std::string bytes = serialize(empty);
  ASSERT_EQ(bytes.size(), 16u);  // 8-byte length + "{}" padded to 8
  EXPECT_EQ(bytes.substr(8), "{}      ");
  const File parsed = parse(bytes);
  EXPECT_TRUE(parsed.tensors.empty());
  EXPECT_TRUE(parsed.metadata.empty());
}

TEST_F(SafetensorsTest, HeaderIsPaddedToEightBytes) {
  for (int n = 1; n < 12; ++n) {
    File file;
    file.tensors = {{std::string(n, 'x'), torch::zeros({n})}};
    const std::string bytes = serialize(file);
    uint64_t header_len = 0;
    std::memcpy(&header_len, bytes.data(), 8);
    EXPECT_EQ(header_len % 8, 0u) << "name length " << n;
    EXPECT_EQ(bytes.size(), 8 + header_len + 4 * static_cast<size_t>(n));
  }
}

TEST_F(SafetensorsTest, LoadedTensorsOwnTheirMemory) {
  File file;
  file.tensors = {{"w", torch::arange(6, torch::kFloat32).reshape({2, 3})}};
  std::string bytes = serialize(file);
  const File parsed = parse(bytes);
  std::fill(bytes.begin(), bytes.end(), '\x7f');  // clobber the source buffer
  EXPECT_TRUE(torch::equal(parsed.at("w"), torch::arange(6, torch::kFloat32).reshape({2, 3})));
}

TEST_F(SafetensorsTest, NonContiguousTensorsAreWrittenInRowMajorOrder) {
  const torch::Tensor base = torch::arange(6, torch::kFloat32).reshape({2, 3});
  File file;
  file.tensors = {{"t", base.t()}, {"slice", base.index({torch::indexing::Slice(), 1})}};
  const File parsed = parse(serialize(file));
  EXPECT_TRUE(torch::equal(parsed.at("t"), base.t().contiguous()));
  EXPECT_TRUE(torch::equal(parsed.at("slice"), torch::tensor({1.0f, 4.0f})));
}

TEST_F(SafetensorsTest, AtAndContainsFindTensorsByName) {
  File file;
  file.tensors = {{"a", torch::ones({1})}, {"b", torch::zeros({2})}};
  EXPECT_TRUE(file.contains("b"));
  EXPECT_FALSE(file.contains("c"));
  EXPECT_EQ(file.at("b").numel(), 2);
  try {
    file.at("missing");
    FAIL() << "expected tessera::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("missing"), std::string::npos) << e.what();
  }
}

// --- Golden bytes, written by hand from the format description (huggingface/safetensors
// README), so that files from other writers load and ours load elsewhere.

std::string le_u64(uint64_t n) {
  std::string out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xFF));
  return out;
}

const char kGoldenHeader[] = R"({"__metadata__":{"format":"pt"},)"
                             R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"I8","shape":[],"data_offsets":[8,9]},)"
                             R"("c":{"dtype":"BOOL","shape":[0],"data_offsets":[9,9]}})";

std::string golden_bytes() {
  // 190 header bytes + 2 spaces = 192 = 0xC0; a = [1.0, -2.5] (F32 LE), b = -5 (I8).
  return std::string("\xC0\0\0\0\0\0\0\0", 8) + kGoldenHeader + "  " +
         std::string("\x00\x00\x80\x3F\x00\x00\x20\xC0\xFB", 9);
}

TEST(SafetensorsGolden, WriterProducesTheReferenceByteLayout) {
  ASSERT_EQ(std::string(kGoldenHeader).size(), 190u);
  File file;
  file.metadata = {{"format", "pt"}};
  file.tensors = {{"a", torch::tensor({1.0f, -2.5f})},
                  {"b", torch::tensor(int8_t{-5}, torch::kInt8)},
                  {"c", torch::empty({0}, torch::kBool)}};
  EXPECT_EQ(serialize(file), golden_bytes());
}

TEST(SafetensorsGolden, ReaderDecodesHandWrittenBytes) {
  const File file = parse(golden_bytes());
  ASSERT_EQ(file.tensors.size(), 3u);
  EXPECT_EQ(file.metadata.at("format"), "pt");
  EXPECT_TRUE(torch::equal(file.at("a"), torch::tensor({1.0f, -2.5f})));
  EXPECT_EQ(file.at("b").dim(), 0);
  EXPECT_EQ(file.at("b").scalar_type(), torch::kInt8);
  EXPECT_EQ(file.at("b").item<int8_t>(), -5);
  EXPECT_EQ(file.at("c").sizes(), (std::vector<int64_t>{0}));
}

std::string make_file(const std::string& header, const std::string& data) {
  return le_u64(header.size()) + header + data;
}

TEST(SafetensorsGolden, OtherWritersLayoutsAreAccepted) {
  // Header keys in another order than the data, extra whitespace and trailing padding: the
  // tensors come back in data order, whatever the header order.
  const std::string header =
      "{ \"second\": {\"data_offsets\": [2, 4], \"shape\": [1], \"dtype\": \"BF16\"},\n"
      "  \"first\" : {\"dtype\": \"F16\", \"shape\": [1], \"data_offsets\": [0, 2]} }      ";
  // F16 1.0 = 0x3C00; BF16 -2.0 = 0xC000.
  const File file = parse(make_file(header, std::string("\x00\x3C\x00\xC0", 4)));
  ASSERT_EQ(file.tensors.size(), 2u);
  EXPECT_EQ(file.tensors[0].first, "first");
  EXPECT_EQ(file.tensors[1].first, "second");
  EXPECT_EQ(file.at("first").scalar_type(), torch::kHalf);
  EXPECT_EQ(file.at("second").scalar_type(), torch::kBFloat16);
  EXPECT_EQ(file.at("first").to(torch::kFloat32).item<float>(), 1.0f);
  EXPECT_EQ(file.at("second").to(torch::kFloat32).item<float>(), -2.0f);
}

// --- Malformed input: every case must give tessera::Error naming the problem.

struct BadCase {
  const char* what;
  std::string bytes;
  const char* message_part;  // must appear in the error message
};

std::string one_tensor(const std::string& entry, const std::string& data) {
  return make_file(R"({"w":)" + entry + "}", data);
}

std::vector<BadCase> bad_cases() {
  const std::string four(4, '\0');
  return {
      {"empty file", "", "too short"},
      {"five bytes", "abcde", "too short"},
      {"header length over the limit", le_u64(kMaxHeaderBytes + 1) + "{}", "exceeds the limit"},
      {"header length past end of file", le_u64(64) + "{}", "past the end"},
      {"huge header length", le_u64(~uint64_t{0}) + "{}", "exceeds the limit"},
      {"invalid JSON", make_file("{\"w\": ", ""), "not valid JSON"},
      {"invalid UTF-8", make_file("{\"\xff\": 1}", ""), "not valid JSON"},
      {"header is an array", make_file("[]", ""), "must be a JSON object"},
      {"header is a number", make_file("42", ""), "must be a JSON object"},
      {"deeply nested JSON", make_file(std::string(100000, '[') + std::string(100000, ']'), ""),
       "nested deeper than"},
      {"entry is not an object", one_tensor("[1, 2]", ""), "'w' must be an object"},
      {"unknown dtype", one_tensor(R"({"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]})", four),
       "unsupported dtype 'F8_E4M3'"},
      {"dtype not a string", one_tensor(R"({"dtype":4,"shape":[4],"data_offsets":[0,4]})", four),
       "dtype of tensor 'w'"},
      {"missing dtype", one_tensor(R"({"shape":[4],"data_offsets":[0,4]})", four), "lacks 'dtype'"},
      {"missing shape", one_tensor(R"({"dtype":"U8","data_offsets":[0,4]})", four),
       "lacks 'shape'"},
      {"missing data_offsets", one_tensor(R"({"dtype":"U8","shape":[4]})", four),
       "lacks 'data_offsets'"},
      {"unknown field",
       one_tensor(R"({"dtype":"U8","shape":[4],"data_offsets":[0,4],"x":1})", four),
       "unknown field 'x'"},
      {"shape not an array", one_tensor(R"({"dtype":"U8","shape":4,"data_offsets":[0,4]})", four),
       "shape of tensor 'w'"},
      {"negative dimension",
       one_tensor(R"({"dtype":"U8","shape":[-4],"data_offsets":[0,4]})", four),
       "invalid dimension -4"},
      {"fractional dimension",
       one_tensor(R"({"dtype":"U8","shape":[4.0],"data_offsets":[0,4]})", four),
       "must hold integers"},
      {"dimension above int64",
       one_tensor(R"({"dtype":"U8","shape":[9223372036854775808],"data_offsets":[0,4]})", four),
       "invalid dimension"},
      {"shape product overflows",
       one_tensor(R"({"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]})", ""),
       "too large"},
      {"empty shape product overflows",
       one_tensor(R"({"dtype":"F32","shape":[0,4294967296,4294967296,16],"data_offsets":[0,0]})",
                  ""),
       "too large"},
      {"one offset", one_tensor(R"({"dtype":"U8","shape":[4],"data_offsets":[4]})", four),
       "two non-negative integers"},
      {"three offsets", one_tensor(R"({"dtype":"U8","shape":[4],"data_offsets":[0,4,4]})", four),
       "two non-negative integers"},
      {"string offset", one_tensor(R"({"dtype":"U8","shape":[4],"data_offsets":["0",4]})", four),
       "two non-negative integers"},
      {"negative offset", one_tensor(R"({"dtype":"U8","shape":[4],"data_offsets":[-1,3]})", four),
       "two non-negative integers"},
      {"float offset", one_tensor(R"({"dtype":"U8","shape":[4],"data_offsets":[0,4.0]})", four),
       "two non-negative integers"},
      {"begin after end", one_tensor(R"({"dtype":"U8","shape":[0],"data_offsets":[4,0]})", four),
       "begin > end"},
      {"end past data", one_tensor(R"({"dtype":"U8","shape":[8],"data_offsets":[0,8]})", four),
       "past the data section"},
      {"huge end",
       one_tensor(
           R"({"dtype":"U8","shape":[4],"data_offsets":[18446744073709551612,18446744073709551615]})",
           four),
       "needs 4 bytes"},
      {"size mismatch", one_tensor(R"({"dtype":"F32","shape":[2],"data_offsets":[0,4]})", four),
       "needs 8 bytes"},
      {"overlapping tensors",
       make_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                 R"("b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                 four),
       "overlaps"},
      {"identical regions",
       make_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                 R"("b":{"dtype":"I8","shape":[4],"data_offsets":[0,4]}})",
                 four),
       "overlaps"},
      {"empty tensor inside another",
       make_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},)"
                 R"("b":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}})",
                 four),
       "overlaps"},
      {"gap between tensors",
       make_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                 R"("b":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                 four),
       "gap of 1 bytes"},
      {"gap at start", one_tensor(R"({"dtype":"U8","shape":[2],"data_offsets":[2,4]})", four),
       "gap of 2 bytes"},
      {"trailing bytes", one_tensor(R"({"dtype":"U8","shape":[2],"data_offsets":[0,2]})", four),
       "cover only 2"},
      {"no tensors but data", make_file("{}", four), "cover only 0"},
      {"duplicate tensor names",
       make_file(R"({"w":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                 R"("w":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}})",
                 four),
       "duplicate key 'w'"},
      {"duplicate field",
       one_tensor(R"({"dtype":"U8","dtype":"I8","shape":[4],"data_offsets":[0,4]})", four),
       "duplicate key 'dtype'"},
      {"metadata not an object", make_file(R"({"__metadata__":["a"]})", ""),
       "__metadata__ must be an object"},
      {"metadata value not a string", make_file(R"({"__metadata__":{"epoch":3}})", ""),
       "value of 'epoch' must be a string"},
      {"metadata value null", make_file(R"({"__metadata__":{"note":null}})", ""),
       "value of 'note' must be a string"},
      {"bool byte not 0 or 1",
       one_tensor(R"({"dtype":"BOOL","shape":[4],"data_offsets":[0,4]})",
                  std::string("\x01\x00\x02\x01", 4)),
       "holds byte 2 at element 2"},
  };
}

TEST(SafetensorsBadInput, EveryMalformedFileGivesAClearError) {
  TempDir dir;
  int n_cases = 0;
  for (const BadCase& c : bad_cases()) {
    SCOPED_TRACE(c.what);
    ++n_cases;
    try {
      parse(c.bytes);
      ADD_FAILURE() << "parse accepted: " << c.what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.message_part), std::string::npos)
          << "message: " << e.what() << "\nexpected to contain: " << c.message_part;
    }
    // load() reads the file piecewise; it must reject the same inputs and name the path.
    const std::string path = dir.file("bad.safetensors");
    write_bytes(path, c.bytes);
    try {
      load(path);
      ADD_FAILURE() << "load accepted: " << c.what;
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find(c.message_part), std::string::npos) << message;
      EXPECT_NE(message.find(path), std::string::npos) << message;
    }
  }
  EXPECT_GE(n_cases, 40);
}

TEST(SafetensorsBadInput, LoadOfMissingFileNamesThePath) {
  TempDir dir;
  const std::string path = dir.file("absent.safetensors");
  try {
    load(path);
    FAIL() << "expected tessera::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

TEST(SafetensorsBadInput, LoadOfADirectoryFails) {
  TempDir dir;
  EXPECT_THROW(load(dir.path()), Error);
}

TEST(SafetensorsBadInput, SerializeRejectsWhatTheFormatCannotHold) {
  File complex;
  complex.tensors = {{"z", torch::zeros({2}, torch::kComplexFloat)}};
  EXPECT_THROW(serialize(complex), Error);

  File duplicate;
  duplicate.tensors = {{"w", torch::zeros({2})}, {"w", torch::ones({2})}};
  EXPECT_THROW(serialize(duplicate), Error);

  File reserved;
  reserved.tensors = {{"__metadata__", torch::zeros({2})}};
  EXPECT_THROW(serialize(reserved), Error);

  File undefined;
  undefined.tensors = {{"u", torch::Tensor()}};
  EXPECT_THROW(serialize(undefined), Error);

  File bad_utf8;
  bad_utf8.metadata = {{"note", "\xff\xfe"}};
  EXPECT_THROW(serialize(bad_utf8), Error);
}

TEST(SafetensorsBadInput, FailedSaveKeepsTheOldFile) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  File good;
  good.tensors = {{"w", torch::ones({3})}};
  save(path, good);
  File bad;
  bad.tensors = {{"z", torch::zeros({2}, torch::kComplexFloat)}};
  EXPECT_THROW(save(path, bad), Error);
  EXPECT_THROW(save(dir.file("no/such/dir/m.safetensors"), good), Error);
  expect_same_file(good, load(path));
}

}  // namespace
}  // namespace tessera::safetensors
