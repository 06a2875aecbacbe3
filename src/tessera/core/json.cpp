// Bounded JSON parsing (see json.h): nlohmann's parser is iterative, so a SAX filter bounds the
// depth before any deep value exists; dump() is avoided on hostile values.
#include "tessera/core/json.h"

#include <algorithm>
#include <unordered_set>
#include <vector>

#include "tessera/core/error.h"

namespace tessera {

namespace {

/// nlohmann's messages quote the token they stopped at, which can be megabytes long.
std::string capped(std::string text, size_t max_chars) {
  if (text.size() > max_chars) text = text.substr(0, max_chars) + "...";
  return text;
}

/// Appends `value` to `out` until `out` reaches `limit` characters.
void append_excerpt(const nlohmann::json& value, size_t limit, std::string& out) {
  if (out.size() >= limit) return;
  if (value.is_array() || value.is_object()) {
    const bool array = value.is_array();
    out += array ? '[' : '{';
    bool first = true;
    for (auto it = value.begin(); it != value.end() && out.size() < limit; ++it) {
      if (!first) out += ',';
      first = false;
      if (!array) {
        append_excerpt(nlohmann::json(it.key()), limit, out);
        out += ':';
      }
      append_excerpt(*it, limit, out);
    }
    out += array ? ']' : '}';
    return;
  }
  if (value.is_string()) {
    // Cut the string before dumping it: escaping a huge string only to drop it wastes time.
    const auto& text = value.get_ref<const std::string&>();
    const nlohmann::json cut(text.substr(0, limit - out.size()));
    out += cut.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    return;
  }
  out += value.dump();
}

/// nlohmann's DOM builder behind a SAX filter that bounds the depth and refuses repeated keys.
/// (Its callback parser is no alternative: after every nested object it scans the enclosing
/// object for discarded values, which made a 100k-entry safetensors header take minutes.)
class BoundedSax {
 public:
  using Json = nlohmann::json;
  BoundedSax(Json& result, const std::string& what, const JsonKeyHook& on_key)
      : dom_(result), what_(what), on_key_(on_key) {}

  bool null() { return dom_.null(); }
  bool boolean(bool value) { return dom_.boolean(value); }
  bool number_integer(Json::number_integer_t value) { return dom_.number_integer(value); }
  bool number_unsigned(Json::number_unsigned_t value) { return dom_.number_unsigned(value); }
  bool number_float(Json::number_float_t value, const Json::string_t& text) {
    return dom_.number_float(value, text);
  }
  bool string(Json::string_t& value) { return dom_.string(value); }
  bool binary(Json::binary_t& value) { return dom_.binary(value); }
  bool start_object(std::size_t n) {
    enter();
    keys_.emplace_back();
    return dom_.start_object(n);
  }
  bool key(Json::string_t& key) {
    TESSERA_CHECK(keys_.back().insert(key).second, "{}: duplicate key '{}'", what_,
                  capped(key, kMaxJsonExcerpt));
    if (on_key_) on_key_(depth_, key);
    return dom_.key(key);
  }
  bool end_object() {
    --depth_;
    keys_.pop_back();
    return dom_.end_object();
  }
  bool start_array(std::size_t n) {
    enter();
    return dom_.start_array(n);
  }
  bool end_array() {
    --depth_;
    return dom_.end_array();
  }
  template <class Exception>
  bool parse_error(std::size_t position, const std::string& token, const Exception& e) {
    return dom_.parse_error(position, token, e);  // throws e
  }

 private:
  void enter() {
    TESSERA_CHECK(++depth_ <= kMaxJsonDepth, "{}: JSON nested deeper than {} levels", what_,
                  kMaxJsonDepth);
  }
  nlohmann::detail::json_sax_dom_parser<Json> dom_;
  const std::string& what_;
  const JsonKeyHook& on_key_;
  int depth_ = 0;
  std::vector<std::unordered_set<std::string>> keys_;
};

}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& what,
                          const JsonKeyHook& on_key) {
  TESSERA_CHECK(text.substr(0, 3) != "\xEF\xBB\xBF",
                "{}: JSON starts with a UTF-8 byte order mark (not allowed)", what);
  nlohmann::json result;
  BoundedSax sax(result, what, on_key);
  try {
    nlohmann::json::sax_parse(text.begin(), text.end(), &sax);
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(
        fmt::format("{}: not valid JSON (at byte {}): {}", what, e.byte, capped(e.what(), 200)));
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("{}: not valid JSON: {}", what, capped(e.what(), 200)));
  }
  return result;
}

std::string json_excerpt(const nlohmann::json& value, size_t max_chars) {
  std::string out;
  append_excerpt(value, max_chars, out);
  if (out.size() > max_chars) out = out.substr(0, max_chars) + "...";
  return out;
}

int64_t json_integer(const nlohmann::json& value, const std::string& what, int64_t lo, int64_t hi) {
  TESSERA_CHECK(value.is_number_integer(), "{} must be an integer, got {}", what,
                json_excerpt(value));
  bool in_range = false;
  if (value.is_number_unsigned()) {
    const uint64_t v = value.get<uint64_t>();
    in_range = hi >= 0 && v <= static_cast<uint64_t>(hi) && static_cast<int64_t>(v) >= lo;
  } else {
    const int64_t v = value.get<int64_t>();
    in_range = v >= lo && v <= hi;
  }
  TESSERA_CHECK(in_range, "{} must be in [{}, {}], got {}", what, lo, hi, json_excerpt(value));
  return value.get<int64_t>();
}

std::vector<int64_t> json_integer_array(const nlohmann::json& value, const std::string& what,
                                        int64_t lo, int64_t hi) {
  TESSERA_CHECK(value.is_array(), "{} must be an array of integers, got {}", what,
                json_excerpt(value));
  std::vector<int64_t> out;
  out.reserve(value.size());
  for (size_t i = 0; i < value.size(); ++i) {
    out.push_back(json_integer(value[i], fmt::format("{}[{}]", what, i), lo, hi));
  }
  return out;
}

}  // namespace tessera
