// safetensors reader and writer. The header is validated completely before any tensor byte is
// touched: offsets, sizes, dtypes, shapes, duplicate keys, and full non-overlapping coverage of
// the data section (as the reference implementation requires), so hostile files fail cleanly.
#include "tessera/core/safetensors.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <limits>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include "tessera/core/error.h"
#include "tessera/core/fs.h"
#include "tessera/core/json.h"
#include "tessera/core/limits.h"

namespace tessera::safetensors {

// Tensor bytes are copied as-is, and the format is little-endian.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors I/O assumes little-endian");

namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;  // writing keeps the caller's order

struct DtypeInfo {
  const char* name;
  torch::ScalarType type;
  int64_t size;
};

// The dtypes Tessera reads and writes (the format also knows F8, U16, U32, U64, which LibTorch
// 1.13 cannot represent).
constexpr DtypeInfo kDtypes[] = {
    {"F64", torch::kFloat64, 8},   {"F32", torch::kFloat32, 4}, {"F16", torch::kHalf, 2},
    {"BF16", torch::kBFloat16, 2}, {"I64", torch::kInt64, 8},   {"I32", torch::kInt32, 4},
    {"I16", torch::kInt16, 2},     {"I8", torch::kInt8, 1},     {"U8", torch::kUInt8, 1},
    {"BOOL", torch::kBool, 1},
};

const DtypeInfo* dtype_by_name(const std::string& name) {
  for (const auto& info : kDtypes) {
    if (name == info.name) return &info;
  }
  return nullptr;
}

const DtypeInfo* dtype_by_type(torch::ScalarType type) {
  for (const auto& info : kDtypes) {
    if (type == info.type) return &info;
  }
  return nullptr;
}

std::string known_dtypes() {
  std::string out;
  for (const auto& info : kDtypes) {
    if (!out.empty()) out += ", ";
    out += info.name;
  }
  return out;
}

/// One validated header entry: where its bytes lie in the data section.
struct Entry {
  std::string name;
  const DtypeInfo* dtype = nullptr;
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
  size_t header_index = 0;  // position in the header, to keep a stable order for empty tensors
};

struct Header {
  std::vector<Entry> entries;  // sorted by data offset (file order)
  std::map<std::string, std::string> metadata;
};

uint64_t read_u64_le(const char* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | static_cast<unsigned char>(bytes[i]);
  return value;
}

void append_u64_le(std::string& out, uint64_t value) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((value >> (8 * i)) & 0xFF));
}

/// Checks the 8-byte prefix and returns the header length N.
uint64_t check_header_length(uint64_t n, uint64_t file_size) {
  TESSERA_CHECK(n <= kMaxHeaderBytes, "safetensors: header length {} exceeds the limit of {} bytes",
                n, kMaxHeaderBytes);
  TESSERA_CHECK(n <= file_size - 8,
                "safetensors: header length {} runs past the end of the file ({} bytes after the "
                "length prefix)",
                n, file_size - 8);
  return n;
}

/// The parsed header and its top-level keys in file order (the header is a std::map-backed json,
/// whose order is by name).
struct ParsedHeader {
  Json json;
  std::unordered_map<std::string, size_t> key_order;
};

/// Parses the header with core/json's bounds (depth, repeated keys) and at most kMaxTensors
/// top-level entries, counted as the parser meets them.
ParsedHeader parse_header_json(std::string_view text) {
  ParsedHeader header;
  header.json = parse_json(text, "safetensors: header", [&](int depth, const std::string& key) {
    if (depth != 1) return;
    TESSERA_CHECK(header.key_order.size() < kMaxTensors,
                  "safetensors: header declares more than {} tensors", kMaxTensors);
    header.key_order.emplace(key, header.key_order.size());
  });
  return header;
}

std::map<std::string, std::string> parse_metadata(const Json& json) {
  TESSERA_CHECK(json.is_object(), "safetensors: __metadata__ must be an object, got {}",
                json.type_name());
  std::map<std::string, std::string> metadata;
  for (const auto& [key, value] : json.items()) {
    TESSERA_CHECK(value.is_string(),
                  "safetensors: __metadata__ value of '{}' must be a string, got {}", key,
                  value.type_name());
    metadata[key] = value.get<std::string>();
  }
  return metadata;
}

