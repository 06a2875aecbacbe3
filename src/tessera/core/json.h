// Bounded JSON for everything Tessera reads from a file or the network: one parse with a nesting
// limit whose errors name the source, typed field readers, and a capped excerpt for messages.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace tessera {

/// Deepest nesting of arrays and objects accepted (Tessera's own files nest at most 4 levels;
/// nlohmann's dump() recurses, so an unbounded depth overflows the stack).
constexpr int kMaxJsonDepth = 64;
/// Most characters of a JSON value that an error message quotes.
constexpr size_t kMaxJsonExcerpt = 80;

/// Called with each object key as it is parsed and its depth (1: keys of the outermost object);
/// it may throw to stop the parse (e.g. at a count limit).
using JsonKeyHook = std::function<void(int depth, const std::string& key)>;

/// Parses all of `text`, in time linear in its length. A UTF-8 byte order mark, bytes after the
/// value (other than whitespace), nesting deeper than kMaxJsonDepth, a key repeated in one object
/// (nlohmann would keep only the last) and invalid JSON are tessera::Error messages that start
/// with `what` (e.g. "'m.safetensors': metadata tessera.arch").
nlohmann::json parse_json(std::string_view text, const std::string& what,
                          const JsonKeyHook& on_key = {});

/// `value` as compact JSON, at most `max_chars` characters ("..." marks a cut). Safe on values
/// of any size or depth: it stops writing, and recursing, once the budget is spent.
std::string json_excerpt(const nlohmann::json& value, size_t max_chars = kMaxJsonExcerpt);

/// `value` as an integer in [lo, hi]. A float (8.9, even 8.0), a bool, a string or a value out
/// of range is a tessera::Error naming `what` and the value.
int64_t json_integer(const nlohmann::json& value, const std::string& what, int64_t lo, int64_t hi);

/// `value` as an array of integers, each checked as json_integer does (1e30 or 2.5 in a list of
/// ids is refused, never converted).
std::vector<int64_t> json_integer_array(const nlohmann::json& value, const std::string& what,
                                        int64_t lo, int64_t hi);

}  // namespace tessera