Entry parse_entry(const std::string& name, const Json& json) {
  TESSERA_CHECK(json.is_object(), "safetensors: entry for tensor '{}' must be an object, got {}",
                name, json.type_name());
  for (const auto& [key, value] : json.items()) {
    TESSERA_CHECK(key == "dtype" || key == "shape" || key == "data_offsets",
                  "safetensors: tensor '{}' has unknown field '{}'", name, key);
  }
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    TESSERA_CHECK(json.contains(key), "safetensors: tensor '{}' lacks '{}'", name, key);
  }
  Entry entry;
  entry.name = name;

  const auto& dtype = json.at("dtype");
  TESSERA_CHECK(dtype.is_string(), "safetensors: dtype of tensor '{}' must be a string", name);
  entry.dtype = dtype_by_name(dtype.get<std::string>());
  TESSERA_CHECK(entry.dtype != nullptr,
                "safetensors: tensor '{}' has unsupported dtype '{}' (known: {})", name,
                dtype.get<std::string>(), known_dtypes());

  const auto& shape = json.at("shape");
  TESSERA_CHECK(shape.is_array(), "safetensors: shape of tensor '{}' must be an array", name);
  // Number of bytes the shape needs, with overflow checks (a hostile shape must not wrap around
  // to a small number that happens to match the offsets).
  // `bound` ignores zero dimensions, so that an empty tensor cannot carry dimensions whose
  // product overflows inside LibTorch either.
  uint64_t n_bytes = static_cast<uint64_t>(entry.dtype->size);
  uint64_t bound = n_bytes;
  for (const auto& dim : shape) {
    TESSERA_CHECK(dim.is_number_integer(),
                  "safetensors: shape of tensor '{}' must hold integers, got {}", name,
                  json_excerpt(dim));
    TESSERA_CHECK(
        dim.is_number_unsigned() &&
            dim.get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
        "safetensors: tensor '{}' has invalid dimension {}", name, json_excerpt(dim));
    const uint64_t d = dim.get<uint64_t>();
    TESSERA_CHECK(!__builtin_mul_overflow(n_bytes, d, &n_bytes) &&
                      !__builtin_mul_overflow(bound, std::max<uint64_t>(d, 1), &bound) &&
                      bound <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()),
                  "safetensors: shape {} of tensor '{}' is too large", json_excerpt(shape), name);
    entry.shape.push_back(static_cast<int64_t>(d));
  }

  const auto& offsets = json.at("data_offsets");
  TESSERA_CHECK(
      offsets.is_array() && offsets.size() == 2 && offsets[0].is_number_unsigned() &&
          offsets[1].is_number_unsigned(),
      "safetensors: data_offsets of tensor '{}' must be two non-negative integers, got {}", name,
      json_excerpt(offsets));
  entry.begin = offsets[0].get<uint64_t>();
  entry.end = offsets[1].get<uint64_t>();
  TESSERA_CHECK(entry.begin <= entry.end,
                "safetensors: tensor '{}' has data_offsets [{}, {}] with begin > end", name,
                entry.begin, entry.end);
  TESSERA_CHECK(entry.end - entry.begin == n_bytes,
                "safetensors: tensor '{}' ({} {}) needs {} bytes but data_offsets [{}, {}] hold {}",
                name, entry.dtype->name, json_excerpt(shape), n_bytes, entry.begin, entry.end,
                entry.end - entry.begin);
  return entry;
}

/// Validates the JSON header against a data section of `data_size` bytes.
Header parse_header(std::string_view text, uint64_t data_size) {
  const ParsedHeader parsed = parse_header_json(text);
  const Json& json = parsed.json;
  TESSERA_CHECK(json.is_object(), "safetensors: header must be a JSON object, got {}",
                json.type_name());
  Header header;
  header.entries.reserve(json.size());
  for (const auto& [name, value] : json.items()) {
    if (name == "__metadata__") {
      header.metadata = parse_metadata(value);
      continue;
    }
    Entry entry = parse_entry(name, value);
    TESSERA_CHECK(entry.end <= data_size,
                  "safetensors: tensor '{}' data_offsets [{}, {}] run past the data section ({} "
                  "bytes)",
                  name, entry.begin, entry.end, data_size);
    entry.header_index = parsed.key_order.at(name);
    header.entries.push_back(std::move(entry));
  }
  std::sort(header.entries.begin(), header.entries.end(), [](const Entry& a, const Entry& b) {
    if (a.begin != b.begin) return a.begin < b.begin;
    if (a.end != b.end) return a.end < b.end;
    return a.header_index < b.header_index;
  });
  // The regions must tile [0, data_size) exactly: no overlap, no hole, no trailing bytes.
  uint64_t cursor = 0;
  const Entry* previous = nullptr;
  for (const auto& entry : header.entries) {
    TESSERA_CHECK(entry.begin >= cursor,
                  "safetensors: tensor '{}' [{}, {}] overlaps tensor '{}' [{}, {}]", entry.name,
                  entry.begin, entry.end, previous ? previous->name : "",
                  previous ? previous->begin : 0, previous ? previous->end : 0);
    TESSERA_CHECK(entry.begin == cursor,
                  "safetensors: gap of {} bytes in the data section before tensor '{}' (offset {})",
                  entry.begin - cursor, entry.name, cursor);
    cursor = entry.end;
    previous = &entry;
  }
  TESSERA_CHECK(cursor == data_size,
                "safetensors: data section has {} bytes but the tensors cover only {}", data_size,
                cursor);
  return header;
}

/// Allocates the tensor for an entry; the caller fills its bytes.
torch::Tensor empty_tensor(const Entry& entry) {
  return torch::empty(entry.shape, torch::TensorOptions().dtype(entry.dtype->type));
}

/// LibTorch assumes bool bytes are 0 or 1; anything else is undefined behaviour there.
void check_bool_bytes(const Entry& entry, const torch::Tensor& tensor) {
  if (entry.dtype->type != torch::kBool) return;
  const auto* bytes = static_cast<const unsigned char*>(tensor.data_ptr());
  for (int64_t i = 0; i < tensor.numel(); ++i) {
    TESSERA_CHECK(bytes[i] <= 1, "safetensors: BOOL tensor '{}' holds byte {} at element {}",
                  entry.name, static_cast<int>(bytes[i]), i);
  }
}

}  // namespace

const torch::Tensor& File::at(const std::string& name) const {
  for (const auto& [key, tensor] : tensors) {
    if (key == name) return tensor;
  }
  TESSERA_CHECK(false, "safetensors: no tensor named '{}'", name);
  return tensors.front().second;  // unreachable
}

bool File::contains(const std::string& name) const {
  for (const auto& entry : tensors) {
    if (entry.first == name) return true;
  }
  return false;
}

std::string serialize(const File& file) {
  OrderedJson header = OrderedJson::object();
  if (!file.metadata.empty()) {
    OrderedJson metadata = OrderedJson::object();
    for (const auto& [key, value] : file.metadata) metadata[key] = value;
    header["__metadata__"] = std::move(metadata);
  }
  TESSERA_CHECK(file.tensors.size() <= kMaxTensors,
                "safetensors: {} tensors exceed the limit of {}", file.tensors.size(), kMaxTensors);
  std::vector<torch::Tensor> contiguous;
  std::unordered_set<std::string> names;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : file.tensors) {
    TESSERA_CHECK(name != "__metadata__", "safetensors: '__metadata__' cannot name a tensor");
    TESSERA_CHECK(names.insert(name).second, "safetensors: duplicate tensor name '{}'", name);
    TESSERA_CHECK(tensor.defined(), "safetensors: tensor '{}' is undefined", name);
    TESSERA_CHECK(tensor.layout() == torch::kStrided, "safetensors: tensor '{}' is not dense",
                  name);
    const DtypeInfo* dtype = dtype_by_type(tensor.scalar_type());
    TESSERA_CHECK(dtype != nullptr, "safetensors: tensor '{}' has unsupported dtype {} (known: {})",
                  name, c10::toString(tensor.scalar_type()), known_dtypes());
    torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
    const uint64_t n_bytes = static_cast<uint64_t>(t.numel()) * static_cast<uint64_t>(dtype->size);
    // Names are unique (checked above), so append without ordered_map's linear key search.
    auto& entries = header.get_ref<OrderedJson::object_t&>();
    entries.OrderedJson::object_t::Container::emplace_back(
        name, OrderedJson{{"dtype", dtype->name},
                          {"shape", t.sizes().vec()},
                          {"data_offsets", {offset, offset + n_bytes}}});
    offset += n_bytes;
    contiguous.push_back(std::move(t));
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    // dump() throws on names or metadata that are not valid UTF-8.
    TESSERA_CHECK(false, "safetensors: cannot encode header: {}", e.what());
  }
  // Pad with spaces so the data section starts 8-byte aligned, as the reference writer does.
  text.append((8 - text.size() % 8) % 8, ' ');
  TESSERA_CHECK(text.size() <= kMaxHeaderBytes, "safetensors: header of {} bytes exceeds the limit",
                text.size());

  std::string out;
  out.reserve(8 + text.size() + offset);
  append_u64_le(out, text.size());
  out += text;
  for (const auto& t : contiguous) {
    out.append(static_cast<const char*>(t.data_ptr()),
               static_cast<size_t>(t.numel() * static_cast<int64_t>(t.element_size())));
  }
  return out;
}

File parse(std::string_view bytes) {
  TESSERA_CHECK(bytes.size() >= 8,
                "safetensors: {} bytes is too short for the 8-byte header length", bytes.size());
  const uint64_t n = check_header_length(read_u64_le(bytes.data()), bytes.size());
  const std::string_view data = bytes.substr(8 + n);
  const Header header = parse_header(bytes.substr(8, n), data.size());
  File file;
  file.metadata = header.metadata;
  for (const auto& entry : header.entries) {
    torch::Tensor tensor = empty_tensor(entry);
    if (entry.end > entry.begin) {
      std::memcpy(tensor.data_ptr(), data.data() + entry.begin, entry.end - entry.begin);
    }
    check_bool_bytes(entry, tensor);
    file.tensors.emplace_back(entry.name, std::move(tensor));
  }
  return file;
}

void save(const std::string& path, const File& file) { write_file_atomic(path, serialize(file)); }

File load(const std::string& path) {
  // Reads the header first, then each tensor straight into its own storage, so a large model
  // needs its size in memory once, not twice.
  std::ifstream in(path, std::ios::binary);
  TESSERA_CHECK(in.good(), "cannot open '{}': {}", path, std::strerror(errno));
  try {
    in.seekg(0, std::ios::end);
    const std::streamoff size = in.tellg();
    TESSERA_CHECK(size >= 0, "cannot determine the file size");
    in.seekg(0, std::ios::beg);
    const uint64_t file_size = static_cast<uint64_t>(size);
    TESSERA_CHECK(file_size >= 8, "safetensors: {} bytes is too short for the 8-byte header length",
                  file_size);
    char prefix[8];
    in.read(prefix, 8);
    TESSERA_CHECK(in.good(), "read error in the header length");
    const uint64_t n = check_header_length(read_u64_le(prefix), file_size);
    std::string text(n, '\0');
    in.read(text.data(), static_cast<std::streamsize>(n));
    TESSERA_CHECK(in.good(), "read error in the header");
    const uint64_t data_start = 8 + n;
    const Header header = parse_header(text, file_size - data_start);
    File file;
    file.metadata = header.metadata;
    for (const auto& entry : header.entries) {
      torch::Tensor tensor = empty_tensor(entry);
      if (entry.end > entry.begin) {
        in.seekg(static_cast<std::streamoff>(data_start + entry.begin), std::ios::beg);
        in.read(static_cast<char*>(tensor.data_ptr()),
                static_cast<std::streamsize>(entry.end - entry.begin));
        TESSERA_CHECK(in.good(), "read error in tensor '{}'", entry.name);
      }
      check_bool_bytes(entry, tensor);
      file.tensors.emplace_back(entry.name, std::move(tensor));
    }
    return file;
  } catch (const Error& e) {
    throw Error(fmt::format("'{}': {}", path, e.what()));
  }
}

}  // namespace tessera::safetensors
